"""The worker against a real PostgreSQL: presence, caps and exactly-once decisions.

Time is controlled through the signals' ``at`` and the worker's injectable clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from service.context import Context
from service.metrics import REGISTRY
from service.worker import Worker
from tests.api.conftest import register
from tests.conftest import LiveApi
from tests.worker.conftest import (
    CAFE_A,
    CAFE_B,
    FAR,
    Fix,
    add_signals,
    add_subscription,
    offset,
    walk,
)

T0 = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)  # a Tuesday, 12:00 in Berlin


def worker(ctx: Context, now: datetime) -> Worker:
    return Worker(ctx, clock=lambda: now)


async def deliveries(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM deliveries ORDER BY id")


async def counters(pool: asyncpg.Pool) -> dict[tuple[str, str], int]:
    rows = await pool.fetch("SELECT rule_id, counter, n FROM rule_counters")
    return {(r["rule_id"], r["counter"]): r["n"] for r in rows}


async def test_jittery_walk_enters_once_across_batches(wctx: Context) -> None:
    sub = await add_subscription(wctx.pool)
    # Approach, then jitter around the 60 m radius (+30 m hysteresis) while inside.
    metres = [300, 150, 50, 20, 70, 40, 80, 55, 85, 30, 10]
    points = [offset(CAFE_A, -m) for m in metres]  # west, away from café B
    await add_signals(wctx.pool, sub, walk(T0, points, timedelta(seconds=20)))
    now = T0 + timedelta(minutes=4)
    processed = await worker(wctx, now).drain()
    assert processed == len(metres)
    rows = await deliveries(wctx.pool)
    assert [(r["rule_id"], r["place_id"]) for r in rows] == [("coffee", "a")]
    d = rows[0]
    assert d["payload"]["title"] == "Coffee at Café A"
    assert d["payload"]["body"] == "50 m away"
    assert d["status"] == "pending" and d["topic"] == "coffee" and d["ttl_s"] == 1200
    assert d["decided_at"] == T0 + timedelta(seconds=40)
    assert d["expires_at"] == d["decided_at"] + timedelta(minutes=20)
    assert d["local_hour"] == 12
    assert await wctx.pool.fetchval("SELECT count(*) FROM signals WHERE processed_at IS NULL") == 0
    presence = await wctx.pool.fetch("SELECT rule_id, place_id, inside FROM presence")
    assert [(p["rule_id"], p["place_id"], p["inside"]) for p in presence] == [("coffee", "a", True)]
    assert (await counters(wctx.pool))[("coffee", "matched")] == 1


async def test_leaving_and_coming_back_is_a_new_visit_but_place_cooldown_holds(
    wctx: Context,
) -> None:
    sub = await add_subscription(wctx.pool)
    fixes = walk(T0, [CAFE_A, FAR], timedelta(minutes=5))
    fixes += walk(T0 + timedelta(hours=2), [CAFE_A], timedelta(minutes=1))
    fixes += walk(T0 + timedelta(hours=3), [CAFE_B], timedelta(minutes=1))
    await add_signals(wctx.pool, sub, fixes)
    for fix in fixes:  # one signal per batch: state must survive in the database
        w = worker(wctx, fix.at + timedelta(seconds=5))
        w.batch_size = 1
        await w.run_once()
    rows = await deliveries(wctx.pool)
    assert [r["place_id"] for r in rows] == ["a", "b"]
    assert (await counters(wctx.pool))[("coffee", "suppressed:place_cooldown")] == 1


async def test_min_gap_suppresses_and_is_counted(wctx: Context) -> None:
    sub = await add_subscription(wctx.pool)
    fixes = [Fix(T0, *CAFE_A), Fix(T0 + timedelta(minutes=2), *CAFE_B)]
    await add_signals(wctx.pool, sub, fixes)
    await worker(wctx, T0 + timedelta(minutes=3)).drain()
    assert [r["place_id"] for r in await deliveries(wctx.pool)] == ["a"]
    assert (await counters(wctx.pool))[("coffee", "suppressed:min_gap")] == 1


async def test_stale_signals_update_presence_but_trigger_nothing(wctx: Context) -> None:
    sub = await add_subscription(wctx.pool)
    await add_signals(wctx.pool, sub, [Fix(T0, *CAFE_A)])
    await worker(wctx, T0 + timedelta(minutes=30)).drain()
    assert await deliveries(wctx.pool) == []
    inside = await wctx.pool.fetchval("SELECT count(*) FROM presence WHERE inside")
    assert inside == 1
    # Still inside when a fresh fix arrives: no enter transition, so still nothing.
    await add_signals(wctx.pool, sub, [Fix(T0 + timedelta(minutes=31), *CAFE_A)])
    await worker(wctx, T0 + timedelta(minutes=31)).drain()
    assert await deliveries(wctx.pool) == []


async def test_out_of_order_signal_changes_nothing(wctx: Context) -> None:
    sub = await add_subscription(wctx.pool)
    await add_signals(wctx.pool, sub, [Fix(T0 + timedelta(minutes=5), *FAR)])
    await worker(wctx, T0 + timedelta(minutes=6)).drain()
    # Arrives later but was taken earlier, at the café: must not enter.
    await add_signals(wctx.pool, sub, [Fix(T0 + timedelta(minutes=1), *CAFE_A)])
    await worker(wctx, T0 + timedelta(minutes=6)).drain()
    assert await deliveries(wctx.pool) == []
    assert await wctx.pool.fetchval("SELECT count(*) FROM presence") == 0
    assert await wctx.pool.fetchval("SELECT count(*) FROM signals WHERE processed_at IS NULL") == 0


async def test_paused_and_gone_subscribers_are_suppressed(wctx: Context) -> None:
    paused = await add_subscription(wctx.pool, paused=True)
    gone = await add_subscription(wctx.pool)
    await wctx.pool.execute("UPDATE subscriptions SET status='gone' WHERE id=$1::uuid", gone)
    for sub in (paused, gone):
        await add_signals(wctx.pool, sub, [Fix(T0, *CAFE_A)])
    await worker(wctx, T0).drain()
    assert await deliveries(wctx.pool) == []
    c = await counters(wctx.pool)
    assert c[("coffee", "suppressed:paused")] == 1
    assert c[("coffee", "suppressed:gone")] == 1


async def test_batch_replayed_after_crash_does_not_decide_twice(wctx: Context) -> None:
    sub = await add_subscription(wctx.pool)
    await add_signals(wctx.pool, sub, [Fix(T0, *CAFE_A)])
    await worker(wctx, T0).drain()
    # As if the commit had landed but the worker died before it knew: the same signal
    # comes back unprocessed with the presence of before.
    await wctx.pool.execute("UPDATE signals SET processed_at = NULL")
    await wctx.pool.execute("DELETE FROM presence")
    await wctx.pool.execute("UPDATE subscriptions SET last_signal_at = NULL")
    await wctx.pool.execute("DELETE FROM rule_counters")
    await worker(wctx, T0).drain()
    assert len(await deliveries(wctx.pool)) == 1


async def test_claim_lease_recovers_signals_of_a_dead_worker(wctx: Context) -> None:
    sub = await add_subscription(wctx.pool)
    await add_signals(wctx.pool, sub, [Fix(T0, *CAFE_A)])
    # A worker claimed the signal and died: the lease keeps others off until it runs out.
    await wctx.pool.execute("UPDATE signals SET claimed_until = now() + interval '1 hour'")
    assert (await worker(wctx, T0).run_once()).signals == 0
    await wctx.pool.execute("UPDATE signals SET claimed_until = now() - interval '1 second'")
    assert (await worker(wctx, T0).run_once()).signals == 1
    assert len(await deliveries(wctx.pool)) == 1


async def test_batch_out_then_in_leaves_presence_inside(wctx: Context, wapi: LiveApi) -> None:
    # A batch without "at": its signals share one time, so only their order says out -> in.
    device = await register(wapi)
    outside = offset(CAFE_A, -300)

    async def send(*points: tuple[float, float]) -> None:
        body = {"signals": [{"lat": lat, "lon": lon, "accuracy_m": 10} for lat, lon in points]}
        async with wapi.http.post(
            wapi.url + "/v1/signals", json=body, headers=device.auth()
        ) as resp:
            assert resp.status == 202, await resp.text()
        await Worker(wctx).drain()

    await send(outside, CAFE_A)
    presence = await wctx.pool.fetch("SELECT rule_id, place_id, inside FROM presence")
    assert [(p["rule_id"], p["place_id"], p["inside"]) for p in presence] == [("coffee", "a", True)]
    # The next fix inside is no new entry: nothing fires, nothing is suppressed; the enter
    # rule's silence is counted (the live why-not).
    await send(CAFE_A)
    assert [r["place_id"] for r in await deliveries(wctx.pool)] == ["a"]
    assert await counters(wctx.pool) == {
        ("coffee", "matched"): 1,
        ("coffee", "silent:not_triggered"): 1,
    }


async def test_decisions_metric_counts_inserted_rows_not_attempts(wctx: Context) -> None:
    def decided() -> float:
        return REGISTRY.get_sample_value("momentcast_decisions_total", {"rule": "coffee"}) or 0.0

    sub = await add_subscription(wctx.pool)
    await add_signals(wctx.pool, sub, [Fix(T0, *CAFE_A)])
    before = decided()
    await worker(wctx, T0 + timedelta(seconds=5)).drain()
    assert decided() == before + 1
    # The same decision again, as after a crash that lost the engine's state but not the
    # outbox: the dedupe key refuses the row, and the metric must not count it.
    await wctx.pool.execute("UPDATE deliveries SET decided_at = decided_at - interval '60 days'")
    await wctx.pool.execute("UPDATE signals SET processed_at = NULL")
    await wctx.pool.execute("DELETE FROM presence")
    await wctx.pool.execute("UPDATE subscriptions SET last_signal_at = NULL")
    assert await worker(wctx, T0 + timedelta(seconds=5)).drain() == 1
    assert len(await deliveries(wctx.pool)) == 1
    assert decided() == before + 1
