"""Send-time optimisation of a campaign: its plan when it is created, and its fan-out ticks.

The plan: one statement reads the audience's interactions per local hour (the store's
``audience_interaction_hours``), the pure ``choose_hours`` (service/engagement/sendtime.py)
picks every member's hour in one vectorised pass, and one more statement stores the personal
hours (``campaign_send_hours``) and the summary (``schedule``) - a few round trips whatever
the audience's size, in the transaction that stores the campaign (usecases.create).

A tick: the members not handled yet fall into groups of one time zone and one local minute of
the campaign's day (their planned hour, or the fallback); each group is a ``local`` campaign
at that moment for :func:`service.campaigns.plan.plan_tick`, so quiet hours, ttl and ``late``
act exactly as they do for ``local`` campaigns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.campaigns.body import Campaign, SendAt
from service.campaigns.optimal import Optimal, schedule
from service.campaigns.plan import Tick, ZonePlan, plan_tick
from service.engagement.sendtime import choose_hours
from service.errors import CampaignInvalid
from service.rules.units import Window
from service.store import Store
from service.store.campaigns import CampaignRow, ZoneStep
from service.vocabulary import Late

# Interactions this recent count (DESIGN: at least 3 in the last 90 days).
HISTORY = timedelta(days=90)
MIN_INTERACTIONS = 3


@dataclass(frozen=True)
class SendPlan:
    ids: list[Any]  # the members with any interaction (UUIDs)
    hours: NDArray[np.int64]  # their hour, -1: the fallback
    schedule: dict[str, Any]


def check(optimal: Optimal, quiet: Window | None) -> None:
    """CampaignInvalid when the policy's quiet hours leave no hour of the window."""
    errors = optimal.errors(quiet)
    if errors:
        raise CampaignInvalid(errors)


async def plan(
    store: Store, campaign: Campaign, *, audience: int, now: datetime, quiet: Window | None
) -> SendPlan:
    """Every audience member's hour (two round trips: none per member)."""
    optimal = campaign.send_at.optimal
    assert optimal is not None
    found = await store.audience_interaction_hours(audience=campaign.audience, since=now - HISTORY)
    # The audience's hourly profile: every member's interactions, personal hour or not.
    profile = found.counts.sum(axis=0).astype(np.float64)
    hours = choose_hours(
        found.counts,
        profile,
        allowed=optimal.allowed(quiet),
        fallback_hour=optimal.fallback_hour,
        min_interactions=MIN_INTERACTIONS,
    )
    return SendPlan(found.ids, hours, _schedule(hours, audience, optimal))


def _schedule(hours: NDArray[np.int64], audience: int, optimal: Optimal) -> dict[str, Any]:
    return schedule(hours, audience, optimal.fallback_hour)


async def store_plan(
    tx: Store, campaign: Campaign, row: CampaignRow, *, now: datetime, quiet: Window | None
) -> CampaignRow:
    """Plan the campaign just stored (``row``, in the caller's transaction) and store the plan:
    the personal hours and the summary."""
    optimal = campaign.send_at.optimal
    assert optimal is not None
    made = await plan(tx, campaign, audience=row.audience_n, now=now, quiet=quiet)
    personal = made.hours >= 0
    return await tx.store_send_plan(
        campaign_id=row.id,
        ids=[i for i, keep in zip(made.ids, personal, strict=True) if keep],
        hours=[int(h) for h in made.hours[personal]],
        optimal=optimal.as_json(),
        schedule=made.schedule,
    )


@dataclass(frozen=True)
class OptimalTick:
    tick: Tick
    minutes: list[int]  # the local minute of each of tick.zones


def plan_optimal_tick(
    optimal: Optimal,
    late: Late,
    *,
    created_at: datetime,
    ttl: timedelta,
    groups: Iterable[tuple[str, int]],
    now: datetime,
    quiet: Window | None,
) -> OptimalTick:
    """:func:`plan_tick` per local minute of the day. The fallback's minute is always
    planned, even with no member left in it: whoever joins the audience later goes then, so
    the campaign runs until the fallback has come everywhere."""
    by_minute: dict[int, set[str]] = defaultdict(set)
    by_minute[optimal.fallback_minute] = set()
    for zone_name, minute in groups:
        by_minute[minute].add(zone_name)
    zones: list[ZonePlan] = []
    minutes: list[int] = []
    wakes: list[datetime] = []
    complete, started = True, False
    day = datetime.combine(optimal.day, time())
    for minute, names in sorted(by_minute.items()):
        send_at = SendAt(local=day + timedelta(minutes=minute), late=late)
        tick = plan_tick(send_at, created_at=created_at, ttl=ttl, zones=names, now=now, quiet=quiet)
        zones += tick.zones
        minutes += [minute] * len(tick.zones)
        complete = complete and tick.complete
        started = started or tick.started
        if tick.next_check is not None:
            wakes.append(tick.next_check)
    next_check = None if complete else min(wakes)
    return OptimalTick(Tick(zones, next_check, complete, started), minutes)


async def zone_minutes(tx: Store, row: CampaignRow) -> list[tuple[str, int]]:
    """The (time zone, local minute) groups of the audience still to handle, one statement."""
    assert row.optimal is not None
    optimal = Optimal.from_json(row.optimal)
    return await tx.campaign_zone_minutes(campaign=row, fallback_minute=optimal.fallback_minute)


def plan_steps(
    row: CampaignRow,
    groups: Iterable[tuple[str, int]],
    *,
    now: datetime,
    quiet: Window | None,
    created_at: datetime,
) -> tuple[Tick, list[ZoneStep]]:
    """An optimal campaign's tick plan, pure: moments that had passed at ``created_at`` (the
    creation, or for an experiment's rest its decision) follow ``late``."""
    assert row.optimal is not None
    late: Late = "send" if row.late == "send" else "skip"
    made = plan_optimal_tick(
        Optimal.from_json(row.optimal),
        late,
        created_at=created_at,
        ttl=timedelta(seconds=row.ttl_s),
        groups=groups,
        now=now,
        quiet=quiet,
    )
    steps = [
        ZoneStep(z.zone, z.action, z.expires_at, minute)
        for z, minute in zip(made.tick.zones, made.minutes, strict=True)
    ]
    return made.tick, steps
