"""The queue's shared vocabulary: the NOTIFY channels that producers and consumers meet on.

Ingest (producer of signals), the worker (their consumer, producer of deliveries) and the
sender (consumer of deliveries) import these names from here, never from each other, so
importing the API loads nothing of the engine (model: arq's ``constants``). With them, what
every consumer loop shares: the reconnecting :class:`Listener` and :class:`DatabaseRetry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Protocol

from service.errors import MomentcastError
from service.metrics import DATABASE_ERRORS_TOTAL
from service.store.base import DATABASE_ERRORS, Connection
from service.waiting import wait_any

# A refused or lost connection, or a store without a DSN: logged, then retried.
_LISTEN_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, MomentcastError)

log = logging.getLogger(__name__)

# A dedicated connection that answers nothing (half-open: the peer or a middlebox gone
# silent, the socket still open) would keep a listener deaf for hours, since LISTEN only
# waits. So it is checked with one round trip every LISTEN_CHECK_S, which must come back
# within LISTEN_CHECK_TIMEOUT_S: a silent connection is replaced within their sum.
LISTEN_CHECK_S = 10.0
LISTEN_CHECK_TIMEOUT_S = 10.0

# Ingest NOTIFYs this after each committed batch of signals; workers LISTEN.
SIGNALS_CHANNEL = "momentcast_signals"
# Workers NOTIFY this after a batch that decided deliveries; senders LISTEN.
DELIVERIES_CHANNEL = "momentcast_deliveries"
# The API and the CLI NOTIFY this when a campaign is created; the fan-out LISTENs (and like
# the worker it NOTIFYs DELIVERIES_CHANNEL when it queued pushes).
CAMPAIGNS_CHANNEL = "momentcast_campaigns"


class DatabaseRetry:
    """How a background loop lives through database errors (DATABASE_ERRORS): one warning
    line when they start, naming the error; a count of each in
    ``momentcast_database_errors_total``; a pause that doubles from ``first_s`` up to
    ``cap_s`` (with jitter, so that processes do not all reconnect in step); one line when
    the database answers again. The loop itself goes on: no component stops for the
    database."""

    def __init__(
        self,
        component: str,
        logger: logging.Logger,
        *,
        first_s: float = 0.25,
        cap_s: float = 10.0,
    ) -> None:
        self.component = component
        self._log = logger
        self._first_s = first_s
        self._cap_s = cap_s
        self._next_s = first_s
        self._since: float | None = None
        self.errors = 0

    def failed(self, exc: BaseException) -> float:
        """Count and log ``exc``; return how long to pause before the next try."""
        self.errors += 1
        DATABASE_ERRORS_TOTAL.labels(self.component).inc()
        pause = self._next_s
        self._next_s = min(self._cap_s, self._next_s * 2)
        if self._since is None:
            self._since = time.monotonic()
            self._log.warning(
                "%s: database error (%s); retrying with backoff", self.component, describe(exc)
            )
        else:
            self._log.debug("%s: database error again (%s)", self.component, describe(exc))
        return pause * random.uniform(0.8, 1.2)

    def succeeded(self) -> None:
        """The database answered: the next error is a new outage."""
        self._next_s = self._first_s
        if self._since is not None:
            self._log.info(
                "%s: database back after %.1fs", self.component, time.monotonic() - self._since
            )
            self._since = None

    async def pause(self, exc: BaseException, stop: asyncio.Event) -> None:
        """:meth:`failed`, then wait its pause or until ``stop``."""
        await wait_any(stop, seconds=self.failed(exc))


class Notifiable(Protocol):
    """What the listener needs of the store: a connection of its own, outside the pool, and a
    round trip on it."""

    async def connect(self) -> Connection: ...

    async def check_connection(self, conn: Connection, *, within: float) -> None: ...


class Listener:
    """LISTENs on one channel over a dedicated connection and sets ``wake`` on each NOTIFY.

    The connection is re-opened when it is lost (a database restart, a network cut,
    ``pg_terminate_backend``) or goes silent (checked every LISTEN_CHECK_S), so a consumer
    goes back to waking within milliseconds instead of degrading to its poll interval.
    ``wake`` is also set after every (re)connect: NOTIFYs sent while nobody listened are
    lost, so the consumer looks at the queue once. Only ``stop`` ends it: whatever a
    connection raises is logged and the listener connects again.
    """

    def __init__(
        self,
        store: Notifiable,
        channel: str,
        wake: asyncio.Event,
        *,
        retry_s: float = 1.0,
        check_s: float = LISTEN_CHECK_S,
        check_timeout_s: float = LISTEN_CHECK_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._channel = channel
        self._wake = wake
        self._retry_s = retry_s
        self._check_s = check_s
        self._check_timeout_s = check_timeout_s
        self.connected = asyncio.Event()
        self.reconnects = 0

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``; never ends before it."""
        first = True
        while not stop.is_set():
            lost = asyncio.Event()
            conn: Connection | None = None
            try:
                conn = await self._store.connect()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self._channel, self._on_notify)
                if not first:
                    self.reconnects += 1
                    log.info("LISTEN %s re-established", self._channel)
                first = False
                self.connected.set()
                self._wake.set()
                await self._watch(conn, stop, lost)
            except _LISTEN_ERRORS as exc:
                DATABASE_ERRORS_TOTAL.labels("listen").inc()
                log.warning(
                    "LISTEN %s: connection failed (%s); reconnecting in %.1fs",
                    self._channel,
                    describe(exc),
                    self._retry_s,
                )
            except Exception:
                # Not a known database error: a bug or an asyncpg surprise. Still not a
                # reason to leave the consumer deaf until the process restarts.
                DATABASE_ERRORS_TOTAL.labels("listen").inc()
                log.exception("LISTEN %s failed; retrying in %.1fs", self._channel, self._retry_s)
            finally:
                self.connected.clear()
                if conn is not None:
                    await _drop(conn, graceful=stop.is_set() and not lost.is_set())
            if not stop.is_set():
                if lost.is_set():
                    log.warning("LISTEN %s: connection lost; reconnecting", self._channel)
                await wait_any(stop, seconds=self._retry_s)

    async def _watch(self, conn: Connection, stop: asyncio.Event, lost: asyncio.Event) -> None:
        """Return at ``stop`` or when the connection is lost; raise when it stops answering."""
        while not stop.is_set() and not lost.is_set():
            await wait_any(stop, lost, seconds=self._check_s)
            if not stop.is_set() and not lost.is_set():
                await self._store.check_connection(conn, within=self._check_timeout_s)


def describe(exc: BaseException) -> str:
    """An error for a log line: its type, and its message if it has one (a timeout has none),
    cut short."""
    message = str(exc)[:200]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def _drop(conn: Connection, *, graceful: bool) -> None:
    """Close a listener's connection: politely when it is healthy, at once otherwise (a
    close on a dead or silent connection only waits)."""
    if graceful and not conn.is_closed():
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)
    conn.terminate()
