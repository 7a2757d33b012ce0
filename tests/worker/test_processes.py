"""Several worker processes, and workers killed with SIGKILL, against one database.

The reference is one in-process worker on the same stream: any number of processes, and any
crash, must end with exactly its decisions.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from service.context import Context
from service.worker import Worker
from tests.conftest import make_settings
from tests.factories import insert_subscription
from tests.processes import ServiceProcess, start
from tests.worker.conftest import (
    ANY_TIME_POLICY,
    CAFE_A,
    CAFE_B,
    COFFEE,
    FAR,
    STAMP,
    Outcome,
    context_for,
    offset,
    outcome,
    reset_processing,
    write_rules,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def any_time_rules(tmp_path: Path) -> Path:
    return write_rules(
        tmp_path / "rules", policy=ANY_TIME_POLICY, rules={"coffee": COFFEE, "stamp": STAMP}
    )


async def make_stream(pool: asyncpg.Pool, subscribers: int, per_sub: int, seed: int) -> None:
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    sig_rows = []
    for _ in range(subscribers):
        sid = uuid.UUID(int=rng.getrandbits(128))
        await insert_subscription(
            pool, id=sid, endpoint=f"https://fcm.googleapis.com/fcm/send/{sid}"
        )
        spot = rng.choice([CAFE_A, CAFE_B])
        for i in range(per_sub):
            base = spot if rng.random() < 0.6 else FAR
            lat, lon = offset(base, rng.uniform(-90, 90))
            at = start + timedelta(seconds=30 * i + rng.randint(0, 20))
            sig_rows.append((sid, at, lat, lon, rng.choice([5.0, 20.0, 50.0])))
    rng.shuffle(sig_rows)  # arrival order is not time order
    await pool.copy_records_to_table(
        "signals", records=sig_rows, columns=["subscription_id", "at", "lat", "lon", "accuracy_m"]
    )


async def wait_processed(pool: asyncpg.Pool, procs: list[ServiceProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pool.fetchval("SELECT count(*) FROM signals WHERE processed_at IS NULL") == 0:
            return
        for p in procs:
            assert p.proc.poll() is None, p.stderr()
        await asyncio.sleep(0.2)
    raise AssertionError("signals left unprocessed")


def worker_env(tmp_path: Path, database_url: str, rules: Path, **extra: str) -> dict[str, str]:
    env = {
        "MOMENTCAST_DATABASE_URL": database_url,
        "MOMENTCAST_DATA_DIR": str(tmp_path / "d"),
        "MOMENTCAST_RULES_DIR": str(rules),
        "MOMENTCAST_WORKER_POLL_INTERVAL": "1",
        "MOMENTCAST_LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


async def reference(ctx: Context) -> Outcome:
    await Worker(ctx).drain()
    result = await outcome(ctx.pool)
    assert result[0], "the stream should produce decisions"
    await reset_processing(ctx.pool)
    return result


async def test_three_processes_decide_exactly_what_one_worker_decides(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool, any_time_rules: Path
) -> None:
    settings = make_settings(tmp_path / "d", database_url, worker_batch_size=500)
    ctx = context_for(settings, clean_db, any_time_rules)
    await make_stream(clean_db, subscribers=500, per_sub=20, seed=7)
    expected = await reference(ctx)

    env = worker_env(tmp_path, database_url, any_time_rules, MOMENTCAST_WORKER_BATCH_SIZE="200")
    procs = [start(["worker", "--no-sender"], env) for _ in range(3)]
    try:
        for p in procs:
            p.wait_banner()
        await wait_processed(clean_db, procs, timeout=120)
    finally:
        codes = [p.stop() for p in procs]
    assert codes == [0, 0, 0]
    assert await outcome(clean_db) == expected


async def test_sigkill_mid_batch_loses_and_duplicates_nothing(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool, any_time_rules: Path
) -> None:
    settings = make_settings(tmp_path / "d", database_url)
    ctx = context_for(settings, clean_db, any_time_rules)
    await make_stream(clean_db, subscribers=500, per_sub=20, seed=11)
    expected = await reference(ctx)

    env = worker_env(
        tmp_path,
        database_url,
        any_time_rules,
        MOMENTCAST_WORKER_BATCH_SIZE="20",
        MOMENTCAST_WORKER_LEASE="1",
    )
    rng = random.Random(3)
    kills = 0
    while kills < 4:
        p = start(["worker", "--no-sender"], env)
        p.wait_banner()
        await asyncio.sleep(rng.uniform(0.01, 0.15))
        p.stop(signal.SIGKILL)
        kills += 1
    left = await clean_db.fetchval("SELECT count(*) FROM signals WHERE processed_at IS NULL")
    assert left > 0, "the kills should interrupt work in progress"
    final = start(["worker", "--no-sender"], env)
    try:
        final.wait_banner()
        await wait_processed(clean_db, [final], timeout=120)
    finally:
        assert final.stop() == 0
    assert await outcome(clean_db) == expected
