"""The queue's shared vocabulary: the NOTIFY channels that producers and consumers meet on.

Ingest (producer of signals), the worker (their consumer, producer of deliveries) and the
sender (consumer of deliveries) import these names from here, never from each other, so
importing the API loads nothing of the engine (model: arq's ``constants``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from service.errors import MomentcastError
from service.store.base import DATABASE_ERRORS, Connection

log = logging.getLogger(__name__)

# A refused or lost connection, or a store without a DSN: logged, then retried.
_LISTEN_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, MomentcastError)

# Ingest NOTIFYs this after each committed batch of signals; workers LISTEN.
SIGNALS_CHANNEL = "momentcast_signals"
# Workers NOTIFY this after a batch that decided deliveries; senders LISTEN.
DELIVERIES_CHANNEL = "momentcast_deliveries"
# The API and the CLI NOTIFY this when a campaign is created; the fan-out LISTENs (and like
# the worker it NOTIFYs DELIVERIES_CHANNEL when it queued pushes).
CAMPAIGNS_CHANNEL = "momentcast_campaigns"


class Notifiable(Protocol):
    """What the listener needs of the store: a connection of its own, outside the pool."""

    async def connect(self) -> Connection: ...


class Listener:
    """LISTENs on one channel over a dedicated connection and sets ``wake`` on each NOTIFY.

    The connection is re-opened when it is lost (a database restart, a network cut), so a
    consumer goes back to waking within milliseconds instead of degrading to its poll
    interval. ``wake`` is also set after every (re)connect: NOTIFYs sent while nobody
    listened are lost, so the consumer looks at the queue once.
    """

    def __init__(
        self, store: Notifiable, channel: str, wake: asyncio.Event, *, retry_s: float = 1.0
    ) -> None:
        self._store = store
        self._channel = channel
        self._wake = wake
        self._retry_s = retry_s
        self.connected = asyncio.Event()
        self.reconnects = 0

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``; never raises for a lost or refused connection."""
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
                await _wait_first(stop.wait(), lost.wait())
            except _LISTEN_ERRORS as exc:
                log.warning(
                    "LISTEN %s: no connection (%s); retrying in %.1fs",
                    self._channel,
                    type(exc).__name__,
                    self._retry_s,
                )
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(*DATABASE_ERRORS):
                        await conn.close(timeout=2)
            if not stop.is_set():
                if lost.is_set():
                    log.warning("LISTEN %s: connection lost; reconnecting", self._channel)
                await _wait_first(stop.wait(), asyncio.sleep(self._retry_s))


async def _wait_first(*aws: Coroutine[Any, Any, object]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
