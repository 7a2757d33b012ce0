"""Pipeline benchmark (not a test): signals -> decisions with the database in the loop.

Part 1, worker throughput: N stored signals processed by one in-process Worker (claims, locks,
presence, deliveries, counters, commits) against, in the same run, the pure engine deciding
the same signals in memory (the ceiling the database work is measured against).

Part 2, end-to-end latency: `momentcast api` and `momentcast worker --no-sender` as real
processes; signals POSTed over HTTP at a fixed rate; for each signal the time from its 202 to
the creation of its delivery row (clock_timestamp() in the worker's transaction).

    .venv/bin/python benchmarks/pipeline.py [--signals 100000] [--rate 1000] [--seconds 10]

Uses MOMENTCAST_BENCH_DATABASE_URL when set, else an embedded PostgreSQL in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.context import Context, Keys  # noqa: E402
from service.reload.holder import RulesHolder  # noqa: E402
from service.rules import Profile, Signal  # noqa: E402
from service.rules.engine import decide  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store, migrations  # noqa: E402
from service.store.db import EmbeddedPostgres, create_pool  # noqa: E402
from service.worker import Worker  # noqa: E402

# Every inside fix decides a push (no caps), so each signal exercises the whole write path.
POLICY = "stale_after: 7d\nhysteresis_m: 30\n"
RULES = {
    "near": """
priority: 5
trigger: inside
where: {places: places/restaurants.geojson, radius_m: 150}
message: {title: "Near {place.name}", body: "{distance_m} m", ttl: 20m, topic: near}
""",
    "station": """
