"""Shadow rules in the worker against a real PostgreSQL: counted as shadow_sent, never in the
outbox, never in the live caps; their own limits pace them across batches."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service.context import Context
from service.stats import stats
from service.worker import Worker
from tests.worker.conftest import CAFE_A, COFFEE, Fix, add_signals, add_subscription, write_rules

T0 = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)  # a Tuesday, 12:00 in Berlin

SHADOW = """
priority: 20
mode: shadow
trigger: inside
where: {places: places/cafes.geojson, radius_m: 60}
message: {title: "Cake at {place.name}?", ttl: 20m}
limits: {per_subscriber: 1/day}
"""


def clock_at(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def rules_dir_with_shadow(tmp_path: Path) -> Path:
    return write_rules(tmp_path / "rules", rules={"coffee": COFFEE, "cake": SHADOW})


# The worker's context (tests/worker/conftest.py) loads this folder.
rules_dir = __import__("pytest").fixture(rules_dir_with_shadow)


async def test_a_shadow_rule_counts_and_never_sends(wctx: Context) -> None:
    pool = wctx.pool
    sub = await add_subscription(pool)
    # Inside café A every 15 minutes, one batch each: the policy's min_gap is 10 minutes.
    for i in range(4):
        at = T0 + i * timedelta(minutes=15)
        await add_signals(pool, sub, [Fix(at, *CAFE_A)])
        assert await Worker(wctx, clock=clock_at(at)).drain() == 1
    # Only the live rule's enter is in the outbox: the shadow rule's would-be send of the
    # same signal did not take its place, nor keep it back by min_gap.
    rows = await pool.fetch("SELECT rule_id, decided_at FROM deliveries")
    assert [(r["rule_id"], r["decided_at"]) for r in rows] == [("coffee", T0)]
    counters = {
        (r["rule_id"], r["counter"]): r["n"]
        for r in await pool.fetch("SELECT rule_id, counter, n FROM rule_counters")
    }
    # Its own 1/day paces it across batches (its would-be sends are kept for that).
    assert counters == {
        ("cake", "matched"): 4,
        ("cake", "shadow_sent"): 1,
        ("cake", "suppressed:rule_cap"): 3,
        ("coffee", "matched"): 1,
        ("coffee", "silent:not_triggered"): 3,  # an enter rule, already inside
    }
    kept = await pool.fetch("SELECT rule_id, place_id, decided_at FROM shadow_sends")
    assert [(r["rule_id"], r["place_id"], r["decided_at"]) for r in kept] == [("cake", "a", T0)]
    # /v1/stats shows them apart from real sends.
    body = stats(await wctx.store.engagement_counts())
    [cake] = [r for r in body["rules"] if r["rule"] == "cake"]
    assert (cake["shadow_sent"], cake["sent"], cake["suppressed"]) == (1, 0, {"rule_cap": 3})
    # Part of the subscriber's export, and erased with the subscription.
    export = await wctx.store.export_subscription(subscription_id=uuid.UUID(sub))
    assert export is not None and [s["rule_id"] for s in export.shadow_sends] == ["cake"]
    assert await wctx.store.erase_subscription(subscription_id=uuid.UUID(sub))
    assert await pool.fetchval("SELECT count(*) FROM shadow_sends") == 0


async def test_old_shadow_sends_are_dropped(wctx: Context) -> None:
    pool = wctx.pool
    sub = await add_subscription(pool)
    await pool.execute(
        "INSERT INTO shadow_sends (subscription_id, rule_id, place_id, decided_at)"
        " VALUES ($1::uuid, 'cake', 'a', $2)",
        sub,
        T0 - timedelta(days=30),
    )
    await add_signals(pool, sub, [Fix(T0, *CAFE_A)])
    assert await Worker(wctx, clock=lambda: T0).drain() == 1
    kept = await pool.fetch("SELECT decided_at FROM shadow_sends")
    assert [r["decided_at"] for r in kept] == [T0]
