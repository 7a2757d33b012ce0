"""Campaign fan-out benchmark: subscribers into the outbox, against a plain INSERT ... SELECT of
as many rows in the same run, same database, same table and indexes.

    .venv/bin/python benchmarks/campaigns.py [--subscribers 100000] [--repeat 3]
    .venv/bin/python benchmarks/campaigns.py --quick       # a few seconds: the smoke run

PostgreSQL: MOMENTCAST_BENCH_DATABASE_URL or MOMENTCAST_DATABASE_URL names a server, on which
a throwaway database is created and dropped afterwards; without either, an embedded
PostgreSQL (the package's default, fsync on) in a temporary directory.

N subscribers in 24 time zones, 3 locales, with a name and a visit count. Each case creates a
campaign (service/campaigns/usecases.py create, as POST /v1/campaigns does) and times the fan-out's
ticks (service.fanout.FanOut on a fixed clock) until every subscriber is in the outbox; the
deliveries are then deleted (and the table vacuumed) for the next case:

  baseline   INSERT INTO deliveries ... SELECT FROM subscriptions: one row per subscriber with a
             constant payload and a dedupe key, nothing decided - the floor of any fan-out.
  plain      an instant campaign to everyone (topics), one constant message: one tick.
  templated  an instant campaign with an attribute condition, two variants, a German locale and
             {attributes.name} in the title: rendered per subscriber in SQL.
  local      {"local": 12:00}: one tick per zone as its noon comes (the clock steps through the
             day); the figure is the sum of the ticks.
  experiment templated, with "experiment": {test_share: 0.2, decide_after: 2h}: a tick at the
             instant queues the test share, a tick 2 h later decides and queues the rest
             with the winner; the figure is the sum of the two.

Target (issue 11, this 2-core machine): the fan-out of 100k subscribers <= 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from benchmarks.benchdb import bench_database  # noqa: E402
from service.campaigns import usecases as campaigns_api  # noqa: E402
from service.context import Context, Keys  # noqa: E402
from service.fanout import FanOut  # noqa: E402
from service.rules.models import PolicyModel  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store, migrations  # noqa: E402
from service.store.db import create_pool  # noqa: E402

ZONES = [
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Sao_Paulo",
    "Atlantic/Azores",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Athens",
    "Europe/Moscow",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Noumea",
    "Pacific/Auckland",
    "Pacific/Tongatapu",
    "",  # no time zone: UTC
]
LOCALES = ["de-DE", "en-GB", "fr"]
DAY = datetime(2026, 11, 24, tzinfo=UTC)
POLICY = PolicyModel.model_validate({"limits": {"per_subscriber": "3/day", "min_gap": "1h"}})


async def _subscribers(pool: asyncpg.Pool, n: int) -> None:
    await pool.execute(
        """
        INSERT INTO subscriptions (endpoint, p256dh, auth, token_hash, timezone, locale, topics,
                                   attributes)
        SELECT 'https://push.example/' || i, 'k', 'a', sha256(int8send(i)),
               nullif(($2::text[])[1 + i % cardinality($2::text[])], ''),
               ($3::text[])[1 + i % cardinality($3::text[])],
               ARRAY['food'] || CASE WHEN i % 2 = 0 THEN ARRAY['deals'] ELSE '{}' END,
               jsonb_build_object('name', 'Name ' || i, 'visits', i % 10)
        FROM generate_series(1, $1) AS i
        """,
        n,
        ZONES,
        LOCALES,
    )
    await pool.execute("VACUUM ANALYZE subscriptions")


async def _reset(pool: asyncpg.Pool) -> None:
    await pool.execute("DELETE FROM events")
    await pool.execute("DELETE FROM deliveries")
    await pool.execute("DELETE FROM campaign_suppressions")
    await pool.execute("DELETE FROM campaign_experiments")
    await pool.execute("DELETE FROM campaigns")
    await pool.execute("VACUUM ANALYZE deliveries")


async def _baseline(pool: asyncpg.Pool) -> tuple[int, float]:
    started = time.perf_counter()
    status = await pool.execute(
        """
        INSERT INTO deliveries (subscription_id, rule_id, variant, dedupe_key, payload, ttl_s,
                                expires_at)
        SELECT id, 'baseline', 'default', 'baseline:' || id::text,
               '{"title": "Lunch time", "body": "2-for-1 mains today"}'::jsonb, 3600,
               now() + interval '1 hour'
        FROM subscriptions
        """
    )
    return int(status.split()[-1]), time.perf_counter() - started


def _body(case: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"bench-{case}",
        "audience": {"topics": ["food"]},
        "message": {"title": "Lunch time", "body": "2-for-1 mains today"},
        "send_at": (DAY + timedelta(hours=12)).isoformat(),
        "ttl": "2h",
    }
    if case in ("templated", "experiment"):
        body["audience"] = {"topics": ["food", "deals"], "attributes": {"visits": {"gte": 0}}}
        body["message"] = {
            "title": "Lunch time, {attributes.name}",
            "body": "Visit number {attributes.visits}: 2-for-1 mains today",
            "url": "https://example.com/lunch",
            "locales": {"de": {"title": "Mittagszeit, {attributes.name}"}},
        }
        body["variants"] = [
            {"name": "a", "weight": 1},
            {"name": "b", "weight": 1, "message": {"body": "Half price for {attributes.name}"}},
        ]
    if case == "local":
        body["send_at"] = {"local": "2026-11-24T12:00", "late": "send"}
    if case == "experiment":
        body["experiment"] = {"test_share": 0.2, "decide_after": "2h", "metric": "clicked"}
    return body


async def _fan_out(ctx: Context, case: str) -> tuple[int, float, int]:
    """Create the campaign before its moment, then tick until everything is queued; return the
    pushes queued, the seconds spent in ticks, and how many ticks there were."""
    created = DAY - timedelta(hours=12)  # before noon anywhere
    await campaigns_api.create(ctx.store, json.dumps(_body(case)), now=created)
    clock = [created]
    fanout = FanOut(ctx, clock=lambda: clock[0])
    queued = ticks = 0
    spent = 0.0
    noon = DAY + timedelta(hours=12)
    moments = sorted(
        {_local_noon(zone) for zone in ZONES}  # every zone's noon, in order
        if case == "local"
        else {noon, noon + timedelta(hours=2)}  # the test share, then the decision and the rest
        if case == "experiment"
        else {noon}
    )
    for moment in moments:
        clock[0] = moment
        await ctx.pool.execute("UPDATE campaigns SET next_check_at = $1", moment)
        started = time.perf_counter()
        result = await fanout.run_once()
        spent += time.perf_counter() - started
        queued += result.queued
        ticks += result.campaigns
    return queued, spent, ticks


def _local_noon(zone: str) -> datetime:
    from service.campaigns.body import SendAt

    return SendAt(local=datetime(2026, 11, 24, 12, 0)).moment_in(zone)


async def _timed(
    repeat: int, pool: asyncpg.Pool, run: Callable[[], Awaitable[tuple[int, float, int]]]
) -> tuple[int, list[float], int]:
    times: list[float] = []
    rows = ticks = 0
    for _ in range(repeat):
        await _reset(pool)
        rows, seconds, ticks = await run()
        times.append(seconds)
    return rows, times, ticks


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-campaigns-"))
    async with bench_database(tmp, "momentcast_campaigns") as database:
        dsn = database.dsn
        await migrations.migrate(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=4)
        settings = Settings(
            _env_file=None,
            database_url=dsn,
            data_dir=tmp / "data",  # type: ignore[call-arg]
            admin_token="bench-admin-token-" + "x" * 16,
        )
        ctx = Context(
            settings=settings,
            store=Store(pool, dsn=dsn),
            keys=Keys.load(settings),
            rules=SimpleNamespace(current=SimpleNamespace(policy=POLICY)),
        )
        n = args.subscribers
        started = time.perf_counter()
        await _subscribers(pool, n)
        print(f"{n} subscribers in {len(ZONES)} zones ({time.perf_counter() - started:.1f} s)")

        async def baseline() -> tuple[int, float, int]:
            rows, seconds = await _baseline(pool)
            return rows, seconds, 1

        figures: dict[str, tuple[int, float, int]] = {}
        rows, times, _ = await _timed(args.repeat, pool, baseline)
        figures["baseline"] = (rows, statistics.median(times), 1)
        for case in ("plain", "templated", "local", "experiment"):

            async def run(case: str = case) -> tuple[int, float, int]:
                return await _fan_out(ctx, case)

            rows, times, ticks = await _timed(args.repeat, pool, run)
            figures[case] = (rows, statistics.median(times), ticks)
        await _reset(pool)
        await pool.close()
    base = figures["baseline"][1]
    print(f"\nmedian of {args.repeat} runs")
    print(f"{'case':<10} {'rows':>8} {'ticks':>5} {'seconds':>8} {'rows/s':>9} {'x baseline':>10}")
    for case, (rows, seconds, ticks) in figures.items():
        rate = rows / seconds if seconds else 0.0
        print(
            f"{case:<10} {rows:>8} {ticks:>5} {seconds:>8.2f} {rate:>9.0f} {seconds / base:>10.1f}"
        )
    worst = max(figures[c][1] for c in ("plain", "templated", "local", "experiment"))
    scaled = worst * 100_000 / max(1, n)
    verdict = "yes" if scaled <= 10 else "NO"
    print(f"\nfan-out of 100k subscribers <= 10 s: {verdict} ({scaled:.1f} s at 100k, worst case)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5000 subscribers, one run")
    ns = parser.parse_args()
    if ns.quick:
        ns.subscribers, ns.repeat = 5000, 1
    sys.exit(asyncio.run(main(ns)))