priority: 3
trigger: enter
where: {places: places/stations.geojson}
message: {title: "At {place.name}", ttl: 10m}
""",
}


def bench_rules(root: Path) -> Path:
    (root / "places").mkdir(parents=True)
    for name in ("restaurants.geojson", "stations.geojson"):
        (root / "places" / name).write_text((REPO / "rules" / "places" / name).read_text())
    (root / "policy.yaml").write_text(POLICY)
    for rule_id, text in RULES.items():
        (root / f"{rule_id}.yaml").write_text(text)
    return root


def place_points(root: Path) -> list[tuple[float, float]]:
    points = []
    for name in ("restaurants.geojson", "stations.geojson"):
        for f in json.loads((root / "places" / name).read_text())["features"]:
            lon, lat = f["geometry"]["coordinates"]
            points.append((lat, lon))
    return points


def jitter(rng: random.Random, point: tuple[float, float], metres: float) -> tuple[float, float]:
    lat, lon = point
    return (
        lat + rng.uniform(-metres, metres) / 111_320,
        lon + rng.uniform(-metres, metres) / 68_000,
    )


async def reset(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "TRUNCATE events, deliveries, presence, signals, rule_counters, subscriptions "
        "RESTART IDENTITY CASCADE"
    )


async def add_subscribers(pool: asyncpg.Pool, n: int) -> list[tuple[uuid.UUID, str]]:
    """Subscribers that consented to location use (the API refuses fixes from any other)."""
    subs = [(uuid.uuid4(), secrets.token_urlsafe(32)) for _ in range(n)]
    consent_at = datetime.now(UTC)
    await pool.copy_records_to_table(
        "subscriptions",
        records=[
            (
                sid,
                f"https://fcm.googleapis.com/fcm/send/{sid}",
                "k",
                "a",
                hashlib.sha256(tok.encode()).digest(),
                consent_at,
            )
            for sid, tok in subs
        ],
        columns=["id", "endpoint", "p256dh", "auth", "token_hash", "consent_at"],
    )
    return subs


async def worker_throughput(ctx: Context, rules: Path, n: int) -> None:
    rng = random.Random(1)
    points = place_points(rules)
    subs = await add_subscribers(ctx.pool, max(1, n // 10))
    start = datetime.now(UTC) - timedelta(hours=1)
    rows = []
    for i in range(n):
        sid = subs[i % len(subs)][0]
        lat, lon = jitter(rng, rng.choice(points), 400)
        rows.append((sid, start + timedelta(milliseconds=i), lat, lon, 10.0))
    await ctx.pool.copy_records_to_table(
        "signals", records=rows, columns=["subscription_id", "at", "lat", "lon", "accuracy_m"]
    )

    worker = Worker(ctx)
    t0 = time.perf_counter()
    processed = await worker.drain()
    db_s = time.perf_counter() - t0
    decisions = await ctx.pool.fetchval("SELECT count(*) FROM deliveries")

    holder = ctx.rules
    assert isinstance(holder, RulesHolder) and holder.current is not None
    signals = [
        Signal(subscription_id=str(r[0]), lat=r[2], lon=r[3], at=r[1], accuracy_m=r[4])
        for r in rows
    ]
    profiles = {str(s): Profile(id=str(s)) for s, _ in subs}
    batch = ctx.settings.worker_batch_size
    t0 = time.perf_counter()
    states: dict[str, object] = {}
    pure_decisions = 0
    for i in range(0, n, batch):
        out = decide(holder.current, signals[i : i + batch], profiles, states, None)  # type: ignore[arg-type]
        pure_decisions += sum(1 for o in out if o.decision is not None)
    pure_s = time.perf_counter() - t0

    print(
        f"worker, database in the loop: {processed} signals in {db_s:.2f} s = "
        f"{processed / db_s:,.0f} signals/s ({decisions} deliveries, batch {batch})"
    )
    print(
        f"baseline, pure engine in memory: {n} signals in {pure_s:.2f} s = "
        f"{n / pure_s:,.0f} signals/s ({pure_decisions} decisions)"
    )
    print(f"ratio worker/pure engine: {pure_s / db_s:.2f}")


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def end_to_end(dsn: str, rules: Path, data_dir: Path, rate: int, seconds: float) -> None:
    from tests.processes import start

    pool = await create_pool(dsn)
    await reset(pool)
    n = int(rate * seconds)
    subs = await add_subscribers(pool, max(1, n // 4))
    env = {
        "MOMENTCAST_DATABASE_URL": dsn,
        "MOMENTCAST_DATA_DIR": str(data_dir),
        "MOMENTCAST_RULES_DIR": str(rules),
        "MOMENTCAST_PORT": "0",
        "MOMENTCAST_LOG_LEVEL": "WARNING",
        "MOMENTCAST_WORKER_BATCH_SIZE": "500",
    }
    api = start(["api"], env)
    worker = start(["worker", "--no-sender"], env)
    try:
        api.wait_banner()
        worker.wait_banner()
        assert api.url is not None
        rng = random.Random(2)
        points = place_points(rules)
        accepted: dict[tuple[str, datetime], float] = {}
        refused: Counter[str] = Counter()
        now = datetime.now(UTC)

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:

            async def post(i: int) -> None:
                sid, token = subs[i % len(subs)]
                lat, lon = jitter(rng, rng.choice(points), 60)
                at = now + timedelta(microseconds=i)
                body = {"lat": lat, "lon": lon, "accuracy_m": 10, "at": at.isoformat()}
                async with http.post(
                    api.url + "/v1/signals", json=body, headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    if resp.status == 202:
                        accepted[(str(sid), at)] = time.time()
                    else:
                        refused[f"{resp.status} {(await resp.text())[:120]}"] += 1

            tasks = []
            t0 = time.perf_counter()
            for i in range(n):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post(i)))
            await asyncio.gather(*tasks)
            sent_s = time.perf_counter() - t0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = await pool.fetchval("SELECT count(*) FROM signals WHERE processed_at IS NULL")
            if left == 0:
                break
            await asyncio.sleep(0.2)
        rows = await pool.fetch(
            "SELECT s.subscription_id::text AS sid, s.at, "
            "extract(epoch FROM d.created_at)::float8 AS created "
            "FROM deliveries d JOIN signals s ON s.id = d.signal_id"
        )
    finally:
        api.stop()
        worker.stop()
        await pool.close()
    lat_ms = [
        (r["created"] - accepted[(r["sid"], r["at"])]) * 1000
        for r in rows
        if (r["sid"], r["at"]) in accepted
    ]
    print(
        f"end to end: {len(accepted)}/{n} signals accepted at {len(accepted) / sent_s:,.0f}/s "
        f"(target {rate}/s), {len(lat_ms)} deliveries"
    )
    for answer, count in refused.most_common():
        print(f"  refused {count}x: {answer}")
    if lat_ms:
        print(
            f"202 -> delivery row: p50 {statistics.median(lat_ms):.1f} ms, "
            f"p99 {_percentile(lat_ms, 99):.1f} ms, max {max(lat_ms):.1f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
        root = Path(tmp)
        embedded = None
        dsn = os.environ.get("MOMENTCAST_BENCH_DATABASE_URL")
        if not dsn:
            embedded = EmbeddedPostgres(root / "pg")
            dsn = embedded.start()
        try:
            await migrations.migrate(dsn)
            rules = bench_rules(root / "rules")
            settings = Settings(
                _env_file=None,
                database_url=dsn,
                data_dir=root / "data",  # type: ignore[call-arg]
                rules_dir=rules,
                worker_batch_size=1000,
            )
            pool = await create_pool(dsn)
            ctx = Context(
                settings=settings,
                store=Store(pool),
                keys=Keys.load(settings),
                rules=RulesHolder(rules),
            )
            await reset(pool)
            await worker_throughput(ctx, rules, args.signals)
            await pool.close()
            await end_to_end(dsn, rules, root / "data", args.rate, args.seconds)
        finally:
            if embedded is not None:
                embedded.stop()


if __name__ == "__main__":
    asyncio.run(main())
