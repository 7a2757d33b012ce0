"""The worker: claims stored signals and turns them into push decisions, exactly once.

Per batch: claim signals (lease), then in one transaction lock their subscribers (SKIP
LOCKED), load every pending signal, presence and recent decisions of the locked ones in one
statement, let the pure engine decide, and store presence, deliveries (dedupe key), counters
and the signals' processed marks in one more. A crash anywhere rolls the transaction back;
the lease then lets another worker take the signals again, and the dedupe key keeps a
decision from being made twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from service.context import Context
from service.metrics import REGISTRY, SIGNALS_STALE
from service.queue import DELIVERIES_CHANNEL, SIGNALS_CHANNEL, DatabaseRetry, Listener
from service.rows import profile_of, signal_of
from service.rules.adaptive import WINDOW, Posteriors, adaptive_rules
from service.rules.engine import (
    Outcome,
    Presence,
    Profile,
    Sent,
    SubscriberState,
    chosen_variant,
    decide,
    history_window,
    rule_variant,
)
from service.rules.ruleset import Ruleset
from service.store import DATABASE_ERRORS, Store
from service.store.batch import BatchWrites, LockedSubscriber
from service.store.signals import (
    CounterRow,
    DeliveryRow,
    PendingSignal,
    PresenceRow,
    SentRow,
    SignalFailure,
)
from service.vocabulary import (
    NOT_MATCHED_COUNTER_PREFIX,
    SHADOW_SENT_COUNTER,
    SILENT_COUNTER_PREFIX,
)
from service.waiting import linger_until, wait_any

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
EVALUATION_FAILURES = PromCounter(
    "momentcast_signal_evaluation_failures_total",
    "Signals whose evaluation raised (each attempt)",
    registry=REGISTRY,
)
SIGNALS_QUARANTINED = PromCounter(
    "momentcast_signals_quarantined_total",
    "ALARM: signals set aside after failing evaluation QUARANTINE_AFTER times",
    registry=REGISTRY,
)

Clock = Callable[[], datetime]

LAG_INTERVAL_S = 5.0
# The longest pause between two tries while the database fails (the first is 0.25 s).
RETRY_CAP_S = 5.0
# Failed evaluations after which a signal is quarantined instead of tried again.
QUARANTINE_AFTER = 3
# How long a worker draws adaptive rules' variants from the counts it read (see _posteriors),
# and at most the share of its time the reading may take: a read of 2 s waits 200 s.
POSTERIOR_REFRESH = timedelta(seconds=30)
POSTERIOR_READ_SHARE = 0.01


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class BatchResult:
    signals: int = 0
    decisions: int = 0
    skipped_subscribers: int = 0


@dataclass(frozen=True)
class _Failure:
    signal_id: int
    subscription_id: str
    reason: str


def _isolate(
    ruleset: Ruleset,
    pending: Sequence[PendingSignal],
    profiles: Mapping[str, Profile],
    states: dict[str, SubscriberState],
    now: datetime,
    posteriors: Posteriors | None = None,
) -> tuple[list[Outcome], list[_Failure]]:
    """Decide ``pending`` one signal at a time, in order, so that a signal the engine cannot
    evaluate is found and skipped; each subscriber's state moves on only with its signals
    that were decided. Slow, and only run after a batch's evaluation raised."""
    outcomes: list[Outcome] = []
    failures: list[_Failure] = []
    for row in pending:
        sid = row.subscription_id
        trial = {sid: copy.deepcopy(states[sid])}
        try:
            outcomes += decide(
                ruleset, [signal_of(row)], profiles, trial, now, posteriors=posteriors
            )
        except Exception as exc:
            failures.append(_Failure(row.id, sid, f"{type(exc).__name__}: {exc}"[:500]))
            continue
        states[sid] = trial[sid]
    return outcomes, failures


def _states(
    locked: Sequence[LockedSubscriber], shadow: Iterable[SentRow]
) -> dict[str, SubscriberState]:
    """Each locked subscriber's state as loaded; built afresh when a failed batch is isolated
    (decide moves states on in place)."""
    states = {}
    for held in locked:
        sub = held.subscriber
        state = SubscriberState(sub.id, last_signal_at=sub.last_signal_at)
        for row in held.presence:
            state.presence[(row.rule_id, row.place_id)] = Presence(
                entered_at=row.entered_at, dwell_fired=row.dwell_fired
            )
        state.history = [Sent(h.rule_id, h.place_id, h.decided_at) for h in held.history]
        states[sub.id] = state
    for sent in shadow:
        states[sent.subscription_id].shadow_history.append(
            Sent(sent.rule_id, sent.place_id, sent.decided_at)
        )
    return states


