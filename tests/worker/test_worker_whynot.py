"""The worker's not_matched counters against a real PostgreSQL: per rule and first failed
condition, for the rules within reach of each signal; /v1/stats reports them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.context import Context
from service.stats import stats
from service.worker import Worker
from tests.worker.conftest import CAFE_A, FAR, Fix, add_signals, add_subscription, write_rules

T0 = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)  # a Tuesday, 12:00 in Berlin

LUNCH = """
priority: 10
where: {places: places/cafes.geojson, radius_m: 60}
when: {dayparts: [lunch]}
who: {topics: [food]}
message: {title: "Lunch at {place.name}"}
"""

READ = """
priority: 1
who: {context: {page: {exists: true}}}
message: {title: "Read on"}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return write_rules(tmp_path / "rules", rules={"lunch": LUNCH, "read": READ})


async def test_not_matched_counts_per_rule_and_reason(wctx: Context) -> None:
    pool = wctx.pool
    hungry = await add_subscription(pool, topics=["food"])
    other = await add_subscription(pool, topics=["news"])
    await add_signals(
        pool,
        hungry,
        [Fix(T0 - timedelta(hours=2), *CAFE_A), Fix(T0 + timedelta(minutes=1), *FAR)],
    )
    await add_signals(pool, other, [Fix(T0, *CAFE_A)])
    # A page view of the hungry one: the location-free rule matches it.
    await pool.execute(
        'INSERT INTO signals (subscription_id, at, context) VALUES ($1, $2, \'{"page": "x"}\')',
        uuid.UUID(hungry),
        T0 + timedelta(minutes=2),
    )
    assert await Worker(wctx, clock=lambda: T0 + timedelta(minutes=3)).drain() == 4
    rows = await pool.fetch(
        "SELECT rule_id, variant, counter, n FROM rule_counters WHERE counter LIKE 'not_matched:%'"
    )
    assert sorted((r["rule_id"], r["variant"], r["counter"], r["n"]) for r in rows) == [
        ("lunch", "", "not_matched:daypart", 1),  # 10:00 at the café
        ("lunch", "", "not_matched:topics", 1),  # lunchtime, but no topic food
        ("read", "", "not_matched:context.page", 3),  # every located signal: no page
    ]
    body = stats(await wctx.store.engagement_counts())
    per_rule = {(r["rule"], r["variant"]): r for r in body["rules"]}
    assert per_rule[("lunch", "")]["not_matched"] == {"daypart": 1, "topics": 1}
    assert per_rule[("read", "")]["not_matched"] == {"context.page": 3}
    assert per_rule[("read", "default")]["matched"] == 1
