"""The fan-out against a real PostgreSQL and the strict test push service, on a controlled
clock: local moments per time zone, late skip and send, quiet hours, cancellation, caps shared
with rules, and a tick that dies half-way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.testing import PushService
from tests.campaigns.conftest import Clock, Member, body, create, statuses, subscribe
from tests.conftest import LiveApi
from tests.factories import insert_delivery

DAY = datetime(2026, 11, 24, tzinfo=UTC)  # a Tuesday
NOON = {"local": "2026-11-24T12:00"}
# 12:00 on DAY in each zone, as UTC.
TOKYO_NOON = DAY + timedelta(hours=3)
BERLIN_NOON = DAY + timedelta(hours=11)
NEW_YORK_NOON = DAY + timedelta(hours=17)


ZONES = ("Asia/Tokyo", "Europe/Berlin", "America/New_York")


async def three_zones(api: LiveApi, push: PushService) -> tuple[Member, Member, Member]:
    tokyo, berlin, new_york = [
        await subscribe(
            api, push, timezone=zone, topics=["food"], attributes={"name": zone.split("/")[1]}
        )
        for zone in ZONES
    ]
    return tokyo, berlin, new_york


async def test_each_subscriber_gets_the_push_at_their_own_noon_and_none_earlier(
    api: LiveApi, push_service: PushService
) -> None:
    members = await three_zones(api, push_service)
    tokyo, berlin, new_york = members
    outsider = await subscribe(api, push_service, timezone="Europe/Berlin", topics=["sport"])
    await create(api.ctx, body(send_at=NOON), DAY)
    clock = Clock(api.ctx, DAY)

    def received() -> dict[str, int]:
        return {z: len(m.campaign_pushes()) for z, m in zip(ZONES, members, strict=True)}

    # A tick a minute before each noon (as a rescan would run one) sends nothing early.
    await clock.at(TOKYO_NOON - timedelta(minutes=1), force=True)
    assert sum(received().values()) == 0
    await clock.at(TOKYO_NOON)
    assert received() == {"Asia/Tokyo": 1, "Europe/Berlin": 0, "America/New_York": 0}
    await clock.at(BERLIN_NOON - timedelta(minutes=1), force=True)
    assert received() == {"Asia/Tokyo": 1, "Europe/Berlin": 0, "America/New_York": 0}
    await clock.at(BERLIN_NOON)
    assert received() == {"Asia/Tokyo": 1, "Europe/Berlin": 1, "America/New_York": 0}
    await clock.at(NEW_YORK_NOON - timedelta(seconds=1), force=True)
    assert received()["America/New_York"] == 0
    await clock.at(NEW_YORK_NOON)
    assert received() == {"Asia/Tokyo": 1, "Europe/Berlin": 1, "America/New_York": 1}
    # Later ticks send nothing twice; the outsider's topics never matched.
    await clock.at(NEW_YORK_NOON + timedelta(hours=13), force=True)
    assert received() == {"Asia/Tokyo": 1, "Europe/Berlin": 1, "America/New_York": 1}
    assert outsider.campaign_pushes() == []

    [push] = tokyo.campaign_pushes()
    assert push["title"] == "Lunch time, Tokyo"
    assert push["data"]["campaign"] == "lunch" and "rule" not in push["data"]
    assert berlin.campaign_pushes()[0]["title"] == "Lunch time, Berlin"
    rows = await api.ctx.pool.fetch(
        "SELECT subscription_id::text AS s, decided_at FROM deliveries WHERE campaign_id = 'lunch'"
    )
    decided = {r["s"]: r["decided_at"] for r in rows}
    assert decided == {
        tokyo.id: TOKYO_NOON,
        berlin.id: BERLIN_NOON,
        new_york.id: NEW_YORK_NOON,
    }
    # After 12:00 has come everywhere (UTC-12), the campaign is done.
    await clock.at(DAY + timedelta(hours=24), force=True)
    status = await api.ctx.pool.fetchval("SELECT status FROM campaigns WHERE id = 'lunch'")
    assert status == "done"


@pytest.mark.parametrize("late", ["skip", "send"])
async def test_a_local_moment_passed_at_creation_is_skipped_or_sent_at_once(
    api: LiveApi, push_service: PushService, late: str
) -> None:
    tokyo, berlin, new_york = await three_zones(api, push_service)
    created = DAY + timedelta(hours=6)  # 15:00 in Tokyo: its noon has passed
    await create(api.ctx, body(send_at={**NOON, "late": late}), created)
    clock = Clock(api.ctx, created)
    await clock.at(created)
    expected_now = 1 if late == "send" else 0
    assert len(tokyo.campaign_pushes()) == expected_now
    assert berlin.campaign_pushes() == []
    await clock.at(BERLIN_NOON)
    await clock.at(NEW_YORK_NOON)
    assert len(berlin.campaign_pushes()) == len(new_york.campaign_pushes()) == 1
    assert len(tokyo.campaign_pushes()) == expected_now
    state = await statuses(api.ctx.pool, "lunch")
    assert state[tokyo.id] == ("sent" if late == "send" else "suppressed:missed_local_time")
    async with api.http.get(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        result = await r.json()
    assert result["sent"] == 2 + expected_now
    assert result["suppressed"] == ({} if late == "send" else {"missed_local_time": 1})


async def test_quiet_hours_hold_a_push_until_they_end_or_drop_it_when_the_ttl_runs_out_first(
    api: LiveApi, push_service: PushService
) -> None:
    tokyo, berlin, new_york = await three_zones(api, push_service)
    # 21:30 UTC: 16:30 in New York (not quiet), 06:30 in Tokyo (quiet until 08:00, that is
    # 23:00 UTC: within the 2 h ttl), 22:30 in Berlin (quiet until 07:00 UTC: after it).
    at = DAY + timedelta(hours=21, minutes=30)
    await create(api.ctx, body(send_at=at.isoformat()), at - timedelta(hours=1))
    clock = Clock(api.ctx, at)
    await clock.at(at)
    assert len(new_york.campaign_pushes()) == 1
    assert tokyo.campaign_pushes() == berlin.campaign_pushes() == []
    state = await statuses(api.ctx.pool, "lunch")
    assert state[berlin.id] == "expired"
    assert tokyo.id not in state
    await clock.at(DAY + timedelta(hours=22, minutes=59), force=True)
    assert tokyo.campaign_pushes() == []
    await clock.at(DAY + timedelta(hours=23))  # 08:00 in Tokyo: the quiet hours end
    assert len(tokyo.campaign_pushes()) == 1
    await clock.at(DAY + timedelta(hours=31), force=True)  # 08:00 in Berlin: nothing more
    assert berlin.campaign_pushes() == []
    async with api.http.get(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        result = await r.json()
    assert (result["sent"], result["expired"], result["queued"]) == (2, 1, 0)
    assert result["status"] == "done"


async def test_cancel_mid_way_sends_nothing_more(api: LiveApi, push_service: PushService) -> None:
    tokyo, berlin, new_york = await three_zones(api, push_service)
    await create(api.ctx, body(send_at=NOON), DAY)
    clock = Clock(api.ctx, DAY)
    await clock.at(TOKYO_NOON)
    assert len(tokyo.campaign_pushes()) == 1
    async with api.http.delete(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        assert r.status == 200
        cancelled = await r.json()
    assert cancelled["status"] == "cancelled" and cancelled["sent"] == 1
    await clock.at(BERLIN_NOON, force=True)
    await clock.at(NEW_YORK_NOON, force=True)
    assert berlin.campaign_pushes() == new_york.campaign_pushes() == []
    assert set(await statuses(api.ctx.pool, "lunch")) == {tokyo.id}


async def test_cancel_drops_queued_pushes_of_a_paced_campaign(
    api: LiveApi, push_service: PushService
) -> None:
    members = [
        await subscribe(api, push_service, timezone="America/New_York", topics=["food"])
        for _ in range(3)
    ]
    at = DAY + timedelta(hours=17)
    await create(api.ctx, body(send_at=at.isoformat(), rate="1/min"), at)
    clock = Clock(api.ctx, at)
    await clock.at(at)  # the first goes now, the others one and two minutes later
    assert sum(len(m.campaign_pushes()) for m in members) == 1
    delays = await api.ctx.pool.fetch(
        "SELECT extract(epoch FROM decided_at - $1) AS s FROM deliveries ORDER BY decided_at", at
    )
    assert [round(r["s"]) for r in delays] == [0, 60, 120]
    async with api.http.delete(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        assert (await r.json())["cancelled_now"] == 2
    await api.ctx.pool.execute("UPDATE deliveries SET not_before = now()")  # time passes
    await clock.at(at + timedelta(minutes=5), force=True)
    assert sum(len(m.campaign_pushes()) for m in members) == 1


async def test_a_tick_that_fails_half_way_stores_nothing_and_the_next_sends_each_push_once(
    api: LiveApi, push_service: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = [await subscribe(api, push_service, topics=["food"]) for _ in range(5)]
    at = DAY + timedelta(hours=12)
    await create(api.ctx, body(send_at=at.isoformat()), at)
    clock = Clock(api.ctx, at)
    from service.store import Store

    real = Store.campaign_progress

    async def crash(self: Store, **kwargs: object) -> None:
        raise ConnectionResetError("the process died here")

    monkeypatch.setattr(Store, "campaign_progress", crash)
    with pytest.raises(ConnectionResetError):
        await clock.at(at)
    assert await api.ctx.pool.fetchval("SELECT count(*) FROM deliveries") == 0
    monkeypatch.setattr(Store, "campaign_progress", real)
    await clock.at(at)
    await clock.at(at + timedelta(minutes=1), force=True)
    assert [len(m.campaign_pushes()) for m in members] == [1] * 5


async def test_campaign_pushes_count_toward_the_caps_and_obey_them(
    api: LiveApi, push_service: PushService
) -> None:
    # min_gap 1h and per_subscriber 3/day (tests/campaigns/conftest.py POLICY).
    fresh, recent, busy = [await subscribe(api, push_service, topics=["food"]) for _ in range(3)]
    at = DAY + timedelta(hours=12)
    pool = api.ctx.pool
    for member, decided in [
        (recent, at - timedelta(minutes=30)),
        (busy, at - timedelta(hours=5)),
        (busy, at - timedelta(hours=4)),
        (busy, at - timedelta(hours=3)),
    ]:
        await insert_delivery(
            pool,
            uuid.UUID(member.id),
            rule_id="coffee",
            variant="",
            payload={},
            ttl_s=60,
            topic=None,
            status="sent",
            decided_at=decided,
            expires_at=decided + timedelta(minutes=1),
        )
    await create(api.ctx, body(send_at=at.isoformat()), at)
    await Clock(api.ctx, at).at(at)
    state = await statuses(pool, "lunch")
    assert state == {
        fresh.id: "sent",
        recent.id: "suppressed:min_gap",
        busy.id: "suppressed:global_cap",
    }


async def test_a_rule_push_and_a_campaign_push_compete_for_one_min_gap(
    api: LiveApi, push_service: PushService
) -> None:
    from service.worker import Worker
    from tests.worker.conftest import CAFE_A, Fix, add_signals

    # min_gap is 1h. Ana walks into the café at noon: the rule pushes. Ben does not.
    ana, ben = [
        await subscribe(api, push_service, timezone="Europe/Berlin", topics=["food"])
        for _ in range(2)
    ]
    pool = api.ctx.pool
    noon = DAY + timedelta(hours=11)
    await add_signals(pool, ana.id, [Fix(noon, *CAFE_A)])
    await Worker(api.ctx, clock=lambda: noon + timedelta(seconds=5)).drain()
    # Half an hour later the campaign: Ana is within the gap, Ben is not.
    at = noon + timedelta(minutes=30)
    await create(api.ctx, body(send_at=at.isoformat()), at)
    await Clock(api.ctx, at).at(at)
    assert await statuses(pool, "lunch") == {ana.id: "suppressed:min_gap", ben.id: "sent"}
    # Ten minutes later Ben walks in: the campaign's push keeps the rule's away.
    walk_in = at + timedelta(minutes=10)
    await add_signals(pool, ben.id, [Fix(walk_in, *CAFE_A)])
    await Worker(api.ctx, clock=lambda: walk_in + timedelta(seconds=5)).drain()
    rows = await pool.fetch(
        "SELECT subscription_id::text AS s, rule_id, campaign_id FROM deliveries ORDER BY id"
    )
    assert [(r["s"], r["rule_id"], r["campaign_id"]) for r in rows] == [
        (ana.id, "coffee", None),
        (ben.id, None, "lunch"),
    ]
    counters = await pool.fetch("SELECT counter, n FROM rule_counters WHERE rule_id = 'coffee'")
    assert {r["counter"]: r["n"] for r in counters}["suppressed:min_gap"] == 1
    async with api.http.get(f"{api.url}/v1/stats", headers=api.admin()) as r:
        stats = await r.json()
    [campaign] = stats["campaigns"]
    assert (campaign["id"], campaign["sent"], campaign["suppressed"]) == (
        "lunch",
        1,
        {"min_gap": 1},
    )
    assert all(row["rule"] == "coffee" for row in stats["rules"])


async def test_each_push_is_the_variant_and_locale_python_picks_rendered_as_python_does(
    api: LiveApi, push_service: PushService
) -> None:
    import json

    from service.campaigns.body import parse_campaign, render

    locales = ["de-AT", "de", "DE-CH", "fr", "en-GB", None, "de-at"] * 3
    members = {}
    for n, locale in enumerate(locales):
        attributes = {"name": f'<{n}> "quoted" \\ {"é" * 70}', "visits": n / 2}
        profile = {"locale": locale} if locale else {}
        member = await subscribe(
            api, push_service, topics=["food"], attributes=attributes, **profile
        )
        members[member.id] = (locale, attributes)
    at = DAY + timedelta(hours=12)
    data = body(
        send_at=at.isoformat(),
        message={
            "title": "Lunch, {attributes.name}",
            "body": "{attributes.visits} visits",
            "url": "https://example.com/{attributes.visits}",
            "locales": {"de": {"title": "Mittag, {attributes.name}"}},
            "actions": [{"action": "book", "title": "Book {attributes.visits}"}],
        },
        variants=[
            {"name": "a", "weight": 2},
            {"name": "none", "weight": 0},
            {"name": "b", "weight": 1, "message": {"locales": {"de-at": {"body": "Servus"}}}},
        ],
    )
    await create(api.ctx, data, at)
    await Clock(api.ctx, at).fanout.drain()
    campaign = parse_campaign(json.dumps(data), now=at)
    rows = await api.ctx.pool.fetch(
        "SELECT subscription_id::text AS s, variant, payload FROM deliveries"
    )
    assert len(rows) == len(locales)
    for row in rows:
        locale, attributes = members[row["s"]]
        variant = campaign.variant_for(row["s"])
        assert row["variant"] == variant.name
        assert row["payload"] == render(variant.message_for(locale), attributes)
    assert {r["variant"] for r in rows} == {"a", "b"}


async def test_a_campaign_that_cannot_be_ticked_waits_a_minute_and_stops_no_other(
    api: LiveApi, push_service: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import fanout

    member = await subscribe(api, push_service, topics=["food"])
    at = DAY + timedelta(hours=12)
    await create(api.ctx, body("broken", send_at=at.isoformat()), at)
    await create(api.ctx, body("fine", send_at=at.isoformat()), at)
    from service.campaigns.plan import plan_tick as real

    calls: list[object] = []

    def plan(send_at: Any, **kwargs: Any) -> Any:
        calls.append(send_at)
        if len(calls) == 1:  # the first due campaign: "broken", by id
            raise ValueError("a campaign the fan-out cannot plan")
        return real(send_at, **kwargs)

    monkeypatch.setattr(fanout, "plan_tick", plan)
    await Clock(api.ctx, at).at(at)
    rows = await api.ctx.pool.fetch("SELECT id, status, next_check_at FROM campaigns ORDER BY id")
    state = {r["id"]: (r["status"], r["next_check_at"]) for r in rows}
    assert state["broken"] == ("scheduled", at + fanout.RETRY_FAILED)
    assert state["fine"][0] in ("sending", "done")
    assert len(member.campaign_pushes()) == 1


async def test_engagement_with_campaign_pushes_counts_in_the_campaigns_results(
    api: LiveApi, push_service: PushService
) -> None:
    members = [await subscribe(api, push_service, topics=["food"]) for _ in range(4)]
    at = DAY + timedelta(hours=12)
    variants = [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]
    await create(api.ctx, body(send_at=at.isoformat(), variants=variants), at)
    await Clock(api.ctx, at).at(at)
    expected: dict[str, dict[str, int]] = {"a": {}, "b": {}}
    for i, member in enumerate(members):
        [push] = member.campaign_pushes()
        data = push["data"]
        kinds = ["shown"] + (["clicked"] if i % 2 == 0 else [])
        for kind in kinds:
            async with api.http.post(
                f"{api.url}/v1/events",
                json={
                    "delivery_id": data["delivery_id"],
                    "token": data["event_token"],
                    "type": kind,
                },
            ) as r:
                assert r.status == 202, await r.text()
            counts = expected[data["variant"]]
            counts[kind] = counts.get(kind, 0) + 1
    async with api.http.get(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        result = await r.json()
    assert (result["sent"], result["shown"], result["clicked"]) == (4, 4, 2)
    assert result["ctr"] == 0.5
    for v in result["variants"]:
        assert v["shown"] == expected[v["variant"]].get("shown", 0)
        assert v["clicked"] == expected[v["variant"]].get("clicked", 0)
    assert result["experiment"]["variants"] == ["a", "b"]
    assert result["experiment"]["winner"] is None  # four pushes are no sample
    async with api.http.get(f"{api.url}/v1/stats", headers=api.admin()) as r:
        stats = await r.json()
    assert [c["id"] for c in stats["campaigns"]] == ["lunch"]
    assert all(row["rule"] != "lunch" for row in stats["rules"])