def _presence_rows(states: dict[str, SubscriberState]) -> list[PresenceRow]:
    return [
        PresenceRow(sub_id, rule_id, place_id, presence.entered_at, presence.dwell_fired)
        for sub_id, state in states.items()
        for (rule_id, place_id), presence in state.presence.items()
    ]


def _delivery_rows(outcomes: Iterable[Outcome]) -> list[DeliveryRow]:
    rows = []
    for outcome in outcomes:
        d = outcome.decision
        if d is None:
            continue
        signal = outcome.signal
        assert isinstance(signal.id, int)  # the worker's signals are stored ones
        rows.append(
            DeliveryRow(
                subscription_id=signal.subscription_id,
                signal_id=signal.id,
                rule_id=d.rule_id,
                variant=d.variant,
                place_id=d.place_id or None,  # a rule without places has none
                dedupe_key=d.dedupe_key,
                payload=d.payload,
                distance_m=d.distance_m,
                local_hour=_local_hour(outcome),
                ttl_s=max(d.ttl_s, 1),
                urgency=d.urgency,
                topic=d.topic,
                decided_at=signal.at,
            )
        )
    return rows


def _has_shadow(ruleset: Ruleset) -> bool:
    return any(rule.model.mode == "shadow" for rule in ruleset.rules)


def _shadow_rows(outcomes: Iterable[Outcome]) -> list[SentRow]:
    """What shadow rules would have sent: never a delivery, only their own limits' history."""
    return [
        SentRow(o.signal.subscription_id, m.rule.id, m.place_id, o.signal.at)
        for o in outcomes
        for m in o.shadow
    ]


def _local_hour(outcome: Outcome) -> int | None:
    if outcome.local_offset_s is None:
        return None
    return (outcome.signal.at + timedelta(seconds=outcome.local_offset_s)).hour


def _counter_rows(
    ruleset: Ruleset,
    outcomes: Iterable[Outcome],
    not_matched: Mapping[tuple[str, str], int] | None = None,
) -> list[CounterRow]:
    counts: Counter[tuple[str, str, str]] = Counter()
    # Per rule, not per variant: a signal that did not match was shown no variant.
    for (rule_id, reason), n in (not_matched or {}).items():
        counts[(rule_id, "", NOT_MATCHED_COUNTER_PREFIX + reason)] += n
    for outcome in outcomes:
        sub = outcome.signal.subscription_id
        # Each match's variant: an adaptive rule's was drawn for it, and its suppression
        # counts against the same one.
        picked = {(m.rule.id, m.place_id): chosen_variant(sub, m).name for m in outcome.fired}
        for match in outcome.fired:
            counts[(match.rule.id, picked[(match.rule.id, match.place_id)], "matched")] += 1
        for match in outcome.shadow:  # a shadow rule's would-be send: counted, never sent
            variant = chosen_variant(sub, match).name
            counts[(match.rule.id, variant, SHADOW_SENT_COUNTER)] += 1
        for s in outcome.suppressed:
            rule = ruleset.rule_by_id.get(s.rule_id)
            variant = picked.get((s.rule_id, s.place_id)) or (
                rule_variant(sub, rule).name if rule else ""
            )
            counts[(s.rule_id, variant, "suppressed:" + s.reason)] += 1
        # Matched and silent: per rule, like not_matched (no variant was shown).
        silent = SILENT_COUNTER_PREFIX + ("stale" if outcome.stale else "not_triggered")
        for rule_id, _ in outcome.silent:
            counts[(rule_id, "", silent)] += 1
    # Sorted: concurrent workers then lock counter rows in one order (no deadlock).
    return [CounterRow(r, v, c, n) for (r, v, c), n in sorted(counts.items())]


@dataclass(frozen=True)
class _Counts:
    """The adaptive rules' counts a worker read, for which rules and when."""

    rules: tuple[str, ...]
    read_at: datetime
    counts: dict[tuple[str, str], tuple[int, int]]
    valid_for: timedelta


