"""Housekeeping: the retention of raw locations."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service.context import Context
from service.queue import DatabaseRetry
from service.store import DATABASE_ERRORS

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 60.0


async def purge_signals(ctx: Context) -> int:
    """Delete processed signals older than SIGNAL_RETENTION; return how many went."""
    return await ctx.store.purge_signals(older_than=ctx.settings.signal_retention)


async def run(ctx: Context, stop: asyncio.Event) -> None:
    # A database that is away is one warning line and a sooner retry, not a traceback a pass.
    retry = DatabaseRetry("maintenance", log, first_s=5.0, cap_s=RETENTION_INTERVAL_S)
    while not stop.is_set():
        wait = RETENTION_INTERVAL_S
        try:
            purged = await purge_signals(ctx)
            if purged:
                log.info("retention: deleted %d processed signals", purged)
        except DATABASE_ERRORS as exc:
            wait = retry.failed(exc)
        except Exception:
            log.exception("retention pass failed; retrying")
        else:
            retry.succeeded()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await stop.wait()
