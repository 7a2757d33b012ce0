"""The send loop: claim due deliveries from the outbox, send them, record the outcomes.

Any number of sender processes may run: rows are claimed with ``FOR UPDATE SKIP LOCKED`` and
leased through ``claimed_until``, so a sender that dies hands its rows on when the lease runs
out. Within a process a few "lanes" each claim a batch, send it concurrently through one
shared client (:mod:`service.push.client`: keep-alive connections pooled per origin) and
record all outcomes in one statement; several lanes keep one slow push service from stalling
everybody behind a single batch. What an answer means and how long to wait is
:mod:`service.push.retry`'s; which endpoints may be reached is
:mod:`service.webpush.endpoints`'; how failures are logged and counted is
:mod:`service.push.failures`'.

Stopping (SIGTERM) stops claiming and finishes what is in flight: rows not yet being sent are
released at once, sends under way get their answer and their outcome is recorded.
SHUTDOWN_GRACE covers the longest send and that write (settings refuse a shorter one), so a
stop cuts no POST; should one be cut all the same (the database hanging on the record), its
row is not released but keeps its lease: a POST that went out must not count as never sent.
Outcomes are fenced: each carries its claim's lease token and the database takes it only
while the row still holds that token (a sender past its lease cannot undo another's claim).
Every push carries a ``Topic`` and its notification the tag ``mc-<delivery id>`` (unless the
message has a tag), so one re-sent after a lost outcome replaces itself on the device.

A 429 pauses its origin for every sender process: the pause is written to ``push_origins``
at once and with the batch's outcomes, and read once per claimed batch, so a process that never
got the 429 defers that origin's rows too. If the database goes away after a batch was sent,
its outcomes are kept and recorded before the next claim, so the pushes are not sent again
when their lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service import tokens
from service.context import Context
from service.errors import (
    AddressRefused,
    EndpointRefused,
    PushConnectionError,
    PushPayloadTooLarge,
    PushTLSError,
)
from service.push.client import PushClient
from service.push.failures import Failure, FailureLog
from service.push.metrics import (
    NO_ORIGIN,
    PUSH_AUTH_REJECTED,
    PUSH_LATENCY,
    PUSH_OUTCOMES,
    PUSH_REQUESTS,
    PUSH_VAPID_SIGNATURES,
    REFUSED_ORIGIN,
    child,
)
from service.push.retry import Action, OriginBackoff, RetryPolicy, classify
from service.queue import DELIVERIES_CHANNEL, Listener
from service.store import DATABASE_ERRORS
from service.store.deliveries import ClaimedDelivery, DeliveryOutcome, OriginPause
from service.waiting import linger_until, wait_any
from service.webpush.encryption import encrypt
from service.webpush.endpoints import EndpointTarget, GuardedResolver, check_endpoint
from service.webpush.message import build_headers, delivery_tag, render_payload, ttl_seconds
from service.webpush.vapid import VapidSigner

log = logging.getLogger(__name__)

# Lanes of claim -> send -> record running side by side in one process.
DEFAULT_LANES = 4
# A 429 that extends an origin's pause by less than this (seconds) is not written again.
SHARE_STEP = 1.0
# How long a send waits for its origin's new pause to be written (the batch's record writes it
# otherwise), a stopping sender for a batch's outcomes and again for those an outage held back.
# Twice this fits in settings.OUTCOME_WRITE_BUDGET, which SHUTDOWN_GRACE leaves after a send.
QUICK_WRITE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class _Unrecorded:
    """Outcomes of a batch the database did not take (it went away after the sends)."""

    outcomes: tuple[DeliveryOutcome, ...]


def push_tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The TLS context of push requests: the system trust store, plus ``ca_file``'s CA
    certificates when set (MOMENTCAST_PUSH_CA_FILE: test and staging push services only)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class Sender:
    """Claims, sends and records. Use as ``async with Sender(ctx) as s: await s.run_once()``."""

    def __init__(
        self,
        ctx: Context,
        *,
        batch_size: int | None = None,
        lanes: int = DEFAULT_LANES,
        retry_base: float = 2.0,
        retry_cap: float = 3600.0,
        rng: random.Random | None = None,
    ) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.store = ctx.store
        self.batch_size = batch_size or settings.sender_concurrency
        self.lanes = lanes
        self.retry = RetryPolicy(
            max_attempts=settings.sender_max_attempts,
            base=retry_base,
            cap=retry_cap,
            rng=rng or random.Random(),
        )
        self._connect_timeout = settings.push_connect_timeout.total_seconds()
        self._read_timeout = settings.push_read_timeout.total_seconds()
        # The longest one send may take; the lease covers it several times over so that a
        # row waiting for a free slot is not handed to another sender while we still hold it.
        self.send_budget = self._connect_timeout + self._read_timeout
        self.lease = max(settings.worker_lease.total_seconds(), 4 * self.send_budget)
        self.signer = VapidSigner(
            ctx.keys.vapid_private,
            settings.vapid_subject,
            on_sign=lambda origin: PUSH_VAPID_SIGNATURES.labels(origin).inc(),
        )
        self._events_url = settings.base_url + "/v1/events"
        self._slots = asyncio.Semaphore(settings.sender_concurrency)
        # What this process knows of each origin's 429 pause (time.monotonic() clock), and
        # what it learnt itself and has not written to the database yet.
        self._origins: dict[str, OriginBackoff] = {}
        self._unpublished: dict[str, OriginBackoff] = {}
        self._publishing = asyncio.Lock()
        self._unrecorded: list[_Unrecorded] = []
        self._db_down_since: float | None = None
        self.failures = FailureLog(log)
        self._client: PushClient | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._turn = asyncio.Lock()
        # The lanes' coalescing pause (BATCH_LINGER_MS) and when the next claim may start.
        self._linger = settings.batch_linger_ms / 1000
        self._next_claim = 0.0

    async def __aenter__(self) -> Sender:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        settings = self.ctx.settings
        concurrency = settings.sender_concurrency
        if settings.push_ca_file is not None:
            log.warning(
                "sender: MOMENTCAST_PUSH_CA_FILE is set: push services may also present "
                "certificates issued by the CAs in %s (a test or staging setting)",
                settings.push_ca_file,
            )
        self._client = PushClient(
            tls=push_tls_context(settings.push_ca_file),
            resolver=GuardedResolver(settings.push_hosts),
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            # One slow push service may hold most connections but never all of them (the
            # sends in flight are at most SENDER_CONCURRENCY: self._slots).
            per_origin=concurrency * 3 // 4,
        )

    async def close(self) -> None:
        self.failures.flush()
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> PushClient:
        if self._client is None:
            raise RuntimeError("Sender.start() has not been called")
        return self._client

    # -- the loop --------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Claim and send until ``stop``; then finish in-flight sends within the grace."""
        # The worker NOTIFYs after each batch with decisions; polling stays the fallback.
        listening = asyncio.create_task(
            Listener(self.store, DELIVERIES_CHANNEL, self._wake).run(stop), name="sender-listen"
        )
        lanes = [
            asyncio.create_task(self._lane(stop), name=f"sender-lane-{i}")
            for i in range(self.lanes)
        ]
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *lanes], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        # Rows that are claimed but not yet being sent are released at once from here on;
        # sends under way finish (at most send_budget) and their records are bounded by
        # QUICK_WRITE_TIMEOUT. The lanes' wait leaves room for the last record, so that all
        # of it ends within the grace (the runtime cancels components after it).
        self._stopping.set()
        grace = self.ctx.settings.shutdown_grace.total_seconds()
        _, late = await asyncio.wait(lanes, timeout=max(0.0, grace - QUICK_WRITE_TIMEOUT - 0.5))
        for task in late:
            task.cancel()
        listening.cancel()
        try:
            await listening
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            # The listener only wakes the lanes (polling is the fallback): its end must not
            # keep the last record below from running.
            log.warning("sender: the LISTEN task had ended: %r", exc)
        results = await asyncio.gather(*lanes, return_exceptions=True)
        await self._last_record()
        failed = [r for r in results if isinstance(r, Exception)]
        if failed and not stop.is_set():
            # A lane died of something other than the database: stop the component with the
            # reason, so that the process exits non-zero and names it.
            raise failed[0]
        for result in failed:
            log.error("sender lane failed", exc_info=result)

    async def _lane(self, stop: asyncio.Event) -> None:
        poll = self.ctx.settings.worker_poll_interval.total_seconds()
        while not stop.is_set():
            # One lane at a time waits for work and claims: a NOTIFY wakes one lane, not
            # all of them to find the outbox empty but for one (a claim each, per push at low
            # rates). A full batch hands the turn on at once: more may be due.
            async with self._turn:
                if not self._wake.is_set():
                    await wait_any(stop, self._wake, seconds=poll)
                    if stop.is_set():
                        return
                # Coalescing, as the worker's: after a claim that did not fill its batch the
                # next one waits until BATCH_LINGER_MS after it began, so that the deliveries
                # of several NOTIFYs share one claim, one record and one wake-up.
                if await linger_until(self._next_claim, stop):
                    return
                self._wake.clear()
                claimed = time.monotonic()
                try:
                    rows = await self._claim(self.batch_size)
                except DATABASE_ERRORS as exc:
                    # The database restarting should delay pushes, not kill the process.
                    self._database_lost(exc, poll)
                    continue
                self._database_back()
                if len(rows) >= self.batch_size:
                    self._wake.set()
                else:
                    self._next_claim = claimed + self._linger
            if rows:
                try:
                    await self._send_claimed(rows)
                except DATABASE_ERRORS as exc:
                    self._database_lost(exc, poll)

    async def run_once(self, limit: int | None = None) -> int:
        """Claim one batch of due deliveries, send it and record the outcomes.

        Returns the number of rows claimed (0: nothing was due). If cancelled, finished
        outcomes are still recorded and unfinished rows are released for another sender.
        Outcomes the database could not take are kept and recorded first thing next time.
        """
        rows = await self._claim(limit or self.batch_size)
        if rows:
            await self._send_claimed(rows)
        return len(rows)

    async def _claim(self, limit: int) -> list[ClaimedDelivery]:
        await self._record_unrecorded()
        claim = await self.store.claim_deliveries(limit=limit, lease_s=self.lease)
        if claim.rows:
            self._learn_pauses(claim.pauses)
        return claim.rows

    async def _send_claimed(self, rows: list[ClaimedDelivery]) -> None:
        claimed_at = time.monotonic()
        # The rows whose POST has begun: from then on the push service may have the message.
        posted: set[int] = set()
        tasks = [asyncio.create_task(self._deliver(row, claimed_at, posted)) for row in rows]
        try:
            outcomes = await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            finished = [
                t.result() for t in tasks if t.done() and not t.cancelled() and not t.exception()
            ]
            done_ids = {o.id for o in finished}
            # Never sent: released for another sender. A cut POST is not released: it may
            # have reached the push service, so its row keeps its lease and goes out again
            # (same Topic and tag) only when the lease has run out.
            released = [
                DeliveryOutcome(row.id, "pending", lease=row.lease)
                for row in rows
                if row.id not in done_ids and row.id not in posted
            ]
            cut = [row.id for row in rows if row.id not in done_ids and row.id in posted]
            if cut:
                log.warning(
                    "sender: %d pushes were cut mid-send; they keep their lease and are sent "
                    "again after it (%.0f s), with the same Topic and tag",
                    len(cut),
                    self.lease,
                )
            # Kept for later if the database is gone: the cancellation must go on regardless.
            with contextlib.suppress(*DATABASE_ERRORS):
                await asyncio.shield(self._record([*finished, *released]))
            raise
        await self._record(outcomes)

    # -- recording, and the database going away ------------------------------------------

    async def _record(self, outcomes: list[DeliveryOutcome]) -> None:
        """Record a batch's outcomes and the origin pauses not written yet, in one
        transaction; if the database is gone, keep the outcomes and raise."""
        pauses = self._pauses_to_publish()
        try:
            # A stopping sender must not wait long for a database that is not answering: the
            # outcomes are kept and tried once more before it exits (TimeoutError is an
            # OSError, one of DATABASE_ERRORS).
            async with asyncio.timeout(QUICK_WRITE_TIMEOUT if self._stopping.is_set() else None):
                recorded = await self.store.record_outcomes(
                    outcomes, [pause for pause, _ in pauses], fatigue=self._fatigue()
                )
        except BaseException:
            # Whatever cut the write (a lost connection of any class, a cancellation), the
            # pushes are out: keep their outcomes. Should the write have committed after
            # all, the fencing makes a second one change nothing.
            if outcomes:
                self._unrecorded.append(_Unrecorded(tuple(outcomes)))
            raise
        self._published(pauses)
        self._note_fenced(len(outcomes) - recorded)

    def _fatigue(self) -> tuple[int, timedelta] | None:
        """The rule set's fatigue guard (after, rest), whose counts the record advances;
        None when it is off or no rules are loaded. Once a batch, not once a push."""
        holder = self.ctx.rules
        ruleset = holder.current if holder is not None else None
        guard = ruleset.policy.fatigue if ruleset is not None else None
        return (guard.after, guard.rest) if guard is not None else None

    async def _record_unrecorded(self) -> None:
        """Record what a lost connection kept from the database, before claiming anything.

        Every outcome is offered; the fencing takes only those whose rows still carry this
        sender's claim. A row whose lease ran out and that another sender claimed is that
        sender's now: our outcome must not release or reschedule it (it is sent again).
        """
        if not self._unrecorded:
            return
        held, self._unrecorded = self._unrecorded, []
        outcomes = [outcome for batch in held for outcome in batch.outcomes]
        pauses = self._pauses_to_publish()
        try:
            recorded = await self.store.record_outcomes(
                outcomes, [pause for pause, _ in pauses], fatigue=self._fatigue()
            )
        except BaseException:
            self._unrecorded[:0] = held
            raise
        self._published(pauses)
        log.info("sender: recorded %d outcomes held back while the database was away", recorded)
        self._note_fenced(len(outcomes) - recorded)

    @staticmethod
    def _note_fenced(count: int) -> None:
        if count:
            log.warning(
                "sender: %d outcomes not recorded: their rows are no longer this sender's "
                "claim (the lease ran out and another sender took them, or they were "
                "recorded already)",
                count,
            )

    async def _last_record(self) -> None:
        """On the way out: one more try at what the database did not take."""
        if not self._unrecorded:
            return
        with contextlib.suppress(*DATABASE_ERRORS):  # TimeoutError is an OSError
            async with asyncio.timeout(QUICK_WRITE_TIMEOUT):
                await self._record_unrecorded()
        left = sum(len(batch.outcomes) for batch in self._unrecorded)
        if left:
            log.error(
                "sender: stopping with %d outcomes the database did not take; those rows are "
                "sent again when their lease runs out",
                left,
            )

    def _database_lost(self, exc: Exception, retry_s: float) -> None:
        if self._db_down_since is None:
            self._db_down_since = time.monotonic()
            log.warning(
                "sender: database unavailable (%s: %s); retrying every %.1fs",
                type(exc).__name__,
                exc,
                retry_s,
            )
        else:
            log.debug("sender: database still unavailable: %s", exc)

    def _database_back(self) -> None:
        if self._db_down_since is not None:
            log.info("sender: database back after %.1fs", time.monotonic() - self._db_down_since)
            self._db_down_since = None

    # -- origin pauses, shared through the database --------------------------------------

    def _learn_pauses(self, shared: list[OriginPause]) -> None:
        """Merge what every sender wrote about origin pauses (read with the claim) into what
        this one knows."""
        now = time.monotonic()
        found = {p.origin: OriginBackoff(now + p.pause_s, p.strikes) for p in shared}
        for origin in self._origins.keys() | found.keys():
            self._origins[origin] = self._origin(origin).learned(
                found.get(origin, OriginBackoff()), keep_strikes=origin in self._unpublished
            )

    def _pauses_to_publish(self) -> list[tuple[OriginPause, OriginBackoff]]:
        now = time.monotonic()
        return [
            (OriginPause(origin, state.remaining(now), state.strikes), state)
            for origin, state in self._unpublished.items()
        ]

    def _published(self, pauses: list[tuple[OriginPause, OriginBackoff]]) -> None:
        for pause, state in pauses:
            if self._unpublished.get(pause.origin) == state:
                del self._unpublished[pause.origin]

    async def _publish_pauses(self) -> None:
        """Write new pauses at once: other processes must not wait for this batch to end."""
        if self._stopping.is_set():
            return  # the batch's record carries them; the grace is for that write
        async with self._publishing:
            pauses = self._pauses_to_publish()
            if not pauses:
                return
            try:
                # Bounded: a send must not wait long for a database that is not answering.
                async with asyncio.timeout(QUICK_WRITE_TIMEOUT):
                    await self.store.pause_origins([pause for pause, _ in pauses])
            except DATABASE_ERRORS as exc:  # TimeoutError is an OSError
                # The batch's record carries them when the database is back.
                log.warning("sender: cannot share an origin pause yet: %s", exc)
                return
            self._published(pauses)

    # -- one delivery ----------------------------------------------------------------------

    async def _deliver(
        self, row: ClaimedDelivery, claimed_at: float, posted: set[int]
    ) -> DeliveryOutcome:
        # Which push service the row is for, once known: the label of an internal error.
        origin = [NO_ORIGIN]
        try:
            outcome = await self._deliver_checked(row, claimed_at, origin, posted)
        except Exception as exc:
            # A bug must not lose the row: retry it later like a transient failure (it uses
            # up an attempt, so a row that always hits the bug fails in the end).
            self.failures.note(
                origin[0], Failure.INTERNAL, f"delivery {row.id}: {exc!r}", exc_info=exc
            )
            outcome = self._retry(row, origin[0], None, f"internal error: {exc!r}", label="error")
        # The claim's token: the record is fenced by it.
        return replace(outcome, lease=row.lease)

    async def _deliver_checked(
        self, row: ClaimedDelivery, claimed_at: float, known_origin: list[str], posted: set[int]
    ) -> DeliveryOutcome:
        if row.endpoint is None or row.p256dh is None or row.auth is None:
            return self._count(DeliveryOutcome(row.id, "cancelled", error="subscription gone"))
        if not row.subscription_active:
            return self._count(DeliveryOutcome(row.id, "cancelled", error="subscription gone"))
        if row.paused:
            return self._count(DeliveryOutcome(row.id, "cancelled", error="subscription paused"))
        if row.payload is None:
            return self._count(DeliveryOutcome(row.id, "cancelled", error="payload erased"))
        try:
            target = check_endpoint(row.endpoint, self.ctx.settings.push_hosts)
        except EndpointRefused as exc:
            # The refused URL must not become a label value; its host is in the message.
            self.failures.note(REFUSED_ORIGIN, Failure.REFUSED, exc.message)
            return self._count(
                DeliveryOutcome(row.id, "failed", error=f"endpoint refused: {exc.message}"),
                REFUSED_ORIGIN,
                "refused",
            )
        origin = known_origin[0] = target.origin
        data = {
            "delivery_id": row.id,
            **row.source,
            "variant": row.variant,
            "events_url": self._events_url,
            "event_token": tokens.event_token(self.ctx.keys.secret_key, row.id),
        }
        plaintext = render_payload(row.payload, data, base_url=self.ctx.settings.base_url)

        async with self._slots:
            if self._stopping.is_set():
                return DeliveryOutcome(row.id, "pending")  # released for another sender
            waited = time.monotonic() - claimed_at
            if waited + self.send_budget > self.lease - 1:
                # Our lease could run out mid-send and another sender would send it again.
                return DeliveryOutcome(row.id, "pending")
            now_db = row.db_now + timedelta(seconds=waited)
            ttl = min(ttl_seconds(row.expires_at, now_db), row.ttl_s)
            if ttl < 1:
                return self._count(DeliveryOutcome(row.id, "expired", error="ttl passed"), origin)
            pause = self._origin(origin).remaining(time.monotonic())
            if pause > 0:
                return self._count(
                    DeliveryOutcome(row.id, "pending", delay=pause, error="origin backing off"),
                    origin,
                    "deferred",
                )
            try:
                body = encrypt(plaintext, row.p256dh, row.auth)
            except PushPayloadTooLarge as exc:
                self.failures.note(origin, Failure.PAYLOAD_TOO_LARGE, f"delivery {row.id}: {exc}")
                return self._count(DeliveryOutcome(row.id, "failed", error=str(exc)), origin)
            except ValueError as exc:  # unusable subscription keys
                self.failures.note(origin, Failure.BAD_KEYS, f"delivery {row.id}: {exc}")
                return self._count(
                    DeliveryOutcome(row.id, "failed", error=f"bad subscription keys: {exc}"),
                    origin,
                )
            headers = build_headers(
                authorization=self.signer.authorization(origin),
                ttl=ttl,
                urgency=row.urgency,
                # Always a Topic: the rule's, else the delivery's own, so that a push sent
                # again (its outcome lost with a killed process) replaces the first one at
                # the push service if that one is still undelivered.
                topic=row.topic or delivery_tag(row.id),
            )
            posted.add(row.id)
            outcome = await self._post(row, target, headers, body)
            if origin in self._unpublished:
                await self._publish_pauses()
            return outcome

    async def _post(
        self, row: ClaimedDelivery, target: EndpointTarget, headers: dict[str, str], body: bytes
    ) -> DeliveryOutcome:
        origin = target.origin
        started = time.monotonic()
        try:
            answer = await self.client.post(target, headers, body)
        except AddressRefused as exc:
            # The resolver refused every address: no connection, so no request either.
            self.failures.note(origin, Failure.REFUSED, str(exc))
            return self._count(
                DeliveryOutcome(row.id, "failed", error=f"endpoint refused: {exc}"),
                origin,
                "refused",
            )
        except TimeoutError:
            child(PUSH_REQUESTS, origin, "timeout").inc()
            detail = f"no answer within {time.monotonic() - started:.1f} s"
            self.failures.note(origin, Failure.TIMEOUT, detail)
            return self._retry(row, origin, None, "timeout")
        except PushTLSError as exc:
            # The certificate error itself, after host:port (never the endpoint's path).
            child(PUSH_REQUESTS, origin, "connection_error").inc()
            self.failures.note(origin, Failure.TLS, str(exc))
            return self._retry(row, origin, None, f"TLS error: {exc}")
        except PushConnectionError as exc:
            child(PUSH_REQUESTS, origin, "connection_error").inc()
            self.failures.note(origin, Failure.CONNECTION, str(exc))
            return self._retry(row, origin, None, f"connection error: {exc}")
        child(PUSH_LATENCY, origin).observe(time.monotonic() - started)
        child(PUSH_REQUESTS, origin, str(answer.status)).inc()
        text = answer.body[:200].decode("utf-8", "replace")
        return self._interpret(row, origin, answer.status, text, answer.retry_after)

    def _interpret(
        self, row: ClaimedDelivery, origin: str, status: int, text: str, retry_after: str | None
    ) -> DeliveryOutcome:
        detail = f"HTTP {status}: {text}".strip() if text else f"HTTP {status}"
        match classify(status):
            case Action.SENT:
                state = self._origin(origin)
                if state.strikes:
                    accepted = state.accepted(time.monotonic())
                    if accepted != state:
                        self._origins[origin] = self._unpublished[origin] = accepted
                return self._count(DeliveryOutcome(row.id, "sent", 1, status), origin)
            case Action.GONE:
                outcome = DeliveryOutcome(
                    row.id, "gone", 1, status, detail, gone_subscription=row.subscription_id
                )
                return self._count(outcome, origin)
            case Action.AUTH_REJECTED:
                PUSH_AUTH_REJECTED.labels(origin).inc()
                self.failures.note(origin, Failure.AUTH_REJECTED, detail)
                return self._count(DeliveryOutcome(row.id, "failed", 1, status, detail), origin)
            case Action.RATE_LIMITED:
                return self._rate_limited(row, origin, retry_after, detail)
            case Action.REDIRECT_REFUSED:
                self.failures.note(origin, Failure.REDIRECT, detail)
                refused = f"redirect refused: {detail}"
                return self._count(DeliveryOutcome(row.id, "failed", 1, status, refused), origin)
            case Action.RETRY:
                self.failures.note(origin, Failure.SERVER_ERROR, detail)
                return self._retry(row, origin, status, detail)
            case Action.FAIL:
                kind = Failure.PAYLOAD_TOO_LARGE if status == 413 else Failure.CLIENT_ERROR
                self.failures.note(origin, kind, detail)
                return self._count(DeliveryOutcome(row.id, "failed", 1, status, detail), origin)

    def _rate_limited(
        self, row: ClaimedDelivery, origin: str, retry_after: str | None, detail: str
    ) -> DeliveryOutcome:
        state = self._origin(origin)
        now = time.monotonic()
        pause = self.retry.rate_limit_pause(retry_after, state.strike(now), datetime.now(UTC))
        # The whole origin waits, not just this message, and in every sender process: the
        # push service throttles us, not one subscriber, and hammering it on would prolong
        # the throttling. The pause goes to the database right after this answer.
        throttled = self._origins[origin] = state.throttled(pause, now)
        # The 429s of requests that were in flight together move the end by milliseconds:
        # only a new strike or a real extension is worth a write.
        news = throttled.strikes != state.strikes or throttled.until > state.until + SHARE_STEP
        if news or origin in self._unpublished:
            self._unpublished[origin] = throttled
        delay = throttled.remaining(now)
        pausing = f"{detail}; every sender pauses it for {delay:.1f} s"
        self.failures.note(origin, Failure.RATE_LIMITED, pausing)
        outcome = DeliveryOutcome(row.id, "pending", 1, 429, detail, delay)
        return self._count(outcome, origin, "retry")

    def _retry(
        self,
        row: ClaimedDelivery,
        origin: str,
        status: int | None,
        detail: str,
        *,
        label: str = "retry",
    ) -> DeliveryOutcome:
        attempts = row.attempts + 1
        delay = self.retry.retry_delay(attempts)
        if delay is None:
            failed = f"{detail} (after {attempts} attempts)"
            return self._count(DeliveryOutcome(row.id, "failed", 1, status, failed), origin)
        outcome = DeliveryOutcome(row.id, "pending", 1, status, detail, delay)
        return self._count(outcome, origin, label)

    def _origin(self, origin: str) -> OriginBackoff:
        return self._origins.get(origin) or OriginBackoff()

    @staticmethod
    def _count(
        outcome: DeliveryOutcome, origin: str | None = None, label: str | None = None
    ) -> DeliveryOutcome:
        child(PUSH_OUTCOMES, origin or NO_ORIGIN, label or outcome.status).inc()
        return outcome


async def run(ctx: Context, stop: asyncio.Event) -> None:
    """The sender component of ``momentcast serve`` / ``momentcast worker``."""
    async with Sender(ctx) as sender:
        await sender.serve(stop)