class Worker:
    """One worker loop. ``clock`` is injectable so tests control staleness without sleeping;
    ``rng`` draws adaptive rules' variants (a seeded one makes them reproducible), from counts
    read at most once per batch and ``posterior_refresh``."""

    def __init__(
        self,
        ctx: Context,
        *,
        clock: Clock = utcnow,
        rng: np.random.Generator | None = None,
        posterior_refresh: timedelta = POSTERIOR_REFRESH,
    ) -> None:
        self.ctx = ctx
        self.clock = clock
        self.batch_size = ctx.settings.worker_batch_size
        self.lease = ctx.settings.worker_lease
        self.rng = rng if rng is not None else np.random.default_rng()
        self.posterior_refresh = posterior_refresh
        self._counts: _Counts | None = None

    def _ruleset(self) -> Ruleset | None:
        holder = self.ctx.rules
        return holder.current if holder is not None else None

    async def run_once(self) -> BatchResult:
        """Claim and process one batch; an empty result means the queue was empty."""
        ruleset = self._ruleset()
        if ruleset is None:
            return BatchResult()
        started = time.perf_counter()
        store = self.ctx.store
        subscribers = await store.claim_signals(limit=self.batch_size, lease=self.lease)
        if not subscribers:
            return BatchResult()
        # Before the batch's transaction: no subscriber waits for its lock while it is read.
        posteriors = await self._posteriors(store, ruleset, self.clock())
        async with store.transaction() as tx:
            result = await self._process(tx, ruleset, subscribers, posteriors)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return result

    async def _process(
        self,
        tx: Store,
        ruleset: Ruleset,
        subscribers: list[str],
        posteriors: Posteriors | None = None,
    ) -> BatchResult:
        now = self.clock()
        # Decisions are timed by their signals, which may lag the wall clock by the queue's
        # backlog (signals are accepted up to 24 h old): look back a day further.
        since = now - history_window(ruleset) - timedelta(days=1)
        locked = await tx.load_batch(subscription_ids=subscribers, since=since)
        ids = [held.subscriber.id for held in locked]
        skipped = sorted(set(subscribers) - set(ids))
        if skipped:
            # Another worker holds them and will process their pending signals; let our
            # claims go so nothing waits for our lease to run out.
            await tx.release_claims(subscription_ids=skipped)
        if not ids:
            return BatchResult(skipped_subscribers=len(skipped))
        shadow = (
            await tx.shadow_history(subscription_ids=ids, since=since)
            if _has_shadow(ruleset)
            else []
        )
        pending = [row for held in locked for row in held.pending]
        states = _states(locked, shadow)
        profiles = {held.subscriber.id: profile_of(held.subscriber) for held in locked}
        not_matched: Counter[tuple[str, str]] = Counter()
        try:
            outcomes = decide(
                ruleset,
                [signal_of(row) for row in pending],
                profiles,
                states,
                now,
                not_matched=not_matched,
                posteriors=posteriors,
            )
        except Exception as exc:
            # One signal the engine cannot evaluate must neither stop the others of its batch
            # nor crash-loop the worker on the queue head: find it, decide the rest.
            log.warning("worker: a batch's evaluation raised %s; isolating", type(exc).__name__)
            states = _states(locked, shadow)  # decide changed them
            not_matched.clear()  # such a batch counts no not_matched: it is rare
            outcomes, failures = _isolate(ruleset, pending, profiles, states, now, posteriors)
            held = await self._record_failures(tx, failures)
            if held:
                # A failure not yet quarantined: its subscriber waits for the next try, so
                # its signals are applied in order once the failing one is decided or set aside.
                await tx.release_claims(subscription_ids=sorted(held))
                ids = [i for i in ids if i not in held]
                states = {sid: st for sid, st in states.items() if sid not in held}
                outcomes = [o for o in outcomes if o.signal.subscription_id not in held]
            failed = {f.signal_id for f in failures}
            pending = [p for p in pending if p.subscription_id not in held and p.id not in failed]
        decisions = await self._store(tx, ruleset, ids, states, outcomes, pending, not_matched)
        SIGNALS_PROCESSED.inc(len(pending))
        return BatchResult(len(pending), decisions, len(skipped))

    async def _posteriors(self, store: Store, ruleset: Ruleset, now: datetime) -> Posteriors | None:
        """The adaptive rules' sent and interacted counts of the last 30 days, for the whole
        batch: read once per batch at most, and again only after ``posterior_refresh`` (or
        100 times as long as the last read took, if longer) or when the rule set's adaptive
        rules changed. A batch can come every few milliseconds, and the count walks 30 days
        of pushes (0.5 s for 150000): drawing a batch's, or many batches', variants from one
        reading is batched Thompson sampling, which loses nothing measurable over a 30-day
        window. ``posterior_refresh`` 0 reads for every batch (tests). None when no rule is
        adaptive: nothing is read."""
        rules = tuple(r.id for r in adaptive_rules(ruleset))
        if not rules:
            return None
        cached = self._counts
        if (
            cached is None
            or cached.rules != rules
            or not (timedelta(0) <= now - cached.read_at < cached.valid_for)
        ):
            started = time.perf_counter()
            rows = await store.variant_counts(rule_ids=rules, since=now - WINDOW)
            took = timedelta(seconds=time.perf_counter() - started)
            wait = self.posterior_refresh
            if wait > timedelta(0):
                wait = max(wait, took / POSTERIOR_READ_SHARE)
            counts = {(r.rule_id, r.variant): (r.sent, r.interacted) for r in rows}
            cached = self._counts = _Counts(rules, now, counts, wait)
        return Posteriors(cached.counts, self.rng)

    async def _record_failures(self, tx: Store, failures: list[_Failure]) -> set[str]:
        """Count the failures; return the subscribers held back by one not yet quarantined."""
        EVALUATION_FAILURES.inc(len(failures))
        owner = {f.signal_id: f.subscription_id for f in failures}
        held: set[str] = set()
        recorded = await tx.record_signal_failures(
            failures=[SignalFailure(f.signal_id, f.reason) for f in failures],
            quarantine_after=QUARANTINE_AFTER,
        )
        for r in recorded:
            if r.quarantined:
                SIGNALS_QUARANTINED.inc()
                # The signal's id only: its location and its subscriber stay out of the logs.
                log.error(
                    "worker: signal %d quarantined after %d failed evaluations; see "
                    "signals.quarantine_reason (docs/operations.md, Quarantine)",
                    r.signal_id,
                    r.attempts,
                )
            else:
                held.add(owner[r.signal_id])
        return held

    async def _store(
        self,
        tx: Store,
        ruleset: Ruleset,
        ids: list[str],
        states: dict[str, SubscriberState],
        outcomes: Sequence[Outcome],
        pending: Sequence[PendingSignal],
        not_matched: Mapping[tuple[str, str], int] | None = None,
    ) -> int:
        counters = _counter_rows(ruleset, outcomes, not_matched)
        writes = BatchWrites(
            subscription_ids=ids,
            presence=_presence_rows(states),
            last_signal_at={sid: s.last_signal_at for sid, s in states.items() if s.last_signal_at},
            processed=[row.id for row in pending],
            counters=counters,
            deliveries=_delivery_rows(outcomes),
            stale=sum(o.stale for o in outcomes),
        )
        inserted = await tx.store_batch(writes, notify=DELIVERIES_CHANNEL)
        SIGNALS_STALE.inc(writes.stale)
        # Rows actually inserted: a batch run again after a crash decides nothing new.
        for rule_id in inserted:
            DECISIONS.labels(rule_id).inc()
        if _has_shadow(ruleset):
            # Shadow rules' would-be sends pace their own limits in later batches.
            await tx.record_shadow_sends(
                subscription_ids=ids,
                rows=_shadow_rows(outcomes),
                before=self.clock() - history_window(ruleset) - timedelta(days=1),
            )
        for c in counters:
            if c.counter.startswith("suppressed:"):
                SUPPRESSIONS.labels(c.rule_id, c.counter.removeprefix("suppressed:")).inc(c.n)
        return len(inserted)

    async def drain(self) -> int:
        """Process until the queue is empty; returns the number of signals processed."""
        total = 0
        while True:
            result = await self.run_once()
            if result.signals == 0 and result.skipped_subscribers == 0:
                return total
            total += result.signals


