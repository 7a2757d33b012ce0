"""The campaign core without a database: checking a body, and planning a tick."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.campaigns.body import SendAt, parse_campaign, parse_rate
from service.campaigns.plan import plan_tick, quiet_end
from service.errors import CampaignInvalid
from service.rules.units import parse_window

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "id": "lunch",
    "audience": {"topics": ["food"]},
    "message": {"title": "Lunch, {attributes.name}?"},
    "send_at": {"local": "2026-11-24T11:45"},
}


def errors(**changes: Any) -> list[tuple[str, str]]:
    with pytest.raises(CampaignInvalid) as caught:
        parse_campaign(json.dumps({**BASE, **changes}), now=NOW)
    return caught.value.errors


def fields(**changes: Any) -> list[str]:
    return [f for f, _ in errors(**changes)]


def test_a_good_body_compiles() -> None:
    body = {
        **BASE,
        "audience": {"topics": ["food"], "attributes": {"tier": {"in": ["gold"]}, "vip": True}},
        "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}],
        "ttl": "30m",
        "rate": "100/min",
    }
    c = parse_campaign(json.dumps(body), now=NOW)
    assert c.ttl_s == 1800 and c.rate_per_s == pytest.approx(100 / 60)
    assert c.send_at == SendAt(local=datetime(2026, 11, 24, 11, 45), late="skip")
    assert c.audience == {
        "topics": ["food"],
        "conditions": [
            {"key": "tier", "op": "in", "value": ["gold"]},
            {"key": "vip", "op": "eq", "value": True},
        ],
    }
    plan = c.programs
    assert (plan["variants"], plan["lower"], plan["total"]) == (["a", "b"], [0, 1], 4)
    assert plan["names"] == ["name"] and len(plan["tokens"]) == 1
    assert plan["tokens"][0] in plan["templates"][0]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"send_at": "2026-11-24T11:45:00"}, "send_at"),  # no offset
        ({"send_at": "2026-11-24T07:00:00Z"}, "send_at"),  # an hour ago
        ({"send_at": 1764000000}, "send_at"),
        ({"send_at": {"local": "2026-11-24 11:45"}}, "send_at.local"),
        ({"send_at": {"local": "2026-02-30T11:45"}}, "send_at.local"),
        ({"send_at": {"local": "2026-11-22T11:45"}}, "send_at.local"),  # passed everywhere
        ({"send_at": {"local": "2026-11-24T11:45", "late": "later"}}, "send_at.late"),
        ({"send_at": {"local": "2028-01-01T11:45"}}, "send_at"),
        ({"audience": {"topic": ["food"]}}, "audience.topic"),
        (
            {"audience": {"attributes": {"visits": {"gte": 3, "lte": 9}}}},
            "audience.attributes.visits",
        ),
        ({"audience": {"attributes": {"visits": {"gt": "three"}}}}, "audience.attributes.visits"),
        ({"audience": {"attributes": {"tier": ["gold"]}}}, "audience.attributes.tier"),
        ({"audience": {"locales": ["german"]}}, "audience.locales.0"),
        ({"message": {"title": "Near {place.name}"}}, "message.title"),
        ({"message": {"title": "x", "body": "{context.weather}"}}, "message.body"),
        ({"message": {"title": "x" * 4000}}, "message"),
        ({"variants": [{"name": "a", "weight": 0}]}, "variants"),
        ({"id": "Lunch Offer"}, "id"),
        ({"ttl": "40d"}, "ttl"),
        ({"rate": "fast"}, "rate"),
        ({"topic": "not a topic"}, "topic"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_body_names_the_field(changes: dict[str, Any], field: str) -> None:
    assert field in fields(**changes)


def test_every_bad_field_is_named_at_once() -> None:
    assert fields(id="X", ttl="40d", rate="fast") == ["id", "ttl", "rate"]


def test_rates() -> None:
    assert parse_rate("100/s") == 100
    assert parse_rate("600/min") == 10
    assert parse_rate("7200/hour") == 2
    assert parse_rate("50/10s") == 5
    for bad in ("0/s", "10", "10/fortnight", "-1/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)


QUIET = parse_window("21:00-08:00")


def test_quiet_hours_end_in_the_zones_local_time() -> None:
    at = datetime(2026, 11, 24, 21, 30, tzinfo=UTC)
    assert quiet_end(at, "America/New_York", QUIET) is None  # 16:30 there
    assert quiet_end(at, "Asia/Tokyo", QUIET) == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    assert quiet_end(at, "Europe/Berlin", QUIET) == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    assert quiet_end(at, "", QUIET) == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # UTC
    assert quiet_end(at, "Europe/Berlin", None) is None


def test_a_wall_clock_moment_across_dst_reads_the_offset_before_the_change() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29 (02:00 -> 03:00): read as CET, 01:30 UTC.
    at = SendAt(local=datetime(2026, 3, 29, 2, 30))
    assert at.moment_in("Europe/Berlin") == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert SendAt(local=datetime(2026, 7, 1, 12, 0)).moment_in("Europe/Berlin") == datetime(
        2026, 7, 1, 10, 0, tzinfo=UTC
    )
    assert SendAt(local=datetime(2026, 7, 1, 12, 0)).moment_in("Nowhere/Invalid") == datetime(
        2026, 7, 1, 12, 0, tzinfo=UTC
    )


def test_a_tick_plans_each_zone() -> None:
    local = SendAt(local=datetime(2026, 11, 24, 12, 0), late="skip")
    created = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # Tokyo's noon has passed
    zones = ["Asia/Tokyo", "Europe/Berlin", "America/New_York", ""]
    tick = plan_tick(
        local, created_at=created, ttl=timedelta(hours=2), zones=zones, now=created, quiet=QUIET
    )
    actions = {z.zone: z.action for z in tick.zones}
    assert actions == {
        "Asia/Tokyo": "skip",
        "Europe/Berlin": "wait",
        "America/New_York": "wait",
        "": "wait",
    }
    assert tick.next_check == datetime(2026, 11, 24, 6, 15, tzinfo=UTC)  # the rescan
    noon = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    tick = plan_tick(
        local, created_at=created, ttl=timedelta(hours=2), zones=zones[1:], now=noon, quiet=QUIET
    )
    assert {z.zone: z.action for z in tick.zones}["Europe/Berlin"] == "send"
    assert not tick.complete and tick.started
    # Past 12:00 at UTC-12, with nothing left: complete.
    late = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
    done = plan_tick(
        local, created_at=created, ttl=timedelta(hours=2), zones=[], now=late, quiet=QUIET
    )
    assert done.complete and done.next_check is None
