"""The send loop: claim due deliveries from the outbox, send them, record the outcomes.

Any number of sender processes may run: rows are claimed with ``FOR UPDATE SKIP LOCKED`` and
leased through ``claimed_until``, so a sender that dies hands its rows on when the lease runs
out. Within a process a few "lanes" each claim a batch, send it concurrently through one
shared aiohttp session and record all outcomes in one statement; several lanes keep one slow
push service from stalling everybody behind a single batch. What an answer means and how
long to wait is :mod:`service.push.retry`'s; which endpoints may be reached is
:mod:`service.endpoints`'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from service import tokens
from service.context import Context
from service.endpoints import GuardedResolver, check_endpoint
from service.errors import AddressRefused, EndpointRefused, PushPayloadTooLarge
from service.push.metrics import (
    PUSH_AUTH_REJECTED,
    PUSH_LATENCY,
    PUSH_OUTCOMES,
    PUSH_REQUESTS,
    PUSH_VAPID_SIGNATURES,
    REFUSED_ORIGIN,
    child,
)
from service.push.retry import Action, RetryPolicy, classify
from service.queue import DELIVERIES_CHANNEL, Listener
from service.store import DATABASE_ERRORS
from service.store.deliveries import ClaimedDelivery, DeliveryOutcome
from service.webpush import VapidSigner, build_headers, encrypt, render_payload, ttl_seconds

log = logging.getLogger(__name__)

# Lanes of claim -> send -> record running side by side in one process.
DEFAULT_LANES = 4
# One alarm log line per origin per this many seconds; the metric counts every one.
ALARM_LOG_INTERVAL = 60.0


@dataclass
class _OriginState:
    paused_until: float = 0.0  # time.monotonic()
    strikes: int = 0  # consecutive 429s, to grow the pause when no Retry-After is given


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
        self._origins: dict[str, _OriginState] = {}
        self._last_alarm: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    async def __aenter__(self) -> Sender:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        settings = self.ctx.settings
        concurrency = settings.sender_concurrency
        connector = aiohttp.TCPConnector(
            limit=concurrency,
            # One slow push service may hold most connections but never all of them.
            limit_per_host=max(1, concurrency * 3 // 4),
            resolver=GuardedResolver(settings.push_hosts),
            ttl_dns_cache=60,
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._connect_timeout,
            sock_connect=self._connect_timeout,
            sock_read=self._read_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Sender.start() has not been called")
        return self._session

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
        # Rows that are claimed but not yet being sent are released at once from here on.
        self._stopping.set()
        grace = self.ctx.settings.shutdown_grace.total_seconds()
        _, late = await asyncio.wait(lanes, timeout=grace)
        for task in late:
            task.cancel()
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        results = await asyncio.gather(*lanes, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("sender lane failed", exc_info=result)

    async def _lane(self, stop: asyncio.Event) -> None:
        poll = self.ctx.settings.worker_poll_interval.total_seconds()
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self.run_once()
            except DATABASE_ERRORS as exc:
                # The database restarting should delay pushes, not kill the process.
                log.warning("sender: database error, retrying in %.1fs: %s", poll, exc)
                sent = 0
            if sent == 0:
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
                await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()

    async def run_once(self, limit: int | None = None) -> int:
        """Claim one batch of due deliveries, send it and record the outcomes.

        Returns the number of rows claimed (0: nothing was due). If cancelled, finished
        outcomes are still recorded and unfinished rows are released for another sender.
        """
        rows = await self.store.claim_deliveries(limit=limit or self.batch_size, lease_s=self.lease)
        if not rows:
            return 0
        claimed_at = time.monotonic()
        tasks = [asyncio.create_task(self._deliver(row, claimed_at)) for row in rows]
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
            released = [
                DeliveryOutcome(row.id, "pending") for row in rows if row.id not in done_ids
            ]
            await asyncio.shield(self.store.record_outcomes([*finished, *released]))
            raise
        await self.store.record_outcomes(outcomes)
        return len(rows)

    # -- one delivery ----------------------------------------------------------------------

    async def _deliver(self, row: ClaimedDelivery, claimed_at: float) -> DeliveryOutcome:
        try:
            return await self._deliver_checked(row, claimed_at)
        except Exception as exc:
            # A bug must not lose the row: retry it later like a transient failure.
            log.exception("sender: unexpected error on delivery %s", row.id)
            return self._retry(row, REFUSED_ORIGIN, None, f"internal error: {exc!r}")

    async def _deliver_checked(self, row: ClaimedDelivery, claimed_at: float) -> DeliveryOutcome:
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
            return self._count(
                DeliveryOutcome(row.id, "failed", error=f"endpoint refused: {exc.message}"),
                REFUSED_ORIGIN,
                "refused",
            )
        origin = target.origin
        data = {
            "delivery_id": row.id,
            "rule": row.rule_id,
            "variant": row.variant,
            "events_url": self._events_url,
            "event_token": tokens.event_token(self.ctx.keys.secret_key, row.id),
        }
        plaintext = render_payload(row.payload, data)

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
            pause = self._origin(origin).paused_until - time.monotonic()
            if pause > 0:
                return self._count(
                    DeliveryOutcome(row.id, "pending", delay=pause, error="origin backing off"),
                    origin,
                    "deferred",
                )
            try:
                body = encrypt(plaintext, row.p256dh, row.auth)
            except PushPayloadTooLarge as exc:
                return self._count(DeliveryOutcome(row.id, "failed", error=str(exc)), origin)
            except ValueError as exc:  # unusable subscription keys
                return self._count(
                    DeliveryOutcome(row.id, "failed", error=f"bad subscription keys: {exc}"),
                    origin,
                )
            headers = build_headers(
                authorization=self.signer.authorization(origin),
                ttl=ttl,
                urgency=row.urgency,
                topic=row.topic,
            )
            return await self._post(row, row.endpoint, origin, headers, body)

    async def _post(
        self,
        row: ClaimedDelivery,
        endpoint: str,
        origin: str,
        headers: dict[str, str],
        body: bytes,
    ) -> DeliveryOutcome:
        started = time.monotonic()
        try:
            async with (
                asyncio.timeout(self.send_budget),
                self.session.post(
                    endpoint, data=body, headers=headers, allow_redirects=False
                ) as resp,
            ):
                status = resp.status
                text = (await resp.read())[:200].decode("utf-8", "replace")
                retry_after = resp.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                child(PUSH_REQUESTS, origin, "refused").inc()
                return self._count(
                    DeliveryOutcome(row.id, "failed", error=f"endpoint refused: {exc.os_error}"),
                    origin,
                    "refused",
                )
            child(PUSH_REQUESTS, origin, "connection_error").inc()
            return self._retry(row, origin, None, f"connection error: {exc}")
        except TimeoutError:
            child(PUSH_REQUESTS, origin, "timeout").inc()
            return self._retry(row, origin, None, "timeout")
        except aiohttp.ClientError as exc:
            child(PUSH_REQUESTS, origin, "connection_error").inc()
            return self._retry(row, origin, None, f"connection error: {exc!r}")
        child(PUSH_LATENCY, origin).observe(time.monotonic() - started)
        child(PUSH_REQUESTS, origin, str(status)).inc()
        return self._interpret(row, origin, status, text, retry_after)

    def _interpret(
        self, row: ClaimedDelivery, origin: str, status: int, text: str, retry_after: str | None
    ) -> DeliveryOutcome:
        detail = f"HTTP {status}: {text}".strip() if text else f"HTTP {status}"
        match classify(status):
            case Action.SENT:
                self._origin(origin).strikes = 0
                return self._count(DeliveryOutcome(row.id, "sent", 1, status), origin)
            case Action.GONE:
                outcome = DeliveryOutcome(
                    row.id, "gone", 1, status, detail, gone_subscription=row.subscription_id
                )
                return self._count(outcome, origin)
            case Action.AUTH_REJECTED:
                self._alarm(origin, status, text)
                return self._count(DeliveryOutcome(row.id, "failed", 1, status, detail), origin)
            case Action.RATE_LIMITED:
                return self._rate_limited(row, origin, retry_after, detail)
            case Action.REDIRECT_REFUSED:
                refused = f"redirect refused: {detail}"
                return self._count(DeliveryOutcome(row.id, "failed", 1, status, refused), origin)
            case Action.RETRY:
                return self._retry(row, origin, status, detail)
            case Action.FAIL:
                return self._count(DeliveryOutcome(row.id, "failed", 1, status, detail), origin)

    def _rate_limited(
        self, row: ClaimedDelivery, origin: str, retry_after: str | None, detail: str
    ) -> DeliveryOutcome:
        state = self._origin(origin)
        state.strikes += 1
        delay = self.retry.rate_limit_pause(retry_after, state.strikes, datetime.now(UTC))
        # The whole origin waits, not just this message: the push service throttles us, not
        # one subscriber, and hammering it on would prolong the throttling.
        state.paused_until = max(state.paused_until, time.monotonic() + delay)
        log.warning("sender: %s answered 429; pausing that origin for %.1fs", origin, delay)
        outcome = DeliveryOutcome(row.id, "pending", 1, 429, detail, delay)
        return self._count(outcome, origin, "retry")

    def _retry(
        self, row: ClaimedDelivery, origin: str, status: int | None, detail: str
    ) -> DeliveryOutcome:
        attempts = row.attempts + 1
        delay = self.retry.retry_delay(attempts)
        if delay is None:
            failed = f"{detail} (after {attempts} attempts)"
            return self._count(DeliveryOutcome(row.id, "failed", 1, status, failed), origin)
        outcome = DeliveryOutcome(row.id, "pending", 1, status, detail, delay)
        return self._count(outcome, origin, "retry")

    def _origin(self, origin: str) -> _OriginState:
        state = self._origins.get(origin)
        if state is None:
            state = self._origins[origin] = _OriginState()
        return state

    def _alarm(self, origin: str, status: int, text: str) -> None:
        PUSH_AUTH_REJECTED.labels(origin).inc()
        now = time.monotonic()
        if now - self._last_alarm.get(origin, -ALARM_LOG_INTERVAL) >= ALARM_LOG_INTERVAL:
            self._last_alarm[origin] = now
            log.error(
                "ALARM: push service %s rejected our VAPID credentials (HTTP %s: %s). Check "
                "MOMENTCAST_VAPID_PRIVATE_KEY (subscriptions are bound to the key they were "
                "made with) and MOMENTCAST_VAPID_SUBJECT. Subscribers are kept.",
                origin,
                status,
                text[:200],
            )

    @staticmethod
    def _count(
        outcome: DeliveryOutcome, origin: str | None = None, label: str | None = None
    ) -> DeliveryOutcome:
        child(PUSH_OUTCOMES, origin or "none", label or outcome.status).inc()
        return outcome


async def run(ctx: Context, stop: asyncio.Event) -> None:
    """The sender component of ``momentcast serve`` / ``momentcast worker``."""
    async with Sender(ctx) as sender:
        await sender.serve(stop)
