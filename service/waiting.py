"""Waiting on events with a time limit: the one "until stop, a wake-up or the next poll" wait.

Every loop of the long-running components sleeps this way between passes (the worker, the
fan-out, the sender's lanes, the rules watcher, retention, the listener and its retries), so
that ``stop`` ends the sleep at once and a NOTIFY or a SIGHUP starts the next pass early.
"""

from __future__ import annotations

import asyncio
import time


async def wait_any(*events: asyncio.Event, seconds: float | None = None) -> None:
    """Return as soon as one of ``events`` is set, or after ``seconds`` (None: no
    limit). Always yields to the event loop once, even when an event is already set, so a
    loop that waits on a set event still lets the other tasks run."""
    if not events:
        raise ValueError("wait_any needs at least one event")
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        # Collected here, so that no cancelled waiter outlives the call (or warns at exit).
        await asyncio.gather(*waiters, return_exceptions=True)


async def linger_until(deadline: float, stop: asyncio.Event) -> bool:
    """Wait until ``time.monotonic()`` reaches ``deadline`` (at once if it has) or ``stop``
    is set; return whether ``stop`` is set. The coalescing pause of the worker's and the
    sender's claims (BATCH_LINGER_MS): ``stop`` ends it at once."""
    delay = deadline - time.monotonic()
    if delay > 0 and not stop.is_set():
        await wait_any(stop, seconds=delay)
    return stop.is_set()
