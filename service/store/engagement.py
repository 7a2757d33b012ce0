"""Queries of engagement: recorded events, the counts behind /v1/stats and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import asyncpg

from service.store.base import StoreBase


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """Deliveries of one rule variant by final status."""

    rule_id: str
    variant: str
    sent: int
    failed: int
    gone: int
    expired: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(**dict(row))


@dataclass(frozen=True, slots=True)
class EventCount:
    """How many deliveries of one rule variant got one event type."""

    rule_id: str
    variant: str
    type: str
    n: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(**dict(row))


@dataclass(frozen=True, slots=True)
class RuleCounter:
    """One of the engine's counters of a rule variant (``matched``, ``suppressed:<reason>``)."""

    rule_id: str
    variant: str
    counter: str
    n: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(**dict(row))


@dataclass(frozen=True, slots=True)
class EngagementCounts:
    """Every count of the funnels, read in one snapshot so the stages agree."""

    deliveries: list[DeliveryCounts]
    events: list[EventCount]
    counters: list[RuleCounter]


@dataclass(frozen=True, slots=True)
class HourlyDecisions:
    """Deliveries a rule decided in one local hour at the signal's location."""

    rule_id: str
    local_hour: int
    n: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(**dict(row))


class EngagementQueries(StoreBase):
    async def record_event(self, *, delivery_id: int, type: str) -> bool | None:
        """Record one event of a delivery: None when there is no such delivery, else whether
        it was new (a replay counts once)."""
        row = await self._fetchrow("event_record", delivery_id, type)
        assert row is not None  # the query answers one row whatever it finds
        found: bool = row["found"]
        inserted: bool = row["inserted"]
        return inserted if found else None

    async def engagement_counts(self) -> EngagementCounts:
        async with self.transaction(isolation="repeatable_read", readonly=True) as tx:
            return EngagementCounts(
                deliveries=[
                    DeliveryCounts.from_row(r) for r in await tx._fetch("stats_deliveries")
                ],
                events=[EventCount.from_row(r) for r in await tx._fetch("stats_events")],
                counters=[RuleCounter.from_row(r) for r in await tx._fetch("stats_counters")],
            )

    async def decisions_by_hour(self) -> list[HourlyDecisions]:
        return [HourlyDecisions.from_row(r) for r in await self._fetch("decisions_by_hour")]
