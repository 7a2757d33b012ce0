"""Housekeeping: the retention of raw locations."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service.context import Context

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 60.0


async def purge_signals(ctx: Context) -> int:
    """Delete processed signals older than SIGNAL_RETENTION; return how many went."""
    return await ctx.store.purge_signals(older_than=ctx.settings.signal_retention)


async def run(ctx: Context, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            purged = await purge_signals(ctx)
            if purged:
                log.info("retention: deleted %d processed signals", purged)
        except Exception:
            log.exception("retention pass failed; retrying")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RETENTION_INTERVAL_S):
                await stop.wait()
