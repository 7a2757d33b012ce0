"""Presence expiry through the database: each fix in its own batch, so the presence and the
last signal time the engine sees come from the stored state; the live why-not counts an
enter that stayed silent (`silent: {not_triggered}` in /v1/stats)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from service.stats import stats
from service.worker import Worker
from tests.conftest import make_settings
from tests.worker.conftest import (
    CAFE_A,
    COFFEE,
    Fix,
    add_signals,
    add_subscription,
    context_for,
    write_rules,
)

T0 = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)  # a Tuesday, 12:00 in Berlin


def clock_at(at: datetime) -> Callable[[], datetime]:
    return lambda: at


async def test_presence_expires_between_batches_and_silent_enters_are_counted(
    data_dir: Path, database_url: str, clean_db: asyncpg.Pool, tmp_path: Path
) -> None:
    coffee = COFFEE.replace("limits: {per_place: 1/week}\n", "")
    rules = write_rules(tmp_path / "rules", rules={"coffee": coffee})
    ctx = context_for(make_settings(data_dir, database_url), clean_db, rules)
    sub = await add_subscription(ctx.pool)
    # Inside at 12:00, again at 13:00 (still inside: silent), again at 16:00 (not seen for
    # 3 h > presence_timeout 2h: outside meanwhile, so this is an enter).
    for at in (T0, T0 + timedelta(hours=1), T0 + timedelta(hours=4)):
        await add_signals(ctx.pool, sub, [Fix(at, *CAFE_A)])
        await Worker(ctx, clock=clock_at(at)).drain()
    decided = await ctx.pool.fetch("SELECT decided_at FROM deliveries ORDER BY id")
    assert [r["decided_at"] for r in decided] == [T0, T0 + timedelta(hours=4)]
    rows = {
        (r["rule"], r["variant"]): r for r in stats(await ctx.store.engagement_counts())["rules"]
    }
    assert rows[("coffee", "")]["silent"] == {"not_triggered": 1}