async def run(ctx: Context, stop: asyncio.Event) -> None:
    """Process batches until ``stop``; wake on NOTIFY, poll as a fallback."""
    wake = asyncio.Event()
    listening = asyncio.create_task(
        Listener(ctx.store, SIGNALS_CHANNEL, wake).run(stop), name="worker-listen"
    )
    poll = ctx.settings.worker_poll_interval.total_seconds()
    linger = ctx.settings.batch_linger_ms / 1000
    retry = DatabaseRetry("worker", log, cap_s=max(RETRY_CAP_S, poll))

    async def loop() -> None:
        worker = Worker(ctx)
        lag_checked = 0.0
        next_claim = 0.0
        while not stop.is_set():
            # Coalescing: after a batch that was not full, the next claim waits until
            # BATCH_LINGER_MS after the last one began, so the signals committed meanwhile
            # (one NOTIFY each at moderate rates) share one batch: a batch's round trips and
            # wake-ups are paid per batch, not per signal. A full batch claims again at once.
            if await linger_until(next_claim, stop):
                return
            try:
                if time.monotonic() - lag_checked > LAG_INTERVAL_S:
                    # Measured under load too: a backlog is exactly when the lag matters.
                    lag_checked = time.monotonic()
                    PROCESSING_LAG.set(await ctx.store.processing_lag())
                # Cleared before the claim, not after an empty one: a NOTIFY that comes while
                # the claim runs is then not lost, and the wait below returns at once.
                wake.clear()
                claimed = time.monotonic()
                result = await worker.run_once()
            except DATABASE_ERRORS as exc:
                # The database went away, a connection broke or went silent, or a batch
                # failed: nothing was committed, the lease hands the signals back.
                WORKER_ERRORS.inc()
                await retry.pause(exc, stop)
                continue
            retry.succeeded()
            if result.signals < worker.batch_size:
                next_claim = claimed + linger
            if result.signals or result.skipped_subscribers:
                continue
            await wait_any(stop, wake, seconds=poll)

    try:
        await asyncio.gather(*(loop() for _ in range(max(1, ctx.settings.workers))))
    finally:
        # Ends by itself once ``stop`` is set; a loop that failed leaves it to cancel.
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
