"""Queries of campaigns: storing and cancelling them, the fan-out's ticks, their results."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from service.store.base import Row, StoreBase
from service.store.experiments import ExperimentGroup, ExperimentRow, read_experiments

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class NewCampaign:
    """A checked campaign to store (service.campaigns.body.Campaign, flattened)."""

    id: str
    description: str
    spec: Mapping[str, Any]
    audience: Mapping[str, Any]
    programs: Mapping[str, Any]
    send_at: datetime | None
    send_local: datetime | None  # naive wall-clock time
    late: str | None
    ttl_s: int
    urgency: str
    topic: str | None
    rate_per_s: float | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CampaignRow(Row):
    id: str
    description: str
    status: str
    spec: dict[str, Any]
    audience: dict[str, Any]
    programs: dict[str, Any]
    send_at: datetime | None
    send_local: datetime | None
    late: str | None
    ttl_s: int
    urgency: str
    topic: str | None
    rate_per_s: float | None
    audience_n: int
    created_at: datetime
    next_check_at: datetime | None
    next_slot: datetime | None
    fanned_out_at: datetime | None
    cancelled_at: datetime | None
    finished_at: datetime | None
    # send_at.optimal (migrations/0016_send_time.sql): its day, window and fallback, and the
    # plan's summary; None for other campaigns.
    optimal: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ZoneStep:
    """What a tick does with the audience of one time zone ('' for none)."""

    zone: str
    action: str  # send | expire | skip | wait
    expires_at: datetime  # the fan-out's clock
    # An optimal campaign's step is one zone's members at one local minute of the day.
    minute: int | None = None


@dataclass(frozen=True, slots=True)
class Caps:
    """The policy limits the fan-out applies (rules/policy.yaml)."""

    per_subscriber: int | None = None
    period: timedelta | None = None
    min_gap: timedelta | None = None
    # The fatigue guard is on: subscribers resting now are suppressed `fatigued`.
    fatigue: bool = False


@dataclass(frozen=True, slots=True)
class FanOutResult:
    due: int  # audience members whose zone was due
    locked: int  # of those, the ones no other transaction held (the others wait)
    queued: int
    expired: int
    suppressed: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InteractionHours:
    """An audience's interactions per local hour: ``counts[i, h]`` for member ``ids[i]``."""

    ids: list[UUID]
    counts: NDArray[np.int64]  # (len(ids), 24)


@dataclass(frozen=True, slots=True)
class Cancelled:
    found: bool
    cancelled: int  # pending deliveries cancelled


@dataclass(frozen=True, slots=True)
class CampaignDeliveryCounts(Row):
    campaign_id: str
    variant: str
    queued: int
    sent: int
    failed: int
    gone: int
    expired: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class CampaignEventCount(Row):
    campaign_id: str
    variant: str
    type: str
    n: int


@dataclass(frozen=True, slots=True)
class CampaignSuppressionCount(Row):
    campaign_id: str
    variant: str
    reason: str
    n: int


