"""Nothing grows forever: shadow rules' would-be sends follow SIGNAL_RETENTION, and deliveries,
events and campaign suppressions older than DELIVERY_RETENTION are rolled up into daily counts
and deleted, with every statistic the API and the dashboard show unchanged."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from service import maintenance, tokens
from service.api import create_app
from service.context import Context
from service.store.db import q
from service.vocabulary import CAMPAIGN_SUPPRESSION_REASONS, DELIVERY_STATUSES, EVENT_TYPES
from service.worker import Worker
from tests.conftest import LiveApi, make_settings, start_app
from tests.worker.conftest import (
    CAFE_A,
    COFFEE,
    Fix,
    add_signals,
    add_subscription,
    context_for,
    write_rules,
)

PROMO = """
priority: 5
trigger: enter
where: {places: places/cafes.geojson, radius_m: 60}
message:
  title: "Espresso at {place.name}"
  url: "https://example.com/espresso"
  ttl: 20m
  actions:
    - {action: menu, title: "Menu", url: "https://example.com/menu"}
    - {action: map, title: "Map", url: "https://example.com/map"}
variants:
  - {name: a, weight: 50}
  - {name: b, weight: 50, message: {title: "Espresso break?"}}
"""

SHADOW = """
priority: 20
mode: shadow
trigger: inside
where: {places: places/cafes.geojson, radius_m: 60}
message: {title: "Cake at {place.name}?", ttl: 20m}
limits: {per_subscriber: 1/day}
"""

# Older than this is rolled up: 10 days is longer than the rules' history window (the coffee
# rule's per_place 1/week and a day), which the roll-up never cuts into.
RETENTION = timedelta(days=10)
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
# Days of traffic, relative to today (UTC): four of them older than the retention.
OLD_DAYS = (-16, -14, -13, -11)
LIVE_DAYS = (-9, -3, -1, 0)
SIGNAL_RETENTION = timedelta(hours=24)  # the default


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return write_rules(tmp_path / "rules", rules={"coffee": COFFEE, "promo": PROMO, "cake": SHADOW})


@pytest.fixture
def wctx(data_dir: Path, database_url: str, clean_db: asyncpg.Pool, rules_dir: Path) -> Context:
    settings = make_settings(data_dir, database_url, delivery_retention=RETENTION)
    return context_for(settings, clean_db, rules_dir)


@pytest.fixture
async def wapi(wctx: Context) -> AsyncIterator[LiveApi]:
    runner, url = await start_app(create_app(wctx))
    async with aiohttp.ClientSession() as http:
        yield LiveApi(url, http, wctx)
    await runner.cleanup()


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.1)


# --- (a) shadow sends follow SIGNAL_RETENTION ---------------------------------------------


async def test_maintenance_purges_old_shadow_sends_of_a_subscriber_who_never_sends_again(
    wctx: Context,
) -> None:
    pool = wctx.pool
    retention = wctx.settings.signal_retention
    # A subscriber inside café A three days ago: the shadow rule would have pushed; nothing
    # from them since, so the worker never looks at their shadow sends again.
    quiet = await add_subscription(pool)
    then = datetime.now(UTC) - retention - timedelta(days=2)
    await add_signals(pool, quiet, [Fix(then, *CAFE_A)])
    assert await Worker(wctx, clock=lambda: then).drain() == 1
    # And one inside it an hour ago, well within SIGNAL_RETENTION.
    recent = await add_subscription(pool)
    lately = datetime.now(UTC) - timedelta(hours=1)
    await add_signals(pool, recent, [Fix(lately, *CAFE_A)])
    assert await Worker(wctx, clock=lambda: lately).drain() == 1
    kept = "SELECT subscription_id::text AS s, decided_at FROM shadow_sends ORDER BY decided_at"
    assert [r["s"] for r in await pool.fetch(kept)] == [quiet, recent]

    async def only_recent_left() -> bool:
        return [r["s"] for r in await pool.fetch(kept)] == [recent]

    stop = asyncio.Event()
    job = asyncio.create_task(maintenance.run(wctx, stop))
    try:
        await wait_for(only_recent_left)
    finally:
        stop.set()
        await job
    assert [r["decided_at"] for r in await pool.fetch(kept)] == [lately]


# --- (b) and (c) the roll-up ---------------------------------------------------------------


async def admin_get(api: LiveApi, path: str) -> tuple[int, str]:
    async with api.http.get(api.url + path, headers=api.admin()) as r:
        return r.status, await r.text()


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).date().isoformat()


# Periods of the per-place views: everything, only rolled-up days, rolled-up and live days,
# a single rolled-up day, and only live days.
PERIODS = (
    (day(-30), day(1)),
    (day(-17), day(-10)),
    (day(-14), day(-2)),
    (day(-13), day(-12)),
    (day(-9), day(1)),
)


async def views(api: LiveApi) -> dict[str, Any]:
    """Every statistic of the API and the dashboard, as served."""
    out: dict[str, Any] = {}
    paths = ["/v1/stats", "/v1/dashboard", "/v1/campaigns"]
    for since, until in PERIODS:
        paths.append(f"/v1/stats/places?from={since}&to={until}")
        paths.append(f"/v1/stats.csv?from={since}&to={until}")
    for path in paths:
        status, text = await admin_get(api, path)
        assert status == 200, (path, text)
        out[path] = text if path.startswith("/v1/stats.csv") else json.loads(text)
    # The dashboard's default period ends now: its rows, not its bounds, must stay the same.
    status, text = await admin_get(api, "/v1/stats/places")
    assert status == 200, text
    out["/v1/stats/places"] = json.loads(text)["places"]
    for campaign in out["/v1/campaigns"]["campaigns"]:
        path = "/v1/campaigns/" + campaign["id"]
        status, text = await admin_get(api, path)
        assert status == 200, text
        out[path] = json.loads(text)
    return out


async def create_campaign(api: LiveApi, campaign_id: str, variants: list[str] | None) -> None:
    body: dict[str, Any] = {
        "id": campaign_id,
        "audience": {"topics": ["food"]},
        "message": {
            "title": "Lunch",
            "body": "2-for-1",
            "url": "https://example.com/lunch",
            "actions": [{"action": "menu", "title": "Menu", "url": "https://example.com/m"}],
        },
        "send_at": (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0).isoformat(),
        "ttl": "2h",
    }
    if variants:
        body["variants"] = [{"name": v, "weight": 1} for v in variants]
    async with api.http.post(api.url + "/v1/campaigns", json=body, headers=api.admin()) as r:
        assert r.status == 201, await r.text()


STATUSES = ("sent", "sent", "sent", *(s for s in DELIVERY_STATUSES if s != "pending"))
# Every event type and outcome there is: a new one the roll-up does not keep changes a view.
EVENTS = EVENT_TYPES


async def insert_delivery(
    pool: asyncpg.Pool,
    rng: random.Random,
    *,
    subscription: str | None,
    at: datetime,
    rule: str | None = None,
    campaign: str | None = None,
    variant: str = "",
    place: str | None = None,
    status: str | None = None,
    test: bool = False,
) -> int:
    status = status or rng.choice(STATUSES)
    hour = None if subscription is None or campaign else rng.choice([None, 8, 12, 12, 18])
    delivery_id: int = await pool.fetchval(
        "INSERT INTO deliveries (subscription_id, rule_id, campaign_id, variant, place_id,"
        " payload, local_hour, ttl_s, status, created_at, decided_at, expires_at, test)"
        " VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, 1200, $8, $9::timestamptz, $9,"
        " $9 + interval '20 min', $10) RETURNING id",
        subscription,
        rule,
        campaign,
        variant,
        place,
        None if subscription is None else {"title": "t"},
        hour,
        status,
        at,
        test,
    )
    if status in ("sent", "pending"):
        for kind in EVENTS:
            if rng.random() < 0.5:
                action = rng.choice([None, None, "menu", "map"]) if kind == "clicked" else None
                await pool.execute(
                    "INSERT INTO events (delivery_id, type, action, at) VALUES ($1, $2, $3, $4)",
                    delivery_id,
                    kind,
                    action,
                    at + timedelta(minutes=5),
                )
    return delivery_id


async def build_history(api: LiveApi, seed: int = 20) -> None:
    """Several days of pushes of every kind and fate, some of them older than RETENTION."""
    pool = api.ctx.pool
    rng = random.Random(seed)
    subscribers = [await add_subscription(pool, topics=["food"]) for _ in range(6)]
    await create_campaign(api, "spring", ["x", "y"])
    await create_campaign(api, "autumn", None)
    await create_campaign(api, "running", ["x", "y"])
    # Shadow rule counters and would-be sends, as the worker leaves them.
    await pool.execute(
        "INSERT INTO rule_counters (rule_id, variant, counter, n) VALUES"
        " ('cake', '', 'matched', 9), ('cake', '', 'shadow_sent', 4),"
        " ('cake', '', 'suppressed:rule_cap', 5), ('promo', 'a', 'matched', 40),"
        " ('promo', 'b', 'matched', 38), ('coffee', '', 'matched', 30)"
    )
    for offset in OLD_DAYS + LIVE_DAYS:
        base = TODAY + timedelta(days=offset)
        for _ in range(14):
            at = base + timedelta(hours=rng.randrange(24), minutes=rng.randrange(60))
            sub = rng.choice([*subscribers, None])  # None: erased since
            place = None if sub is None else rng.choice(["a", "b"])
            rule, variant = rng.choice([("promo", "a"), ("promo", "b"), ("coffee", "")])
            await insert_delivery(
                pool, rng, subscription=sub, at=at, rule=rule, variant=variant, place=place
            )
            campaign, variants = rng.choice([("spring", "xy"), ("autumn", ["default"])])
            await insert_delivery(
                pool, rng, subscription=sub, at=at, campaign=campaign, variant=rng.choice(variants)
            )
            await insert_delivery(
                pool, rng, subscription=sub, at=at, campaign="running", variant=rng.choice("xy")
            )
        # A test push and a push still waiting to be sent (an old one: a lost sender).
        await insert_delivery(
            pool, rng, subscription=subscribers[0], at=base, rule="promo", variant="a", test=True
        )
        await insert_delivery(
            pool, rng, subscription=subscribers[1], at=base, rule="coffee", place="a",
            status="pending",
        )  # fmt: skip
        await pool.execute(
            "INSERT INTO shadow_sends (subscription_id, rule_id, place_id, decided_at)"
            " VALUES ($1::uuid, 'cake', 'a', $2)",
            subscribers[2],
            base,
        )
    # Campaigns' suppressions: one row per (campaign, subscriber); some without a subscriber
    # (erased).
    for campaign, variants in (("spring", "xy"), ("autumn", ["default"]), ("running", "xy")):
        for n, sub in enumerate([*subscribers, None, None]):
            offset = (OLD_DAYS + LIVE_DAYS)[n % 8]
            await pool.execute(
                "INSERT INTO campaign_suppressions (campaign_id, subscription_id, variant,"
                " reason, at) VALUES ($1, $2::uuid, $3, $4, $5)",
                campaign,
                sub,
                rng.choice(variants),
                rng.choice(CAMPAIGN_SUPPRESSION_REASONS),
                TODAY + timedelta(days=offset, hours=n),
            )
    await pool.execute("UPDATE campaigns SET status = 'done' WHERE id = 'spring'")
    await pool.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = 'autumn'")
    await pool.execute("UPDATE campaigns SET status = 'sending' WHERE id = 'running'")


CUTOFF = TODAY - RETENTION  # midnight UTC: whole days before it are rolled up


async def old_rows(pool: asyncpg.Pool) -> dict[str, int]:
    """What is older than the cutoff and still stored, by kind."""
    return {
        "rule deliveries": await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE created_at < $1 AND rule_id IS NOT NULL"
            " AND status <> 'pending'",
            CUTOFF,
        ),
        "pending": await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE created_at < $1 AND status = 'pending'",
            CUTOFF,
        ),
        "finished campaigns' deliveries": await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE created_at < $1"
            " AND campaign_id IN ('spring', 'autumn')",
            CUTOFF,
        ),
        "running campaign's deliveries": await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE created_at < $1 AND campaign_id = 'running'",
            CUTOFF,
        ),
        "events": await pool.fetchval(
            "SELECT count(*) FROM events e JOIN deliveries d ON d.id = e.delivery_id"
            " WHERE d.created_at < $1 AND d.status <> 'pending' AND d.campaign_id IS DISTINCT"
            " FROM 'running'",
            CUTOFF,
        ),
        "finished campaigns' suppressions": await pool.fetchval(
            "SELECT count(*) FROM campaign_suppressions WHERE at < $1"
            " AND campaign_id IN ('spring', 'autumn')",
            CUTOFF,
        ),
        "running campaign's suppressions": await pool.fetchval(
            "SELECT count(*) FROM campaign_suppressions WHERE at < $1 AND campaign_id = 'running'",
            CUTOFF,
        ),
        "shadow sends": await pool.fetchval(
            "SELECT count(*) FROM shadow_sends WHERE decided_at < now() - $1::interval",
            SIGNAL_RETENTION,
        ),
    }


async def test_the_roll_up_keeps_every_statistic_and_deletes_the_old_rows(wapi: LiveApi) -> None:
    pool = wapi.ctx.pool
    await build_history(wapi)
    before_rows = await old_rows(pool)
    assert all(before_rows.values()), before_rows
    before = await views(wapi)

    await maintenance.run_once(wapi.ctx)

    after = await views(wapi)
    for path in before:
        assert after[path] == before[path], path
    assert await old_rows(pool) == {
        "rule deliveries": 0,
        # A push not sent yet is still the outbox's: it is rolled up once it has a fate.
        "pending": before_rows["pending"],
        "finished campaigns' deliveries": 0,
        # A campaign still fanning out needs its rows to hand each member one push.
        "running campaign's deliveries": before_rows["running campaign's deliveries"],
        "events": 0,
        "finished campaigns' suppressions": 0,
        "running campaign's suppressions": before_rows["running campaign's suppressions"],
        "shadow sends": 0,
    }
    # The live days are all still there.
    assert await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE created_at >= $1", CUTOFF
    ) == 4 * (14 * 3 + 2)
    # The daily counts name no subscriber: an erasure has nothing to erase there.
    rolled = await rollup_tables(pool)
    assert all(rolled.values()), rolled
    for r in await pool.fetch("SELECT id::text, endpoint FROM subscriptions"):
        for table in rolled:
            hits = await pool.fetchval(
                f"SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"
                " OR t::text LIKE '%' || $2 || '%'",
                r["id"],
                r["endpoint"],
            )
            assert hits == 0, table
    # Nothing left to do.
    again = await maintenance.run_once(wapi.ctx)
    assert (again.rollup, again.shadow_sends) == (maintenance.RollUp(), 0)
    assert await views(wapi) == before


async def rollup_tables(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("rule_delivery_days", "rule_hour_days", "rule_click_days",
              "campaign_delivery_days", "campaign_suppression_days")  # fmt: skip
    return {t: sorted(tuple(r) for r in await pool.fetch(f"SELECT * FROM {t}")) for t in tables}


async def test_concurrent_and_repeated_roll_ups_count_each_row_once(wapi: LiveApi) -> None:
    pool = wapi.ctx.pool
    await build_history(wapi, seed=7)
    before = await views(wapi)
    # Four processes' maintenance at once, in small batches so that they take turns.
    runs = list(
        await asyncio.gather(
            *(maintenance.roll_up(wapi.ctx, batch_size=9, max_batches=1000) for _ in range(4))
        )
    )
    # Whatever they left (one of them holds the lock at a time), later passes take.
    while True:
        runs.append(await maintenance.roll_up(wapi.ctx, batch_size=9, max_batches=1000))
        if runs[-1] == maintenance.RollUp():
            break
    # Each deleted row is counted once: the roll-up's counts add up to what was deleted.
    rolled_deliveries = await pool.fetchval(
        "SELECT (SELECT sum(deliveries) FROM rule_delivery_days)"
        " + (SELECT sum(deliveries) FROM campaign_delivery_days)"
    )
    test_pushes = len(OLD_DAYS)  # deleted, counted in no statistic
    assert sum(r.deliveries for r in runs) == rolled_deliveries + test_pushes
    assert sum(r.suppressions for r in runs) == await pool.fetchval(
        "SELECT sum(n) FROM campaign_suppression_days"
    )
    rolled = await rollup_tables(pool)
    assert all(rolled.values()), rolled
    assert await views(wapi) == before
    # Again, and again at once: nothing changes.
    again = await asyncio.gather(*(maintenance.roll_up(wapi.ctx) for _ in range(3)))
    assert all(r.deliveries == r.suppressions == 0 for r in again), again
    assert await rollup_tables(pool) == rolled
    assert await views(wapi) == before


async def test_an_event_racing_the_roll_up_of_its_push_is_a_404_not_a_500(wapi: LiveApi) -> None:
    pool = wapi.ctx.pool
    sub = await add_subscription(pool)
    old = TODAY - RETENTION - timedelta(days=3)
    delivery_id = await insert_delivery(
        pool, random.Random(1), subscription=sub, at=old, rule="promo", variant="a", status="sent"
    )
    await pool.execute("DELETE FROM events")
    token = tokens.event_token(wapi.ctx.keys.secret_key, delivery_id)
    async with pool.acquire() as conn:
        # The roll-up's batch, step by step with its own statements: the push is claimed...
        batch = conn.transaction()
        await batch.start()
        claimed = await conn.fetch(q("rollup_claim_deliveries"), CUTOFF, 10)
        assert [r["id"] for r in claimed] == [delivery_id]
        # ... while the browser reports a click: its insert waits for the claim ...
        click = asyncio.create_task(
            wapi.http.post(
                wapi.url + "/v1/events",
                json={"delivery_id": delivery_id, "token": token, "type": "clicked"},
            )
        )

        async def click_waits() -> bool:
            waiting: int = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return waiting == 1

        await wait_for(click_waits)
        # ... and the push is rolled up and deleted under it.
        await conn.fetchrow(q("rollup_deliveries"), [delivery_id])
        await batch.commit()
    async with await click as resp:
        assert resp.status == 404, await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    [counts] = await pool.fetch("SELECT deliveries, clicked FROM rule_delivery_days")
    assert tuple(counts) == (1, 0)


async def test_the_roll_up_leaves_what_the_rules_caps_still_look_back_at(
    data_dir: Path, database_url: str, clean_db: asyncpg.Pool, rules_dir: Path
) -> None:
    # DELIVERY_RETENTION of one day, but the coffee rule's per_place 1/week still counts the
    # pushes of the last 7 days (and the worker a day more): those stay.
    ctx = context_for(
        make_settings(data_dir, database_url, delivery_retention=timedelta(days=1)),
        clean_db,
        rules_dir,
    )
    sub = await add_subscription(clean_db)
    rng = random.Random(3)
    for days in (3, 7, 9, 10):
        await insert_delivery(
            clean_db, rng, subscription=sub, at=TODAY - timedelta(days=days), rule="coffee",
            place="a", status="sent",
        )  # fmt: skip
    assert maintenance.delivery_retention(ctx) == timedelta(days=8)
    rolled = await maintenance.roll_up(ctx)
    assert rolled.deliveries == 2
    left = await clean_db.fetch("SELECT created_at FROM deliveries ORDER BY created_at")
    assert [TODAY - r["created_at"] for r in left] == [timedelta(days=7), timedelta(days=3)]
