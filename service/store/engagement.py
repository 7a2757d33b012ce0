"""Queries of engagement: recorded events, the counts behind /v1/stats and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from service.store.base import Row, StoreBase
from service.store.campaigns import CampaignCounts, read_campaign_counts


@dataclass(frozen=True, slots=True)
class DeliveryCounts(Row):
    """Deliveries of one rule variant by final status."""

    rule_id: str
    variant: str
    sent: int
    failed: int
    gone: int
    expired: int


@dataclass(frozen=True, slots=True)
class EventCount(Row):
    """How many deliveries of one rule variant got one event type."""

    rule_id: str
    variant: str
    type: str
    n: int


@dataclass(frozen=True, slots=True)
class ActionCount(Row):
    """How many deliveries of one rule variant were first clicked on one action button."""

    rule_id: str
    variant: str
    action: str
    n: int


@dataclass(frozen=True, slots=True)
class EventRecorded:
    """What recording one event found: the delivery, the action among its buttons."""

    found: bool  # the delivery exists
    known: bool  # and the action (if any) is one of its buttons: then the event counts
    inserted: bool  # and it is the first of its type for the delivery


@dataclass(frozen=True, slots=True)
class Click:
    """A click through GET /c/...: whether the delivery has that target, and where it goes."""

    known: bool  # the delivery exists, is not erased, and has this action (or "open")
    url: str | None  # the stored target; None when the message has no url for it
    inserted: bool  # the first click of the delivery (a repeat is not counted)


@dataclass(frozen=True, slots=True)
class RuleCounter(Row):
    """One of the engine's counters of a rule variant (``matched``, ``suppressed:<reason>``)."""

    rule_id: str
    variant: str
    counter: str
    n: int


@dataclass(frozen=True, slots=True)
class SignalCounts(Row):
    """The ``signals`` of /v1/stats: running totals (signal_totals) and the quarantine now."""

    stored: int = 0
    stale: int = 0
    duplicates: int = 0
    quarantined: int = 0


@dataclass(frozen=True, slots=True)
class SubscriberCounts(Row):
    """The ``subscribers`` of /v1/stats: the subscriptions held now, by state."""

    active: int = 0
    paused: int = 0
    gone: int = 0
    location_consent: int = 0


@dataclass(frozen=True, slots=True)
class HealthCount(Row):
    """One rule's pushes sent in the health window ('' for campaigns'), and of them those
    with an interaction (clicked or converted)."""

    rule_id: str
    sent: int
    interacted: int


@dataclass(frozen=True, slots=True)
class Health:
    """The ``health`` of /v1/stats: the window's pushes by rule, and who rests now."""

    rules: list[HealthCount] = field(default_factory=list)
    resting: int = 0  # subscribers the fatigue guard rests now (0 while it is off)


@dataclass(frozen=True, slots=True)
class EngagementCounts:
    """Every count of the funnels, read in one snapshot so the stages agree."""

    deliveries: list[DeliveryCounts]
    events: list[EventCount]
    counters: list[RuleCounter]
    actions: list[ActionCount] = field(default_factory=list)
    campaigns: CampaignCounts | None = None
    signals: SignalCounts = field(default_factory=SignalCounts)
    subscribers: SubscriberCounts = field(default_factory=SubscriberCounts)
    health: Health = field(default_factory=Health)


@dataclass(frozen=True, slots=True)
class HourlyDecisions(Row):
    """Deliveries a rule decided in one local hour at the signal's location."""

    rule_id: str
    local_hour: int
    n: int


@dataclass(frozen=True, slots=True)
class PlaceCounts(Row):
    """Deliveries one rule decided at one place in a period, and what became of them."""

    rule_id: str
    place_id: str  # '' for a rule without places
    decided: int
    sent: int
    failed: int
    gone: int
    expired: int
    shown: int
    clicked: int
    converted: int


class EngagementQueries(StoreBase):
    async def record_event(
        self, *, delivery_id: int, type: str, action: str | None = None
    ) -> EventRecorded:
        """Record one event of a delivery (a replay counts once; a click may name one of the
        delivery's action buttons, and the first click's action is kept)."""
        try:
            row = await self._fetchrow("event_record", delivery_id, type, action)
        except asyncpg.ForeignKeyViolationError:
            # The roll-up deleted the delivery between our read and our insert (its claim made
            # the insert wait): as if it had been gone already.
            return EventRecorded(found=False, known=False, inserted=False)
        assert row is not None  # the query answers one row whatever it finds
        return EventRecorded(found=row["found"], known=row["known"], inserted=row["inserted"])

    async def record_click(self, *, delivery_id: int, action: str | None) -> Click:
        """A click on a delivery's notification (``action`` None) or on one of its buttons:
        recorded once when the delivery has that target, with the stored url to go to."""
        try:
            row = await self._fetchrow("event_click", delivery_id, action)
        except asyncpg.ForeignKeyViolationError:  # rolled up meanwhile, as in record_event
            return Click(known=False, url=None, inserted=False)
        assert row is not None
        return Click(known=row["known"], url=row["url"], inserted=row["inserted"])

    async def engagement_counts(
        self, *, health_window: timedelta | None = None, fatigue: bool = False
    ) -> EngagementCounts:
        """Every count of /v1/stats; with ``health_window``, its health too (``fatigue``:
        the guard is on, so resting subscribers are counted)."""
        async with self.transaction(isolation="repeatable_read", readonly=True) as tx:
            return EngagementCounts(
                deliveries=[
                    DeliveryCounts.from_row(r) for r in await tx._fetch("stats_deliveries")
                ],
                events=[EventCount.from_row(r) for r in await tx._fetch("stats_events")],
                counters=[RuleCounter.from_row(r) for r in await tx._fetch("stats_counters")],
                actions=[ActionCount.from_row(r) for r in await tx._fetch("stats_actions")],
                campaigns=await read_campaign_counts(tx, None),
                signals=SignalCounts.from_row((await tx._fetch("stats_signals"))[0]),
                subscribers=SubscriberCounts.from_row((await tx._fetch("stats_subscribers"))[0]),
                health=await tx.health(health_window, fatigue=fatigue)
                if health_window is not None
                else Health(),
            )

    async def health(self, window: timedelta, *, fatigue: bool) -> Health:
        """The pushes sent in the last ``window`` by rule with their interactions, and the
        subscribers resting now when the fatigue guard is on."""
        rules = [HealthCount.from_row(r) for r in await self._fetch("stats_health", window)]
        resting = int(await self._fetchval("stats_resting")) if fatigue else 0
        return Health(rules, resting)

    async def decisions_by_hour(self) -> list[HourlyDecisions]:
        return [HourlyDecisions.from_row(r) for r in await self._fetch("decisions_by_hour")]

    async def place_counts(self, since: datetime, until: datetime) -> list[PlaceCounts]:
        """Per rule and place, the deliveries decided in [since, until) and their fates."""
        return [PlaceCounts.from_row(r) for r in await self._fetch("stats_places", since, until)]
