"""The worker's batch: one statement to lock and read it, one to write what was decided.

Round trips, not rows, are what a batch costs at low rates (a batch of one signal each 20 ms
at 50 signals/s): a statement per table made 14 round trips a batch; reading in one statement
after the lock and writing in one make it six with the claim, BEGIN and COMMIT.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from service.store.base import Row
from service.store.signals import (
    CounterRow,
    DeliveryRow,
    PendingSignal,
    PresenceRow,
    SentRow,
    SignalQueries,
    Subscriber,
)


@dataclass(frozen=True, slots=True)
class LockedSubscriber:
    """A subscriber this transaction holds, with what its batch is decided from."""

    subscriber: Subscriber
    pending: tuple[PendingSignal, ...]  # by time, then id
    presence: tuple[PresenceRow, ...]
    history: tuple[SentRow, ...]  # oldest first


@dataclass(frozen=True, slots=True)
class BatchWrites:
    """Everything one batch decided, written by :meth:`BatchQueries.store_batch`."""

    subscription_ids: Sequence[str]  # whose presence becomes exactly ``presence``
    presence: Sequence[PresenceRow]
    last_signal_at: Mapping[str, datetime]
    processed: Sequence[int]  # signal ids
    counters: Sequence[CounterRow]  # sorted by key (the lock order of counter rows)
    deliveries: Sequence[DeliveryRow]
    stale: int = 0  # signals judged stale: added to the running totals of /v1/stats


@dataclass(frozen=True, slots=True)
class VariantCount(Row):
    """A rule variant's pushes sent since a time, and how many of them got an interaction (a
    clicked or converted event): what adaptive allocation and prob_best decide from."""

    rule_id: str
    variant: str
    sent: int
    interacted: int


def _context(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


class BatchQueries(SignalQueries):
    async def load_batch(
        self, *, subscription_ids: Sequence[str], since: datetime
    ) -> list[LockedSubscriber]:
        """Lock those of ``subscription_ids`` no other transaction holds, until this
        transaction ends, and read their pending signals, presence and decisions after
        ``since``; by subscriber id."""
        subscribers = await self.lock_subscriptions(ids=subscription_ids)
        if not subscribers:
            return []
        rows = await self._fetch("batch_of", [sub.id for sub in subscribers], since)
        locked = []
        for sub, row in zip(subscribers, rows, strict=True):
            sid = sub.id
            locked.append(
                LockedSubscriber(
                    subscriber=replace(
                        sub,
                        resting_since=row["resting_since"],
                        resting_until=row["resting_until"],
                    ),
                    pending=tuple(
                        PendingSignal(i, sid, at, lat, lon, acc, speed, moment, _context(ctx))
                        for i, at, lat, lon, acc, speed, moment, ctx in row["pending"]
                    ),
                    presence=tuple(
                        PresenceRow(sid, rule, place, entered, fired)
                        for rule, place, entered, fired in row["presence"]
                    ),
                    history=tuple(
                        SentRow(sid, rule, place or "", at) for rule, place, at in row["history"]
                    ),
                )
            )
        return locked

    async def store_batch(self, writes: BatchWrites, *, notify: str) -> list[str]:
        """Write a batch's decisions; return the rule of each delivery that was new (a batch
        run twice inserts nothing the second time). ``notify`` is the channel told, at
        COMMIT, that there are new deliveries."""
        p, c, d = writes.presence, writes.counters, writes.deliveries
        rows = await self._fetch(
            "store_batch",
            [r.subscription_id for r in p],
            [r.rule_id for r in p],
            [r.place_id for r in p],
            [r.entered_at for r in p],
            [r.dwell_fired for r in p],
            writes.subscription_ids,
            list(writes.last_signal_at),
            list(writes.last_signal_at.values()),
            writes.processed,
            [r.rule_id for r in c],
            [r.variant for r in c],
            [r.counter for r in c],
            [r.n for r in c],
            [r.subscription_id for r in d],
            [r.signal_id for r in d],
            [r.rule_id for r in d],
            [r.variant for r in d],
            [r.place_id for r in d],
            [r.dedupe_key for r in d],
            [r.payload for r in d],
            [r.distance_m for r in d],
            [r.local_hour for r in d],
            [r.ttl_s for r in d],
            [r.urgency for r in d],
            [r.topic for r in d],
            [r.decided_at for r in d],
            notify,
            writes.stale,
        )
        return [row["rule_id"] for row in rows]

    async def variant_counts(
        self, *, rule_ids: Sequence[str], since: datetime
    ) -> list[VariantCount]:
        """Per (rule, variant) of ``rule_ids``: the pushes sent since ``since`` and those of
        them with an interaction, rolled-up days included (by whole UTC days)."""
        # Its own read-only transaction, for SET LOCAL: no lock of a batch is held meanwhile.
        async with self.transaction(readonly=True) as tx:
            await tx._execute("variant_counts_without_jit")
            rows = await tx._fetch("variant_counts", list(rule_ids), since)
        return [VariantCount.from_row(r) for r in rows]
