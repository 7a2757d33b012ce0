"""Send-time optimisation (send_at.optimal) against a real PostgreSQL and the strict test push
service, on the fan-out's controlled clock: each subscriber's planned hour in three time zones,
the fallback, quiet hours moving a chosen hour to the window's edge, the schedule in the dry
run, GET and the CLI, and the 422s."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from service.campaigns import usecases
from service.rules.units import parse_window
from service.store.campaigns import CampaignRow
from service.testing import PushService
from tests.api.conftest import assert_error
from tests.campaigns.conftest import Clock, Member, body, campaign_cli, statuses, subscribe
from tests.conftest import LiveApi
from tests.factories import insert_delivery, insert_subscription

DAY = datetime(2026, 11, 24, tzinfo=UTC)  # the campaign is created at 00:00 UTC
SEND_DAY = "2026-11-25"  # and sends on the next day
QUIET = parse_window("21:00-08:00")  # tests/campaigns/conftest.py's policy


def local(zone: str | None, hour: int, minute: int = 0, day: str = SEND_DAY) -> datetime:
    """A local time of ``day`` in ``zone`` (UTC for None), as UTC."""
    tz = ZoneInfo(zone) if zone else UTC
    return datetime.combine(date.fromisoformat(day), time(hour, minute), tzinfo=tz).astimezone(UTC)


async def interactions(
    pool: asyncpg.Pool,
    subscription: str,
    zone: str | None,
    hours: Sequence[int],
    *,
    before: datetime = DAY,
    kind: str = "clicked",
    test: bool = False,
) -> None:
    """One sent push a day before ``before``, clicked (or converted) at each local hour."""
    tz = ZoneInfo(zone) if zone else UTC
    for n, hour in enumerate(hours, start=1):
        day = (before - timedelta(days=n)).astimezone(tz).date()
        at = datetime.combine(day, time(hour, 17), tzinfo=tz)
        delivery = await insert_delivery(
            pool,
            uuid.UUID(subscription),
            status="sent",
            test=test,
            decided_at=at - timedelta(minutes=5),
            created_at=at - timedelta(minutes=5),
        )
        await pool.execute(
            "INSERT INTO events (delivery_id, type, at) VALUES ($1, $2, $3)", delivery, kind, at
        )


def optimal(campaign_id: str = "evening", **send_at: Any) -> dict[str, Any]:
    return body(campaign_id, send_at={"optimal": SEND_DAY, **send_at}, ttl="30m")


async def create(api: LiveApi, campaign: dict[str, Any], *, now: datetime = DAY) -> CampaignRow:
    """What POST /v1/campaigns does, at the test's ``now``, with the policy's quiet hours."""
    return await usecases.create(api.ctx.store, json.dumps(campaign), now=now, quiet=QUIET)


async def post(api: LiveApi, data: Any, query: str = "") -> tuple[int, Any]:
    async with api.http.post(
        f"{api.url}/v1/campaigns{query}",
        data=json.dumps(data),
        headers={**api.admin(), "Content-Type": "application/json"},
    ) as r:
        return r.status, await r.json()


async def show(api: LiveApi, campaign_id: str) -> Any:
    async with api.http.get(f"{api.url}/v1/campaigns/{campaign_id}", headers=api.admin()) as r:
        assert r.status == 200
        return await r.json()


async def planned(pool: asyncpg.Pool, campaign_id: str) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT subscription_id::text AS s, local_hour FROM campaign_send_hours "
        "WHERE campaign_id = $1",
        campaign_id,
    )
    return {r["s"]: r["local_hour"] for r in rows}


async def decided(pool: asyncpg.Pool, campaign_id: str) -> dict[str, datetime]:
    rows = await pool.fetch(
        "SELECT subscription_id::text AS s, decided_at FROM deliveries WHERE campaign_id = $1",
        campaign_id,
    )
    return {r["s"]: r["decided_at"] for r in rows}


async def test_each_subscriber_gets_the_push_at_their_own_hour_in_three_time_zones(
    api: LiveApi, push_service: PushService
) -> None:
    pool = api.ctx.pool

    async def member(zone: str | None, hours: Sequence[int], kind: str = "clicked") -> Member:
        m = await subscribe(
            api, push_service, timezone=zone, topics=["food"], attributes={"name": "N"}
        )
        await interactions(pool, m.id, zone, hours, kind=kind)
        return m

    tokyo = await member("Asia/Tokyo", [9, 9, 9, 9])  # mornings
    berlin = await member("Europe/Berlin", [19, 19, 19, 10], kind="converted")  # evenings
    new_york = await member("America/New_York", [12, 12, 12, 12, 12])  # lunch
    few = await member("Europe/Berlin", [19, 19])  # two interactions: the fallback
    nobody = await member(None, [])  # no history, no time zone: the fallback in UTC
    old = await member("Asia/Tokyo", [])  # interactions older than 90 days count for nothing
    await interactions(pool, old.id, "Asia/Tokyo", [18, 18, 18], before=DAY - timedelta(days=91))
    # Clicks on test pushes (the operator's) count for nothing either.
    await interactions(pool, old.id, "Asia/Tokyo", [18, 18, 18], test=True)

    row = await create(api, optimal(window="08:00-21:00", fallback="14:30"))
    assert row.audience_n == 6
    assert await planned(pool, "evening") == {tokyo.id: 9, berlin.id: 19, new_york.id: 12}
    shown = await show(api, "evening")
    assert shown["send_at"] == {
        "optimal": SEND_DAY,
        "window": "08:00-21:00",
        "fallback": "14:30",
        "late": "skip",
    }
    assert shown["schedule"] == {
        "personal": 3,
        "fallback": 3,
        "by_local_hour": {"09": 1, "12": 1, "14": 3, "19": 1},
    }

    expected = {
        tokyo.id: local("Asia/Tokyo", 9),
        berlin.id: local("Europe/Berlin", 19),
        new_york.id: local("America/New_York", 12),
        few.id: local("Europe/Berlin", 14, 30),
        nobody.id: local(None, 14, 30),
        old.id: local("Asia/Tokyo", 14, 30),
    }
    members = {m.id: m for m in (tokyo, berlin, new_york, few, nobody, old)}
    clock = Clock(api.ctx, DAY)
    for moment in sorted(set(expected.values())):
        due = {s for s, at in expected.items() if at == moment}
        # A tick a minute before (as a rescan would run one) sends nothing early...
        await clock.at(moment - timedelta(minutes=1), force=True)
        assert set(await decided(pool, "evening")) == {
            s for s, at in expected.items() if at < moment
        }
        # ...and at the moment, exactly those whose moment it is get their push.
        await clock.at(moment)
        assert {s for s, at in (await decided(pool, "evening")).items() if at == moment} == due
        for s in due:
            [push] = members[s].campaign_pushes()
            assert push["data"]["campaign"] == "evening"
    assert await decided(pool, "evening") == expected
    await clock.at(local("America/New_York", 23), force=True)
    assert (await show(api, "evening"))["status"] == "done"


async def test_quiet_hours_move_a_chosen_hour_to_the_nearest_edge_of_the_window(
    api: LiveApi, push_service: PushService
) -> None:
    # The policy's quiet hours are 21:00-08:00; the window allows 06:00-23:00.
    pool = api.ctx.pool
    owl = await subscribe(api, push_service, timezone="Europe/Berlin", topics=["food"])
    await interactions(pool, owl.id, "Europe/Berlin", [22, 22, 22, 23])
    lark = await subscribe(api, push_service, timezone="Asia/Tokyo", topics=["food"])
    await interactions(pool, lark.id, "Asia/Tokyo", [6, 6, 6])
    day = await subscribe(api, push_service, timezone="Asia/Tokyo", topics=["food"])
    await interactions(pool, day.id, "Asia/Tokyo", [15, 15, 15])

    await create(api, optimal(window="06:00-23:00", fallback="12:00"))
    # 22:00 is quiet: the nearest allowed hour is 20:00, the window's last before the quiet
    # hours; 06:00 moves to 08:00, their end. 15:00 stays.
    assert await planned(pool, "evening") == {owl.id: 20, lark.id: 8, day.id: 15}
    assert (await show(api, "evening"))["schedule"]["by_local_hour"] == {
        "08": 1,
        "15": 1,
        "20": 1,
    }
    # Someone who joins the audience after the plan was made goes at the fallback.
    joiner = await subscribe(api, push_service, timezone="Asia/Tokyo", topics=["food"])
    await interactions(pool, joiner.id, "Asia/Tokyo", [9, 9, 9, 9])
    clock = Clock(api.ctx, DAY)
    for moment in sorted(
        [
            local("Asia/Tokyo", 8),
            local("Asia/Tokyo", 12),
            local("Asia/Tokyo", 15),
            local("Europe/Berlin", 20),
        ]
    ):
        await clock.at(moment)
    await clock.at(local("Europe/Berlin", 23), force=True)
    assert await decided(pool, "evening") == {
        lark.id: local("Asia/Tokyo", 8),
        day.id: local("Asia/Tokyo", 15),
        owl.id: local("Europe/Berlin", 20),
        joiner.id: local("Asia/Tokyo", 12),
    }
    assert len(owl.campaign_pushes()) == len(lark.campaign_pushes()) == 1


async def test_a_moment_passed_at_creation_is_skipped_or_sent_as_late_says(
    api: LiveApi, push_service: PushService
) -> None:
    pool = api.ctx.pool
    # Created at 09:00 UTC (18:00 in Tokyo) on the day: Tokyo's 09:00 has passed, Berlin's 19:00
    # has not. One audience per campaign (the policy's min_gap would hold a second push).
    created = local(None, 9)
    members: dict[str, tuple[Member, Member]] = {}
    for late in ("skip", "send"):
        tokyo, berlin = [
            await subscribe(api, push_service, timezone=zone, topics=[late])
            for zone in ("Asia/Tokyo", "Europe/Berlin")
        ]
        await interactions(pool, tokyo.id, "Asia/Tokyo", [9, 9, 9], before=created)
        await interactions(pool, berlin.id, "Europe/Berlin", [19, 19, 19], before=created)
        members[late] = (tokyo, berlin)
        campaign = optimal(f"late-{late}", late=late) | {"audience": {"topics": [late]}}
        await create(api, campaign, now=created)
    clock = Clock(api.ctx, created)
    await clock.at(created)
    await clock.at(local("Europe/Berlin", 19))
    tokyo, berlin = members["skip"]
    assert await statuses(pool, "late-skip") == {
        tokyo.id: "suppressed:missed_local_time",
        berlin.id: "sent",
    }
    assert (await decided(pool, "late-skip"))[berlin.id] == local("Europe/Berlin", 19)
    tokyo, berlin = members["send"]
    assert await decided(pool, "late-send") == {
        tokyo.id: created,
        berlin.id: local("Europe/Berlin", 19),
    }
    assert await statuses(pool, "late-send") == {tokyo.id: "sent", berlin.id: "sent"}


async def test_the_dry_run_shows_the_schedule_and_stores_nothing(
    api: LiveApi, push_service: PushService
) -> None:
    pool = api.ctx.pool
    now = datetime.now(UTC)
    soon = (now + timedelta(days=2)).date().isoformat()
    reader = await subscribe(api, push_service, timezone="Europe/Berlin", topics=["food"])
    await interactions(pool, reader.id, "Europe/Berlin", [9, 9, 9], before=now)
    await subscribe(api, push_service, timezone="Europe/Berlin", topics=["food"])
    status, dry = await post(api, optimal(optimal=soon), "?dry_run=true")
    assert status == 200, dry
    assert dry["send_at"] == {
        "optimal": soon,
        "window": "08:00-21:00",
        "fallback": "14:30",
        "late": "skip",
    }
    assert dry["schedule"] == {"personal": 1, "fallback": 1, "by_local_hour": {"09": 1, "14": 1}}
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0
    assert await pool.fetchval("SELECT count(*) FROM campaign_send_hours") == 0
    # Other campaigns have no schedule.
    status, dry = await post(api, body(send_at={"local": f"{soon}T12:00"}), "?dry_run=true")
    assert (status, dry["schedule"]) == (200, None)


async def test_bad_windows_fallbacks_and_days_are_422_naming_the_field_and_store_nothing(
    api: LiveApi, push_service: PushService
) -> None:
    await subscribe(api, push_service, timezone="Europe/Berlin", topics=["food"])
    soon = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"window": "9-21"}, "send_at.window", "HH:MM-HH:MM"),
        ({"window": "21:00-08:00"}, "send_at.window", "start before end"),
        ({"window": "08:00-21:00", "fallback": "22:00"}, "send_at.fallback", "outside the window"),
        ({"fallback": "noon"}, "send_at.fallback", "HH:MM"),
        ({"window": "08:10-08:50"}, "send_at.window", "no whole hour"),
        # The policy's quiet hours are 21:00-08:00.
        ({"window": "21:00-23:30", "fallback": "22:00"}, "send_at.window", "quiet hours"),
        ({"optimal": "2026-02-30"}, "send_at.optimal", "not a date"),
        ({"optimal": "25.11.2026"}, "send_at.optimal", "YYYY-MM-DD"),
        ({"optimal": "2020-01-01"}, "send_at.optimal", "has passed"),
        ({"late": "later"}, "send_at.late", ""),
        ({"hour": 9}, "send_at.hour", ""),
    ]
    for send_at, field, message in cases:
        for query in ("", "?dry_run=true"):
            status, error = await post(api, body(send_at={"optimal": soon, **send_at}), query)
            assert status == 422, (send_at, error)
            assert_error(error, 422, "invalid", "")
            fields = {d["field"]: d["message"] for d in error["error"]["details"]}
            assert field in fields and message in fields[field], (send_at, error)
    assert await api.ctx.pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_the_cli_shows_the_schedule(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    now = datetime.now(UTC)
    send_day = (now + timedelta(days=3)).date().isoformat()
    ids = [
        await insert_subscription(
            clean_db, endpoint=f"https://push.example/{n}", timezone="Asia/Tokyo", topics=["food"]
        )
        for n in range(2)
    ]
    await interactions(clean_db, str(ids[0]), "Asia/Tokyo", [10, 10, 10, 10], before=now)
    file = tmp_path / "evening.yaml"
    file.write_text(
        "id: evening\naudience: {topics: [food]}\nmessage: {title: Tonight}\n"
        f'send_at: {{optimal: "{send_day}", window: "09:00-20:00"}}\n'
    )
    code, out, err = campaign_cli(["send", str(file), "--dry-run"], tmp_path, database_url)
    assert code == 0, err
    assert "schedule: 1 personal, 1 fallback; by local hour: 10:00 1, 14:00 1" in out, out
    code, out, err = campaign_cli(["send", str(file)], tmp_path, database_url)
    assert code == 0, err
    code, out, err = campaign_cli(["show", "evening"], tmp_path, database_url)
    assert code == 0, err
    assert f"each subscriber's best local hour of {send_day} within 09:00-20:00, else 14:30" in out
    assert "schedule: 1 personal, 1 fallback; by local hour: 10:00 1, 14:00 1" in out
    code, out, err = campaign_cli(["show", "evening", "--json"], tmp_path, database_url)
    assert json.loads(out)["schedule"]["by_local_hour"] == {"10": 1, "14": 1}
    file.write_text(file.read_text().replace("09:00-20:00", "22:00-23:00"))
    code, out, err = campaign_cli(["send", str(file)], tmp_path, database_url)
    assert code == 1 and "send_at.window" in err and "quiet hours" in err, err


async def test_an_optimal_experiment_tests_and_decides_at_each_members_own_hour(
    api: LiveApi, push_service: PushService
) -> None:
    # Morning readers (09:00 Berlin, 08:00 UTC) start the test; the decision comes 2 h later,
    # when the morning rest's hour has passed (late: skip). The evening readers (19:00) are
    # still to come: their test share gets the variants, their rest the winner.
    pool = api.ctx.pool
    morning: list[Member] = []
    evening: list[Member] = []
    for hour, group in ((9, morning), (19, evening)):
        for _ in range(12):
            m = await subscribe(api, push_service, timezone="Europe/Berlin", topics=["food"])
            await interactions(pool, m.id, "Europe/Berlin", [hour] * 4)
            group.append(m)
    campaign = optimal() | {
        "variants": [
            {"name": "a", "weight": 1},
            {"name": "b", "weight": 1, "message": {"title": "B"}},
        ],
        "experiment": {"test_share": 0.5, "decide_after": "2h", "metric": "clicked"},
    }
    await create(api, campaign)
    assert (await show(api, "evening"))["schedule"]["by_local_hour"] == {"09": 12, "19": 12}
    clock = Clock(api.ctx, DAY)
    for moment in (
        local("Europe/Berlin", 9),
        local("Europe/Berlin", 11),
        local("Europe/Berlin", 19),
    ):
        await clock.at(moment)
    await clock.at(local("Europe/Berlin", 23), force=True)
    state = await statuses(pool, "evening")
    sent_at = await decided(pool, "evening")
    morning_sent = [m for m in morning if state[m.id] == "sent"]
    assert morning_sent, "the morning's test share got its pushes"
    assert {state[m.id] for m in morning if m not in morning_sent} == {
        "suppressed:missed_local_time"
    }
    assert {sent_at[m.id] for m in morning_sent} == {local("Europe/Berlin", 9)}
    assert all(state[m.id] == "sent" for m in evening)
    assert {sent_at[m.id] for m in evening} == {local("Europe/Berlin", 19)}
    assert all(len(m.campaign_pushes()) <= 1 for m in morning + evening)
    shown = (await show(api, "evening"))["experiment"]
    assert shown["phase"] == "decided" and shown["winner"] in ("a", "b")


async def test_a_click_that_converts_is_one_interaction_not_two(
    api: LiveApi, push_service: PushService
) -> None:
    """Two pushes, each clicked and then converted, are two answers: under the 3 a personal
    hour needs (four events would have made one)."""
    pool = api.ctx.pool
    both = await subscribe(api, push_service, timezone="Asia/Tokyo", topics=["food"])
    await interactions(pool, both.id, "Asia/Tokyo", [9, 9])
    for delivery in await pool.fetch(
        "SELECT delivery_id FROM events WHERE delivery_id IN "
        "(SELECT id FROM deliveries WHERE subscription_id = $1)",
        uuid.UUID(both.id),
    ):
        await pool.execute(
            "INSERT INTO events (delivery_id, type, at) "
            "SELECT delivery_id, 'converted', at + interval '1 minute' FROM events "
            "WHERE delivery_id = $1",
            delivery["delivery_id"],
        )
    three = await subscribe(api, push_service, timezone="Asia/Tokyo", topics=["food"])
    await interactions(pool, three.id, "Asia/Tokyo", [9, 9, 9])

    await create(api, optimal(window="08:00-21:00", fallback="14:30"))
    assert await planned(pool, "evening") == {three.id: 9}