@dataclass(frozen=True, slots=True)
class CampaignCounts:
    """Campaigns and every count of their results, read in one snapshot."""

    campaigns: list[CampaignRow]
    deliveries: list[CampaignDeliveryCounts]
    events: list[CampaignEventCount]
    suppressions: list[CampaignSuppressionCount]
    # The campaigns' experiments (service/campaigns/experiment.py), if any.
    experiments: list[ExperimentRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AudienceSample:
    locale: str  # the message locale the member's locale picks ('' the default)
    attributes: dict[str, Any]


def audience_args(audience: Mapping[str, Any]) -> tuple[Any, ...]:
    """An audience (service.campaigns.body.Campaign.audience) as the queries' five arguments:
    topics, locale patterns (a tag, or a longer tag of it: de, de-%), and the conditions'
    keys, operators and JSON arguments."""
    topics = audience.get("topics")
    locales = audience.get("locales")
    patterns = None if locales is None else [p for tag in locales for p in (tag, tag + "-%")]
    conditions = audience.get("conditions") or []
    return (
        list(topics) if topics is not None else None,
        patterns,
        [c["key"] for c in conditions],
        [c["op"] for c in conditions],
        [json.dumps(c["value"]) for c in conditions],
    )


def _fallback_minute(campaign: CampaignRow) -> int | None:
    """An optimal campaign's fallback in minutes after local midnight (its send_local's)."""
    if campaign.optimal is None or campaign.send_local is None:
        return None
    return campaign.send_local.hour * 60 + campaign.send_local.minute


class CampaignQueries(StoreBase):
    # --- the admin API and CLI ------------------------------------------------------------

    async def create_campaign(self, *, campaign: NewCampaign) -> CampaignRow | None:
        """Store the campaign with its audience counted now; None if the id is taken."""
        c = campaign
        row = await self._fetchrow(
            "campaign_insert",
            c.id,
            c.description,
            c.spec,
            c.audience,
            c.programs,
            c.send_at,
            c.send_local,
            c.late,
            c.ttl_s,
            c.urgency,
            c.topic,
            c.rate_per_s,
            c.created_at,
            *audience_args(c.audience),
        )
        return None if row is None else CampaignRow.from_row(row)

    async def audience_size(self, *, audience: Mapping[str, Any]) -> int:
        n: int = await self._fetchval("campaign_audience_count", *audience_args(audience))
        return n

    async def audience_samples(
        self, *, audience: Mapping[str, Any], locales: Sequence[str]
    ) -> list[AudienceSample]:
        rows = await self._fetch("campaign_samples", *audience_args(audience), list(locales))
        return [AudienceSample(r["key"], r["attributes"] or {}) for r in rows]

    async def audience_interaction_hours(
        self, *, audience: Mapping[str, Any], since: datetime
    ) -> InteractionHours:
        """Every audience member's interactions since ``since`` per local hour, in one
        statement (campaign_interaction_hours); members without one are left out."""
        row = await self._fetchrow("campaign_interaction_hours", *audience_args(audience), since)
        assert row is not None
        import numpy as np  # here: the API and ingest import this module and need no numpy

        ids: list[UUID] = list(row["ids"])
        # One vectorised pass from (member, hour, n) triples to the (member, 24) histogram.
        counts = np.zeros((len(ids), 24), dtype=np.int64)
        np.add.at(
            counts,
            (np.asarray(row["members"], dtype=np.int64), np.asarray(row["hours"], dtype=np.int64)),
            np.asarray(row["counts"], dtype=np.int64),
        )
        return InteractionHours(ids, counts)

    async def store_send_plan(
        self,
        *,
        campaign_id: str,
        ids: Sequence[UUID],
        hours: Sequence[int],
        optimal: Mapping[str, Any],
        schedule: Mapping[str, Any],
    ) -> CampaignRow:
        """An optimal campaign's plan: the personal hours and the summary, one statement."""
        row = await self._fetchrow(
            "campaign_send_plan", campaign_id, list(ids), list(hours), optimal, schedule
        )
        assert row is not None
        return CampaignRow.from_row(row)

    async def campaign(self, *, campaign_id: str) -> CampaignRow | None:
        row = await self._fetchrow("campaign_get", campaign_id)
        return None if row is None else CampaignRow.from_row(row)

    async def campaign_list(self) -> list[CampaignRow]:
        return [CampaignRow.from_row(r) for r in await self._fetch("campaign_list")]

    async def cancel_campaign(self, *, campaign_id: str) -> Cancelled:
        """Stop the campaign and cancel its pending deliveries in one statement."""
        row = await self._fetchrow("campaign_cancel", campaign_id)
        assert row is not None
        return Cancelled(found=row["found"], cancelled=row["cancelled"])

    # --- the fan-out ------------------------------------------------------------------------

    async def due_campaigns(self, *, now: datetime) -> list[str]:
        return [r["id"] for r in await self._fetch("campaign_due", now)]

    async def lock_campaign(self, *, campaign_id: str) -> CampaignRow | None:
        """The campaign, locked until the transaction ends; None if it is not running or
        another process holds it."""
        row = await self._fetchrow("campaign_lock", campaign_id)
        return None if row is None else CampaignRow.from_row(row)

    async def campaign_zones(self, *, campaign: CampaignRow) -> list[str]:
        """The time zones of the campaign's audience it has not handled yet."""
        rows = await self._fetch("campaign_zones", campaign.id, *audience_args(campaign.audience))
        return [r["zone"] for r in rows]

    async def campaign_zone_minutes(
        self, *, campaign: CampaignRow, fallback_minute: int
    ) -> list[tuple[str, int]]:
        """An optimal campaign's not yet handled audience as (time zone, local minute) pairs."""
        rows = await self._fetch(
            "campaign_zone_minutes",
            campaign.id,
            *audience_args(campaign.audience),
            fallback_minute,
        )
        return [(r["zone"], r["minute"]) for r in rows]

    async def fan_out(
        self,
        *,
        campaign: CampaignRow,
        now: datetime,
        zones: Sequence[ZoneStep],
        caps: Caps,
        first_delay_s: float = 0.0,
        group: ExperimentGroup | None = None,
    ) -> FanOutResult:
        """One tick of the campaign's fan-out, in one statement (see campaign_fan_out); of an
        experiment, for one ``group`` of its audience."""
        p = campaign.programs
        row = await self._fetchrow(
            "campaign_fan_out",
            campaign.id,
            now,
            [z.zone for z in zones],
            [z.action for z in zones],
            [z.expires_at for z in zones],
            caps.per_subscriber,
            caps.period,
            caps.min_gap,
            first_delay_s,
            campaign.rate_per_s,
            *audience_args(campaign.audience),
            p["lower"],
            p["total"],
            p["variants"],
            p["keys"],
            {"ttl_s": campaign.ttl_s, "urgency": campaign.urgency, "topic": campaign.topic},
            p["templates"],
            p["tokens"],
            p["names"],
            None if group is None else group.threshold,
            None if group is None else group.test,
            None if group is None else group.winner,
            [z.minute for z in zones],
            _fallback_minute(campaign),
            caps.fatigue,
        )
        assert row is not None
        return FanOutResult(
            due=row["due"],
            locked=row["locked"],
            queued=row["queued"],
            expired=row["expired"],
            suppressed=dict(row["suppressed"]),
        )

    async def campaign_progress(
        self,
        *,
        campaign_id: str,
        status: str,
        next_check_at: datetime | None,
        next_slot: datetime | None,
        fanned_out: bool,
    ) -> None:
        await self._execute(
            "campaign_progress", campaign_id, status, next_check_at, next_slot, fanned_out
        )

    async def postpone_campaign(self, *, campaign_id: str, until: datetime) -> None:
        """Look at a running campaign again at ``until`` (its tick failed)."""
        await self._execute("campaign_postpone", campaign_id, until)

    async def finish_campaigns(self) -> list[str]:
        """Mark fanned-out campaigns with nothing pending as done; return their ids."""
        return [r["id"] for r in await self._fetch("campaign_finish")]

    # --- results ----------------------------------------------------------------------------

    async def campaign_counts(self, *, campaign_id: str | None = None) -> CampaignCounts:
        """One campaign's (or every campaign's) row and counts, in one snapshot."""
        async with self.transaction(isolation="repeatable_read", readonly=True) as tx:
            return await read_campaign_counts(tx, campaign_id)


async def read_campaign_counts(db: StoreBase, campaign_id: str | None) -> CampaignCounts:
    """The campaigns' rows and counts, on ``db`` as it is (inside the caller's snapshot)."""
    if campaign_id is None:
        campaigns = [CampaignRow.from_row(r) for r in await db._fetch("campaign_list")]
    else:
        row = await db._fetchrow("campaign_get", campaign_id)
        campaigns = [] if row is None else [CampaignRow.from_row(row)]
    return CampaignCounts(
        campaigns=campaigns,
        deliveries=[
            CampaignDeliveryCounts.from_row(r)
            for r in await db._fetch("campaign_stats_deliveries", campaign_id)
        ],
        events=[
            CampaignEventCount.from_row(r)
            for r in await db._fetch("campaign_stats_events", campaign_id)
        ],
        suppressions=[
            CampaignSuppressionCount.from_row(r)
            for r in await db._fetch("campaign_stats_suppressions", campaign_id)
        ],
        experiments=await read_experiments(db, campaign_id),
    )
