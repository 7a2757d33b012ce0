"""The worker: claims stored signals and turns them into push decisions, exactly once.

Per batch: claim signals (lease), lock their subscribers (SKIP LOCKED), load every pending
signal, presence and recent decisions of the locked subscribers, let the pure engine decide,
then in the same transaction store presence, deliveries (dedupe key), counters and mark the
signals processed. A crash anywhere rolls the transaction back; the lease then lets another
worker take the signals again, and the dedupe key keeps a decision from being made twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from service.context import Context
from service.metrics import REGISTRY
from service.queue import DELIVERIES_CHANNEL, SIGNALS_CHANNEL
from service.rules.engine import (
    Outcome,
    Presence,
    Profile,
    Sent,
    Signal,
    SubscriberState,
    choose_variant,
    decide,
    history_window,
)
from service.rules.ruleset import Ruleset
from service.store.db import q

log = logging.getLogger(__name__)

SIGNALS_PROCESSED = PromCounter(
    "momentcast_signals_processed_total", "Signals evaluated by workers", registry=REGISTRY
)
DECISIONS = PromCounter(
    "momentcast_decisions_total", "Pushes decided, by rule", ["rule"], registry=REGISTRY
)
SUPPRESSIONS = PromCounter(
    "momentcast_suppressions_total",
    "Matches not sent, by rule and reason",
    ["rule", "reason"],
    registry=REGISTRY,
)
PROCESSING_LAG = Gauge(
    "momentcast_processing_lag_seconds",
    "Age of the oldest unprocessed signal",
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "momentcast_worker_batch_seconds",
    "Time to process one claimed batch",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WORKER_ERRORS = PromCounter(
    "momentcast_worker_errors_total", "Batches that failed and were retried", registry=REGISTRY
)

Clock = Callable[[], datetime]

LAG_INTERVAL_S = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class BatchResult:
    signals: int = 0
    decisions: int = 0
    skipped_subscribers: int = 0


def _profile(row: asyncpg.Record) -> Profile:
    return Profile(
        id=str(row["id"]),
        timezone=row["timezone"],
        locale=row["locale"],
        topics=frozenset(row["topics"] or ()),
        attributes=row["attributes"] or {},
        paused=row["paused"],
        gone=row["status"] == "gone",
    )


def _signal(row: asyncpg.Record) -> Signal:
    return Signal(
        subscription_id=str(row["subscription_id"]),
        lat=row["lat"],
        lon=row["lon"],
        at=row["at"],
        accuracy_m=row["accuracy_m"],
        speed_mps=row["speed_mps"],
        moment=row["moment"],
        context=row["context"] or {},
        id=row["id"],
    )


def _local_hour(outcome: Outcome) -> int | None:
    if outcome.local_offset_s is None:
        return None
    return (outcome.signal.at + timedelta(seconds=outcome.local_offset_s)).hour


def _counter_rows(ruleset: Ruleset, outcomes: Iterable[Outcome]) -> list[tuple[str, str, str, int]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for outcome in outcomes:
        sub = outcome.signal.subscription_id
        for match in outcome.fired:
            variant = choose_variant(sub, match.rule).name
            counts[(match.rule.id, variant, "matched")] += 1
        for s in outcome.suppressed:
            rule = ruleset.rule_by_id.get(s.rule_id)
            variant = choose_variant(sub, rule).name if rule else ""
            counts[(s.rule_id, variant, "suppressed:" + s.reason)] += 1
    return sorted((r, v, c, n) for (r, v, c), n in counts.items())


class Worker:
    """One worker loop. ``clock`` is injectable so tests control staleness without sleeping."""

    def __init__(self, ctx: Context, *, clock: Clock = utcnow) -> None:
        self.ctx = ctx
        self.clock = clock
        self.batch_size = ctx.settings.worker_batch_size
        self.lease = ctx.settings.worker_lease

    def _ruleset(self) -> Ruleset | None:
        holder = self.ctx.rules
        return holder.current if holder is not None else None

    async def run_once(self) -> BatchResult:
        """Claim and process one batch; an empty result means the queue was empty."""
        ruleset = self._ruleset()
        if ruleset is None:
            return BatchResult()
        started = time.perf_counter()
        pool = self.ctx.pool
        rows = await pool.fetch(q("claim_signals"), self.batch_size, self.lease)
        if not rows:
            return BatchResult()
        subscribers = sorted({r["subscription_id"] for r in rows})
        async with pool.acquire() as conn, conn.transaction():
            result = await self._process(conn, ruleset, subscribers)
        if result.decisions:
            await pool.execute(f"NOTIFY {DELIVERIES_CHANNEL}")
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return result

    async def _process(
        self, conn: asyncpg.Connection, ruleset: Ruleset, subscribers: Sequence[Any]
    ) -> BatchResult:
        locked = await conn.fetch(q("lock_subscriptions"), subscribers)
        locked_ids = [r["id"] for r in locked]
        skipped = sorted(set(subscribers) - set(locked_ids))
        if skipped:
            # Another worker holds them and will process their pending signals; let our
            # claims go so nothing waits for our lease to run out.
            await conn.execute(q("release_claims"), skipped)
        if not locked_ids:
            return BatchResult(skipped_subscribers=len(skipped))
        now = self.clock()
        signal_rows = await conn.fetch(q("pending_signals_of"), locked_ids)
        states = await self._load_states(conn, ruleset, locked, now)
        profiles = {str(r["id"]): _profile(r) for r in locked}
        signals = [_signal(r) for r in signal_rows]
        outcomes = decide(ruleset, signals, profiles, states, now)
        decisions = await self._store(conn, ruleset, locked_ids, states, outcomes)
        await conn.execute(q("mark_processed"), [s.id for s in signals])
        SIGNALS_PROCESSED.inc(len(signals))
        return BatchResult(len(signals), decisions, len(skipped))

    async def _load_states(
        self,
        conn: asyncpg.Connection,
        ruleset: Ruleset,
        locked: Sequence[asyncpg.Record],
        now: datetime,
    ) -> dict[str, SubscriberState]:
        ids = [r["id"] for r in locked]
        states = {
            str(r["id"]): SubscriberState(str(r["id"]), last_signal_at=r["last_signal_at"])
            for r in locked
        }
        for row in await conn.fetch(q("presence_of"), ids):
            state = states[str(row["subscription_id"])]
            state.presence[(row["rule_id"], row["place_id"])] = Presence(
                entered_at=row["entered_at"], dwell_fired=row["dwell_fired"]
            )
        # Decisions are timed by their signals, which may lag the wall clock by the queue's
        # backlog (signals are accepted up to 24 h old): look back a day further.
        since = now - history_window(ruleset) - timedelta(days=1)
        for row in await conn.fetch(q("history_of"), ids, since):
            states[str(row["subscription_id"])].history.append(
                Sent(row["rule_id"], row["place_id"] or "", row["decided_at"])
            )
        return states

    async def _store(
        self,
        conn: asyncpg.Connection,
        ruleset: Ruleset,
        ids: Sequence[Any],
        states: dict[str, SubscriberState],
        outcomes: Sequence[Outcome],
    ) -> int:
        await conn.execute(q("delete_presence_of"), ids)
        p_sub, p_rule, p_place, p_entered, p_dwell = [], [], [], [], []
        for sub_id, state in states.items():
            for (rule_id, place_id), presence in state.presence.items():
                p_sub.append(sub_id)
                p_rule.append(rule_id)
                p_place.append(place_id)
                p_entered.append(presence.entered_at)
                p_dwell.append(presence.dwell_fired)
        if p_sub:
            await conn.execute(q("insert_presence"), p_sub, p_rule, p_place, p_entered, p_dwell)
        last = [(sid, s.last_signal_at) for sid, s in states.items() if s.last_signal_at]
        if last:
            await conn.execute(
                q("set_last_signal_at"), [sid for sid, _ in last], [at for _, at in last]
            )
        cols: list[list[Any]] = [[] for _ in range(13)]
        for outcome in outcomes:
            d = outcome.decision
            if d is None:
                continue
            row = (
                outcome.signal.subscription_id,
                outcome.signal.id,
                d.rule_id,
                d.variant,
                d.place_id,
                d.dedupe_key,
                d.payload,
                d.distance_m,
                _local_hour(outcome),
                max(d.ttl_s, 1),
                d.urgency,
                d.topic,
                outcome.signal.at,
            )
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        inserted = 0
        if cols[0]:
            inserted = len(await conn.fetch(q("insert_deliveries"), *cols))
            for rule_id in cols[2]:
                DECISIONS.labels(rule_id).inc()
        counters = _counter_rows(ruleset, outcomes)
        if counters:
            await conn.execute(q("bump_counters"), *map(list, zip(*counters, strict=True)))
            for rule_id, _variant, counter, n in counters:
                if counter.startswith("suppressed:"):
                    SUPPRESSIONS.labels(rule_id, counter.removeprefix("suppressed:")).inc(n)
        return inserted

    async def drain(self) -> int:
        """Process until the queue is empty; returns the number of signals processed."""
        total = 0
        while True:
            result = await self.run_once()
            if result.signals == 0 and result.skipped_subscribers == 0:
                return total
            total += result.signals


async def _update_lag(ctx: Context) -> None:
    PROCESSING_LAG.set(await ctx.pool.fetchval(q("processing_lag")))


async def run(ctx: Context, stop: asyncio.Event) -> None:
    """Process batches until ``stop``; wake on NOTIFY, poll as a fallback."""
    wake = asyncio.Event()

    def on_notify(*_: object) -> None:
        wake.set()

    loops = max(1, ctx.settings.workers)
    listener: asyncpg.Connection | None = None
    with contextlib.suppress(Exception):
        listener = await ctx.pool.acquire()
        await listener.add_listener(SIGNALS_CHANNEL, on_notify)

    async def loop() -> None:
        worker = Worker(ctx)
        poll = ctx.settings.worker_poll_interval.total_seconds()
        lag_checked = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - lag_checked > LAG_INTERVAL_S:
                    # Measured under load too: a backlog is exactly when the lag matters.
                    lag_checked = time.monotonic()
                    await _update_lag(ctx)
                result = await worker.run_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The database went away or a batch failed: nothing was committed, the
                # lease hands the signals back. Retry after a pause.
                WORKER_ERRORS.inc()
                log.warning("worker batch failed (%s); retrying", type(exc).__name__)
                await _sleep_or_stop(stop, poll)
                continue
            if result.signals or result.skipped_subscribers:
                continue
            wake.clear()
            await _wait_any(stop, wake, poll)

    try:
        await asyncio.gather(*(loop() for _ in range(loops)))
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.remove_listener(SIGNALS_CHANNEL, on_notify)
            await ctx.pool.release(listener)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()
