"""The push sender: claims due deliveries from the outbox, sends them, records the outcome.

Any number of sender processes may run: rows are claimed with ``FOR UPDATE SKIP LOCKED`` and
leased through ``claimed_until``, so a sender that dies hands its rows on when the lease runs
out. Within a process a few "lanes" each claim a batch, send it concurrently through one
shared aiohttp session and record all outcomes in one statement; several lanes keep one slow
push service from stalling everybody behind a single batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from prometheus_client import Counter, Histogram

from service import tokens
from service.context import Context
from service.endpoints import check_endpoint, host_is_explicit, is_public_address
from service.errors import AddressRefused, EndpointRefused, PushPayloadTooLarge
from service.metrics import REGISTRY
from service.queue import DELIVERIES_CHANNEL
from service.store.db import q
from service.webpush import (
    VapidSigner,
    build_headers,
    encrypt,
    render_payload,
    ttl_seconds,
)

log = logging.getLogger(__name__)

PUSH_REQUESTS = Counter(
    "momentcast_push_requests_total",
    "Requests to push services by origin and HTTP status (or timeout/connection_error)",
    ["origin", "status"],
    registry=REGISTRY,
)
PUSH_OUTCOMES = Counter(
    "momentcast_push_deliveries_total",
    "Delivery attempts by push-service origin and outcome "
    "(sent, gone, failed, retry, expired, cancelled, refused, deferred)",
    ["origin", "outcome"],
    registry=REGISTRY,
)
PUSH_AUTH_REJECTED = Counter(
    "momentcast_push_auth_rejected_total",
    "ALARM: a push service answered 401/403, so our VAPID key or subject is not accepted",
    ["origin"],
    registry=REGISTRY,
)
PUSH_VAPID_SIGNATURES = Counter(
    "momentcast_push_vapid_signatures_total",
    "VAPID JWTs signed, by push-service origin (one per origin every few hours is normal)",
    ["origin"],
    registry=REGISTRY,
)
PUSH_LATENCY = Histogram(
    "momentcast_push_request_seconds",
    "Push service response time by origin",
    ["origin"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Label for rows whose endpoint fails the policy: their URL must not become a label value.
REFUSED_ORIGIN = "refused"
# Retry-After beyond this is treated as this: a push should not wait for a day.
MAX_RETRY_AFTER = 3600.0
# Lanes of claim -> send -> record running side by side in one process.
DEFAULT_LANES = 4
# One alarm log line per origin per this many seconds; the metric counts every one.
ALARM_LOG_INTERVAL = 60.0


_children: dict[tuple[object, ...], Any] = {}


def _child(metric: Counter | Histogram, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: labels() validates and locks on every call,
    which shows up at thousands of pushes per second."""
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default but drops non-public addresses.

    The check runs at connect time, after DNS, so an endpoint accepted at registration
    cannot later be pointed at an internal address by changing its DNS records. Hosts named
    by an ``http://`` entry of PUSH_HOSTS are exempt: the operator asked for them.
    """

    def __init__(self, push_hosts: list[str], inner: AbstractResolver | None = None) -> None:
        self._push_hosts = list(push_hosts)
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host_is_explicit(host, port, self._push_hosts):
            return results
        public = [r for r in results if is_public_address(r["host"])]
        if not public:
            raise AddressRefused(f"{host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER)


@dataclass
class Outcome:
    """What became of one claimed delivery; ``status`` 'pending' means retry or release."""

    id: int
    status: str
    attempted: int = 0
    http_status: int | None = None
    error: str | None = None
    delay: float | None = None  # seconds from now until the next try, for 'pending'
    gone_subscription: uuid.UUID | None = None


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
        self.batch_size = batch_size or settings.sender_concurrency
        self.lanes = lanes
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._rng = rng or random.Random()
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
        lanes = [
            asyncio.create_task(self._lane(stop), name=f"sender-lane-{i}")
            for i in range(self.lanes)
        ]
        listener = await self._listen()
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *lanes], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.remove_listener(DELIVERIES_CHANNEL, self._on_notify)
            with contextlib.suppress(Exception):
                await self.ctx.pool.release(listener)
        # Rows that are claimed but not yet being sent are released at once from here on.
        self._stopping.set()
        grace = self.ctx.settings.shutdown_grace.total_seconds()
        _, late = await asyncio.wait(lanes, timeout=grace)
        for task in late:
            task.cancel()
        results = await asyncio.gather(*lanes, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("sender lane failed", exc_info=result)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self) -> asyncpg.Connection | None:
        """Wake on the worker's NOTIFY after each batch with decisions; polling stays the
        fallback (the listening connection dies with a database restart)."""
        try:
            conn: asyncpg.Connection = await self.ctx.pool.acquire()
        except (asyncpg.PostgresError, OSError):
            return None
        try:
            await conn.add_listener(DELIVERIES_CHANNEL, self._on_notify)
        except (asyncpg.PostgresError, OSError):
            await self.ctx.pool.release(conn)
            return None
        return conn

    async def _lane(self, stop: asyncio.Event) -> None:
        poll = self.ctx.settings.worker_poll_interval.total_seconds()
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self.run_once()
            except (asyncpg.PostgresError, OSError) as exc:
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
        rows = await self.ctx.pool.fetch(q("push_claim"), limit or self.batch_size, self.lease)
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
            released = [Outcome(row["id"], "pending") for row in rows if row["id"] not in done_ids]
            await asyncio.shield(self._record([*finished, *released]))
            raise
        await self._record(outcomes)
        return len(rows)

    # -- one delivery ----------------------------------------------------------------------

    async def _deliver(self, row: asyncpg.Record, claimed_at: float) -> Outcome:
        try:
            return await self._deliver_checked(row, claimed_at)
        except Exception as exc:
            # A bug must not lose the row: retry it later like a transient failure.
            log.exception("sender: unexpected error on delivery %s", row["id"])
            return self._retry(row, REFUSED_ORIGIN, None, f"internal error: {exc!r}")

    async def _deliver_checked(self, row: asyncpg.Record, claimed_at: float) -> Outcome:
        delivery_id: int = row["id"]
        if row["endpoint"] is None or row["subscription_status"] != "active":
            return self._count(Outcome(delivery_id, "cancelled", error="subscription gone"), None)
        if row["paused"]:
            return self._count(Outcome(delivery_id, "cancelled", error="subscription paused"), None)
        if row["payload"] is None:
            return self._count(Outcome(delivery_id, "cancelled", error="payload erased"), None)
        try:
            target = check_endpoint(row["endpoint"], self.ctx.settings.push_hosts)
        except EndpointRefused as exc:
            return self._count(
                Outcome(delivery_id, "failed", error=f"endpoint refused: {exc.message}"),
                REFUSED_ORIGIN,
                "refused",
            )
        origin = target.origin
        data = {
            "delivery_id": delivery_id,
            "rule": row["rule_id"],
            "variant": row["variant"],
            "events_url": self._events_url,
            "event_token": tokens.event_token(self.ctx.keys.secret_key, delivery_id),
        }
        plaintext = render_payload(row["payload"], data)

        async with self._slots:
            if self._stopping.is_set():
                return Outcome(delivery_id, "pending")  # released for another sender
            waited = time.monotonic() - claimed_at
            if waited + self.send_budget > self.lease - 1:
                # Our lease could run out mid-send and another sender would send it again.
                return Outcome(delivery_id, "pending")
            now_db: datetime = row["db_now"] + timedelta(seconds=waited)
            ttl = min(ttl_seconds(row["expires_at"], now_db), row["ttl_s"])
            if ttl < 1:
                return self._count(Outcome(delivery_id, "expired", error="ttl passed"), origin)
            pause = self._origin(origin).paused_until - time.monotonic()
            if pause > 0:
                return self._count(
                    Outcome(delivery_id, "pending", delay=pause, error="origin backing off"),
                    origin,
                    "deferred",
                )
            try:
                body = encrypt(plaintext, row["p256dh"], row["auth"])
            except PushPayloadTooLarge as exc:
                return self._count(Outcome(delivery_id, "failed", error=str(exc)), origin)
            except ValueError as exc:  # unusable subscription keys
                return self._count(
                    Outcome(delivery_id, "failed", error=f"bad subscription keys: {exc}"), origin
                )
            headers = build_headers(
                authorization=self.signer.authorization(origin),
                ttl=ttl,
                urgency=row["urgency"],
                topic=row["topic"],
            )
            return await self._post(row, origin, headers, body)

    async def _post(
        self, row: asyncpg.Record, origin: str, headers: dict[str, str], body: bytes
    ) -> Outcome:
        delivery_id: int = row["id"]
        started = time.monotonic()
        try:
            async with (
                asyncio.timeout(self.send_budget),
                self.session.post(
                    row["endpoint"], data=body, headers=headers, allow_redirects=False
                ) as resp,
            ):
                status = resp.status
                text = (await resp.read())[:200].decode("utf-8", "replace")
                retry_after = resp.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                _child(PUSH_REQUESTS, origin, "refused").inc()
                return self._count(
                    Outcome(delivery_id, "failed", error=f"endpoint refused: {exc.os_error}"),
                    origin,
                    "refused",
                )
            _child(PUSH_REQUESTS, origin, "connection_error").inc()
            return self._retry(row, origin, None, f"connection error: {exc}")
        except TimeoutError:
            _child(PUSH_REQUESTS, origin, "timeout").inc()
            return self._retry(row, origin, None, "timeout")
        except aiohttp.ClientError as exc:
            _child(PUSH_REQUESTS, origin, "connection_error").inc()
            return self._retry(row, origin, None, f"connection error: {exc!r}")
        _child(PUSH_LATENCY, origin).observe(time.monotonic() - started)
        _child(PUSH_REQUESTS, origin, str(status)).inc()
        return self._interpret(row, origin, status, text, retry_after)

    def _interpret(
        self, row: asyncpg.Record, origin: str, status: int, text: str, retry_after: str | None
    ) -> Outcome:
        delivery_id: int = row["id"]
        detail = f"HTTP {status}: {text}".strip() if text else f"HTTP {status}"
        if status in (200, 201, 202):
            self._origin(origin).strikes = 0
            return self._count(Outcome(delivery_id, "sent", 1, status), origin)
        if status in (404, 410):
            return self._count(
                Outcome(
                    delivery_id,
                    "gone",
                    1,
                    status,
                    detail,
                    gone_subscription=row["subscription_id"],
                ),
                origin,
            )
        if status in (401, 403):
            self._alarm(origin, status, text)
            return self._count(Outcome(delivery_id, "failed", 1, status, detail), origin)
        if status == 429:
            return self._rate_limited(row, origin, retry_after, detail)
        if 300 <= status < 400:
            # Push services never redirect; following one would let a push service (or
            # whoever answers for it) steer our POSTs anywhere.
            return self._count(
                Outcome(delivery_id, "failed", 1, status, f"redirect refused: {detail}"), origin
            )
        if status >= 500:
            return self._retry(row, origin, status, detail)
        # 400, 413 and other client errors: the same request would fail the same way.
        return self._count(Outcome(delivery_id, "failed", 1, status, detail), origin)

    def _rate_limited(
        self, row: asyncpg.Record, origin: str, retry_after: str | None, detail: str
    ) -> Outcome:
        state = self._origin(origin)
        state.strikes += 1
        delay = parse_retry_after(retry_after, datetime.now(UTC))
        if delay is None:
            delay = self._backoff(state.strikes)
        delay = max(delay, 1.0)
        # The whole origin waits, not just this message: the push service throttles us, not
        # one subscriber, and hammering it on would prolong the throttling.
        state.paused_until = max(state.paused_until, time.monotonic() + delay)
        log.warning("sender: %s answered 429; pausing that origin for %.1fs", origin, delay)
        # 429 does not use up attempts: the TTL bounds how long the message keeps trying.
        return self._count(Outcome(row["id"], "pending", 1, 429, detail, delay), origin, "retry")

    def _retry(self, row: asyncpg.Record, origin: str, status: int | None, detail: str) -> Outcome:
        attempts = row["attempts"] + 1
        if attempts >= self.ctx.settings.sender_max_attempts:
            return self._count(
                Outcome(row["id"], "failed", 1, status, f"{detail} (after {attempts} attempts)"),
                origin,
            )
        delay = self._backoff(attempts)
        return self._count(Outcome(row["id"], "pending", 1, status, detail, delay), origin, "retry")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so retries of one outage do not arrive together."""
        ceiling = min(self.retry_cap, self.retry_base * 2.0 ** (attempt - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)

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
    def _count(outcome: Outcome, origin: str | None, label: str | None = None) -> Outcome:
        _child(PUSH_OUTCOMES, origin or "none", label or outcome.status).inc()
        return outcome

    # -- recording -------------------------------------------------------------------------

    async def _record(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        gone = sorted({o.gone_subscription for o in outcomes if o.gone_subscription is not None})
        args: tuple[list[Any], ...] = ([], [], [], [], [], [])
        for o in outcomes:
            for column, value in zip(
                args, (o.id, o.status, o.attempted, o.http_status, o.error, o.delay), strict=True
            ):
                column.append(value)
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            await conn.execute(q("push_record"), *args)
            if gone:
                await conn.execute(q("push_mark_gone"), gone)
                await conn.execute(q("push_cancel_for_gone"), gone)


async def run(ctx: Context, stop: asyncio.Event) -> None:
    """The sender component of ``momentcast serve`` / ``momentcast worker``."""
    async with Sender(ctx) as sender:
        await sender.serve(stop)
