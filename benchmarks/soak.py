"""Soak: a steady signal rate against real API and worker processes, for minutes.

10,000 subscribers and 20,000 places by default; a fixed rate of signals (batches of a few
per request, as phones send them) for ``--duration`` seconds. Every ``--sample`` seconds it
prints the processing lag, the accepted/failed request counts and the RSS of every process
(API, worker, PostgreSQL backends excluded), and at the end whether the lag stayed bounded
and memory flat. Not a test: run it by hand, e.g.

    .venv/bin/python benchmarks/soak.py                          # the full soak (5 minutes)
    .venv/bin/python benchmarks/soak.py --duration 60 --rate 200 # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.store import migrations  # noqa: E402
from service.store.db import EmbeddedPostgres  # noqa: E402
from tests.processes import start  # noqa: E402

BBOX = (52.40, 13.20, 52.60, 13.60)  # Berlin


def write_rules(root: Path, places: int, rng: random.Random) -> None:
    (root / "places").mkdir(parents=True)
    features = [
        {
            "type": "Feature",
            "properties": {
                "id": f"p{i}",
                "name": f"Place {i}",
                "category": rng.choice(["cafe", "restaurant"]),
            },
            "geometry": {
                "type": "Point",
                "coordinates": [rng.uniform(BBOX[1], BBOX[3]), rng.uniform(BBOX[0], BBOX[2])],
            },
        }
        for i in range(places)
    ]
    (root / "places" / "all.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    (root / "policy.yaml").write_text(
        "limits: {per_subscriber: 3/day, min_gap: 10m}\nstale_after: 10m\nhysteresis_m: 30\n"
    )
    (root / "nearby.yaml").write_text(
        "priority: 1\ntrigger: enter\nwhere: {places: places/all.geojson, radius_m: 80}\n"
        "message: {title: 'Near {place.name}', body: '{distance_m} m', ttl: 20m}\n"
    )


async def seed(dsn: str, subscribers: int) -> list[str]:
    tokens = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(subscribers)]
    rows = [
        (
            uuid.uuid4(),
            f"https://fcm.googleapis.com/fcm/send/{i}",
            "k",
            "a",
            hashlib.sha256(t.encode()).digest(),
        )
        for i, t in enumerate(tokens)
    ]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "subscriptions",
            records=rows,
            columns=["id", "endpoint", "p256dh", "auth", "token_hash"],
        )
    finally:
        await conn.close()
    return tokens


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


async def main(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="mc-soak-"))
    embedded = EmbeddedPostgres(tmp / "pg")
    dsn = embedded.start()
    procs = []
    try:
        await migrations.migrate(dsn)
        write_rules(tmp / "rules", args.places, rng)
        tokens = await seed(dsn, args.subscribers)
        env = {
            "MOMENTCAST_DATABASE_URL": dsn,
            "MOMENTCAST_DATA_DIR": str(tmp / "data"),
            "MOMENTCAST_RULES_DIR": str(tmp / "rules"),
            "MOMENTCAST_PORT": "0",
            "MOMENTCAST_SIGNAL_RATE_BURST": "1000000",
            "MOMENTCAST_LOG_LEVEL": "WARNING",
            "MOMENTCAST_ADMIN_TOKEN": "soak-admin-token-0123456789",
        }
        api = start(["api"], env)
        api.wait_banner(120)
        procs.append(("api", api))
        for i in range(args.workers):
            w = start(["worker", "--no-sender"], env)
            w.wait_banner(120)
            procs.append((f"worker{i}", w))
        assert api.url
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        ok = failed = 0
        samples: list[tuple[float, float, list[float]]] = []
        started = time.monotonic()
        interval = args.per_request / args.rate
        print(
            f"{args.subscribers} subscribers, {args.places} places, {args.rate} signals/s "
            f"for {args.duration}s; processes: {', '.join(n for n, _ in procs)}"
        )
        print(
            f"{'t/s':>6} {'ok':>8} {'failed':>6} {'lag/s':>7}  "
            + " ".join(f"{n + ' MB':>10}" for n, _ in procs)
        )

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

            async def one(token: str) -> None:
                nonlocal ok, failed
                lat, lon = rng.uniform(BBOX[0], BBOX[2]), rng.uniform(BBOX[1], BBOX[3])
                body = {
                    "signals": [
                        {
                            "lat": lat + rng.uniform(-1e-4, 1e-4),
                            "lon": lon + rng.uniform(-1e-4, 1e-4),
                            "accuracy_m": 15,
                        }
                        for _ in range(args.per_request)
                    ]
                }
                try:
                    async with http.post(
                        api.url + "/v1/signals",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    ) as r:
                        if r.status == 202:
                            ok += 1
                        else:
                            failed += 1
                except aiohttp.ClientError:
                    failed += 1

            inflight: set[asyncio.Task[None]] = set()
            next_sample = started
            tick = started
            while time.monotonic() - started < args.duration:
                task = asyncio.create_task(one(rng.choice(tokens)))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                tick += interval
                now = time.monotonic()
                if now >= next_sample:
                    lag = float(
                        await pool.fetchval(
                            "SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)"
                            " FROM signals WHERE processed_at IS NULL"
                        )
                    )
                    rss = [rss_mb(p.proc.pid) for _, p in procs]
                    samples.append((now - started, lag, rss))
                    print(
                        f"{now - started:6.0f} {ok:8d} {failed:6d} {lag:7.2f}  "
                        + " ".join(f"{m:10.1f}" for m in rss),
                        flush=True,
                    )
                    next_sample += args.sample
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
            await asyncio.gather(*inflight, return_exceptions=True)
        await pool.close()

        lags = [s[1] for s in samples]
        print(
            f"\nrequests: {ok} accepted, {failed} failed; lag max {max(lags):.2f}s, "
            f"last {lags[-1]:.2f}s"
        )
        third = max(1, len(samples) // 3)
        for i, (name, _) in enumerate(procs):
            early = sum(s[2][i] for s in samples[:third]) / third
            late = sum(s[2][i] for s in samples[-third:]) / third
            print(
                f"{name}: RSS first third {early:.1f} MB, last third {late:.1f} MB "
                f"({(late - early) / early * 100:+.1f}%)"
            )
        bounded = max(lags[len(lags) // 2 :]) <= max(5.0, 2 * max(lags[: len(lags) // 2]))
        print("lag bounded:", "yes" if bounded else "NO", "| errors:", failed)
        return 0 if bounded and failed == 0 else 1
    finally:
        for _, p in procs:
            p.stop()
        embedded.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--places", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0, help="signals per second")
    parser.add_argument("--per-request", type=int, default=5)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())) if os.name == "posix" else 1)
