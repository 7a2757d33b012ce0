"""Housekeeping: nothing grows forever.

Each pass (one a minute in every process that runs the maintenance component):
- processed signals older than SIGNAL_RETENTION are deleted;
- shadow rules' would-be sends (place and time: location history) older than SIGNAL_RETENTION
  are deleted, whether or not their subscriber sends again;
- deliveries, their events and campaigns' suppressions older than DELIVERY_RETENTION are
  rolled up into daily counts and deleted (service/store/sql/retention.sql), a bounded number
  of batches per pass, one transaction each. Any number of processes may run it at once: one
  rolls up at a time, and each row is counted in the same transaction that deletes it.

Every HEALTH_INTERVAL_S it also refreshes the gauges of the last week's interaction rate
(momentcast_interaction_rate): one read of a week of sent pushes, so not on every scrape and
not every pass; a rate over 7 days moves slowly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta

from service.context import Context
from service.metrics import INTERACTION_RATE, INTERACTION_SENT
from service.queue import DatabaseRetry
from service.rules.engine import history_window
from service.stats import HEALTH_WINDOW, interaction_rate
from service.store import DATABASE_ERRORS
from service.waiting import wait_any

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 60.0
HEALTH_INTERVAL_S = 300.0
# Per pass at most ROLLUP_BATCHES transactions of ROLLUP_BATCH deliveries (and as many
# suppressions) each: a backlog (the first pass after an upgrade) is worked off over several
# minutes, never in one long transaction.
ROLLUP_BATCH = 5000
ROLLUP_BATCHES = 12


@dataclass(frozen=True)
class RollUp:
    """What one roll-up pass deleted (and counted into the daily tables)."""

    deliveries: int = 0
    events: int = 0
    suppressions: int = 0
    # Another process held the roll-up's lock for one of the batches: it does that work.
    busy: bool = False


@dataclass(frozen=True)
class Pass:
    """What one maintenance pass deleted."""

    signals: int
    shadow_sends: int
    rollup: RollUp | None  # None: no rule set is loaded, so the roll-up waited


async def purge_signals(ctx: Context) -> int:
    """Delete processed signals older than SIGNAL_RETENTION; return how many went."""
    return await ctx.store.purge_signals(older_than=ctx.settings.signal_retention)


async def purge_shadow_sends(ctx: Context) -> int:
    """Delete shadow rules' would-be sends older than SIGNAL_RETENTION; return how many went."""
    return await ctx.store.purge_shadow_sends(older_than=ctx.settings.signal_retention)


def delivery_retention(ctx: Context) -> timedelta | None:
    """How old a delivery must be to be rolled up: DELIVERY_RETENTION, but never within what
    the loaded rules' caps, gaps and cooldowns look back at (a rolled-up push no longer counts
    against them), with the worker's day of slack. None while no rule set is loaded."""
    holder = ctx.rules
    ruleset = holder.current if holder is not None else None
    if ruleset is None:
        return None
    return max(ctx.settings.delivery_retention, history_window(ruleset) + timedelta(days=1))


async def roll_up(
    ctx: Context, *, batch_size: int = ROLLUP_BATCH, max_batches: int = ROLLUP_BATCHES
) -> RollUp:
    """Roll up whole UTC days older than :func:`delivery_retention`, at most ``max_batches``
    batches of ``batch_size`` rows; stops early when nothing is left or another process is
    rolling up."""
    retention = delivery_retention(ctx)
    if retention is None:
        return RollUp()
    before = await ctx.store.rollup_cutoff(older_than=retention)
    deliveries = events = suppressions = 0
    for _ in range(max_batches):
        batch = await ctx.store.roll_up_batch(before=before, limit=batch_size)
        if batch is None:
            return RollUp(deliveries, events, suppressions, busy=True)
        deliveries += batch.deliveries
        events += batch.events
        suppressions += batch.suppressions
        if batch.deliveries < batch_size and batch.suppressions < batch_size:
            break
    return RollUp(deliveries, events, suppressions)


async def run_once(ctx: Context) -> Pass:
    """One maintenance pass."""
    signals = await purge_signals(ctx)
    if signals:
        log.info("retention: deleted %d processed signals", signals)
    shadow = await purge_shadow_sends(ctx)
    if shadow:
        log.info("retention: deleted %d shadow sends", shadow)
    rollup: RollUp | None = None
    if delivery_retention(ctx) is not None:
        rollup = await roll_up(ctx)
        if rollup.deliveries or rollup.suppressions:
            log.info(
                "retention: rolled up %d deliveries, %d events and %d campaign suppressions "
                "into daily counts",
                rollup.deliveries,
                rollup.events,
                rollup.suppressions,
            )
    return Pass(signals, shadow, rollup)


async def refresh_health(ctx: Context) -> float:
    """Set momentcast_interaction_rate (and the pushes it is over) from the last week's
    sent pushes; returns the rate."""
    h = await ctx.store.health(HEALTH_WINDOW, fatigue=False)
    sent = sum(r.sent for r in h.rules)
    rate = interaction_rate(sum(r.interacted for r in h.rules), sent)
    INTERACTION_SENT.set(sent)
    INTERACTION_RATE.set(rate)
    return rate


async def run(ctx: Context, stop: asyncio.Event) -> None:
    # A database that is away is one warning line and a sooner retry, not a traceback a pass.
    retry = DatabaseRetry("maintenance", log, first_s=5.0, cap_s=RETENTION_INTERVAL_S)
    health_at = -math.inf
    while not stop.is_set():
        wait = RETENTION_INTERVAL_S
        try:
            await run_once(ctx)
            if time.monotonic() - health_at >= HEALTH_INTERVAL_S:
                await refresh_health(ctx)
                health_at = time.monotonic()
        except DATABASE_ERRORS as exc:
            wait = retry.failed(exc)
        except Exception:
            log.exception("retention pass failed; retrying")
        else:
            retry.succeeded()
        await wait_any(stop, seconds=wait)
