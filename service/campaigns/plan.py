"""One fan-out tick of a campaign: which time zones of its audience are due, held by quiet
hours, dropped because their ttl runs out first, or missed. Pure: callers pass ``now``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from service.campaigns.body import SendAt
from service.rules.localtime import zone
from service.rules.units import Window

# The fan-out looks at a running campaign at least this often (subscribers who join its
# audience, or move to a later time zone, while it runs).
RESCAN = timedelta(minutes=15)
# Until then a subscriber another transaction holds (the worker deciding their signals) is
# looked at again.
LOCKED_RETRY = timedelta(seconds=1)

ZoneAction = Literal["send", "expire", "skip", "wait"]


@dataclass(frozen=True)
class ZonePlan:
    """What to do now with the not yet handled audience in one time zone ('' is none)."""

    zone: str
    action: ZoneAction
    # The clock time the pushes' ttl runs out (their moment + ttl).
    expires_at: datetime


@dataclass(frozen=True)
class Tick:
    zones: list[ZonePlan]
    # When to look again (None: never - the fan-out is complete).
    next_check: datetime | None
    complete: bool
    started: bool  # the moment has come for some zone


def quiet_end(now: datetime, zone_name: str, quiet: Window | None) -> datetime | None:
    """When the quiet hours around ``now`` end in the zone; None when it is not quiet."""
    if quiet is None:
        return None
    tz = zone(zone_name or None)
    local = now.astimezone(tz)
    second = local.hour * 3600 + local.minute * 60 + local.second
    if not quiet.contains(second):
        return None
    wall = local.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    end = wall + timedelta(seconds=quiet.end)
    if quiet.crosses_midnight and second >= quiet.start:
        end += timedelta(days=1)
    ends = end.replace(tzinfo=tz).astimezone(UTC)
    if ends <= now:  # a DST change inside the quiet hours: count the seconds instead
        ends = now + timedelta(seconds=quiet.seconds_left(second))
    return ends


def plan_tick(
    send_at: SendAt,
    *,
    created_at: datetime,
    ttl: timedelta,
    zones: Iterable[str],
    now: datetime,
    quiet: Window | None,
) -> Tick:
    """Per zone of the audience still to handle: ``send`` (the moment has come and it is not
    quiet there), ``wait`` (the moment is ahead, or quiet hours hold the push until they
    end), ``expire`` (the ttl runs out before the push could go) or ``skip`` (a local moment
    that had passed when the campaign was created, with ``late: skip``)."""
    plans: list[ZonePlan] = []
    wakes: list[datetime] = []
    started = False
    for name in sorted(set(zones)):
        moment = send_at.moment_in(name)
        if moment < created_at:
            if send_at.instant is None and send_at.late == "skip":
                plans.append(ZonePlan(name, "skip", moment + ttl))
                started = True
                continue
            moment = created_at  # late: send, or an instant a moment ago: at once
        expires = moment + ttl
        if moment > now:
            plans.append(ZonePlan(name, "wait", expires))
            wakes.append(moment)
            continue
        started = True
        if now >= expires:
            plans.append(ZonePlan(name, "expire", expires))
            continue
        ends = quiet_end(now, name, quiet)
        if ends is None:
            plans.append(ZonePlan(name, "send", expires))
        elif ends >= expires:
            plans.append(ZonePlan(name, "expire", expires))  # dropped: the ttl runs out first
        else:
            plans.append(ZonePlan(name, "wait", expires))
            wakes.append(ends)
    latest = max(send_at.latest, created_at)
    waiting = any(p.action == "wait" for p in plans)
    complete = not waiting and now >= latest
    if complete:
        return Tick(plans, None, True, True)
    if now < latest:
        wakes.append(latest)
    return Tick(plans, min([*wakes, now + RESCAN]), False, started or now >= send_at.earliest)
