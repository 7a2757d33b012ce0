"""The worker: claims stored signals and turns them into push decisions."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service.context import Context

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "momentcast_signals"


async def run(ctx: Context, stop: asyncio.Event) -> None:
    """Wait for work until ``stop``; decisions arrive with the worker issue."""
    wake = asyncio.Event()

    def on_notify(*_: object) -> None:
        wake.set()

    async with ctx.pool.acquire() as conn:
        await conn.add_listener(NOTIFY_CHANNEL, on_notify)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ctx.settings.worker_poll_interval.total_seconds()):
                        await stop.wait()
                wake.clear()
        finally:
            await conn.remove_listener(NOTIFY_CHANNEL, on_notify)
