"""The worker's loop coalesces wake-ups: signals that come within BATCH_LINGER_MS of its last
claim share one batch, and a lone signal after a quiet spell is decided at once.

Batches are counted with ``momentcast_worker_batch_seconds`` (one observation per claimed
batch) and claims by wrapping the store's ``claim_signals``, never by wall-clock timing; the
poll interval is 30 s, so only the NOTIFY path can decide a signal within the tests' deadlines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from service import worker
from service.context import Context, Keys
from service.metrics import REGISTRY
from service.reload.holder import RulesHolder
from service.store import Store
from tests.conftest import make_settings
from tests.worker.conftest import CAFE_A, Fix, add_signals, add_subscription


@pytest.fixture
async def running(
    data_dir: Path, database_url: str, clean_db: asyncpg.Pool, rules_dir: Path
) -> AsyncIterator[Callable[[int], Context]]:
    """Starts ``worker.run`` with a given linger; its store LISTENs (it has the DSN)."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(linger_ms: int) -> Context:
        settings = make_settings(
            data_dir,
            database_url,
            worker_batch_size=100,
            worker_poll_interval=timedelta(seconds=30),
        )
        # Assigned, not validated: longer than the setting allows, so that a slow machine
        # cannot stretch the tests' few steps past it.
        settings.batch_linger_ms = linger_ms
        ctx = Context(
            settings=settings,
            store=Store(clean_db, dsn=database_url),
            keys=Keys.load(settings),
            rules=RulesHolder(rules_dir),
        )
        tasks.append(asyncio.create_task(worker.run(ctx, stop)))
        return ctx

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)


def batches() -> float:
    return REGISTRY.get_sample_value("momentcast_worker_batch_seconds_count") or 0.0


async def processed(pool: asyncpg.Pool) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM signals WHERE processed_at IS NOT NULL")
    return n


async def until(check: Callable[[], object], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def add_notified(pool: asyncpg.Pool, sub: str) -> None:
    """One signal and its NOTIFY, as one group commit of the ingest writer makes them."""
    await add_signals(pool, sub, [Fix(datetime.now(UTC), *CAFE_A)])
    await pool.execute("NOTIFY momentcast_signals")


def count_claims(store: Store) -> list[int]:
    claims = [0]
    claim_signals = store.claim_signals

    async def counted(**kwargs: object) -> list[str]:
        claims[0] += 1
        return await claim_signals(**kwargs)  # type: ignore[arg-type]

    store.claim_signals = counted  # type: ignore[method-assign]
    return claims


async def test_signals_within_the_linger_share_one_batch(
    clean_db: asyncpg.Pool, running: Callable[[int], Context]
) -> None:
    subs = [await add_subscription(clean_db) for _ in range(6)]
    linger_ms = 3000
    claims = count_claims(running(linger_ms).store)
    # The loop's first claim finds the queue empty; the next may start one linger after it.
    await until(lambda: claims[0] >= 1)
    assert claims[0] >= 1
    before = batches()
    started = time.monotonic()
    for sub in subs:  # six signals, six NOTIFYs: six wake-ups of the worker
        await add_notified(clean_db, sub)
    inserted_within = time.monotonic() - started
    deadline = time.monotonic() + 30
    while await processed(clean_db) < len(subs) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await processed(clean_db) == len(subs)
    assert inserted_within < linger_ms / 1000, "the machine stalled: the signals were too slow"
    # Without the linger each NOTIFY woke a claim of its own: up to six batches.
    assert batches() - before == 1


async def test_a_lone_signal_is_decided_promptly(
    clean_db: asyncpg.Pool, running: Callable[[int], Context]
) -> None:
    sub = await add_subscription(clean_db)
    claims = count_claims(running(20).store)
    await until(lambda: claims[0] >= 1)
    await asyncio.sleep(0.3)  # idle for much longer than the linger
    before = batches()
    started = time.monotonic()
    await add_notified(clean_db, sub)
    while await processed(clean_db) < 1 and time.monotonic() - started < 30:
        await asyncio.sleep(0.01)
    # Within the linger plus generous slack; the 30 s poll would be the only other way.
    assert await processed(clean_db) == 1
    assert time.monotonic() - started < 5
    assert batches() - before == 1


async def test_a_full_batch_claims_again_without_lingering(
    clean_db: asyncpg.Pool, running: Callable[[int], Context]
) -> None:
    subs = [await add_subscription(clean_db) for _ in range(250)]
    for sub in subs:
        await add_signals(clean_db, sub, [Fix(datetime.now(UTC), *CAFE_A)])
    linger_s = 10.0
    started = time.monotonic()
    claims = count_claims(running(int(linger_s * 1000)).store)
    while await processed(clean_db) < len(subs) and time.monotonic() - started < 30:
        await asyncio.sleep(0.02)
    assert await processed(clean_db) == len(subs)
    # Batches of 100: two full ones, each claiming again at once, then the last 50. Had the
    # worker lingered after a full batch, the backlog would have taken two lingers.
    assert claims[0] == 3
    assert time.monotonic() - started < linger_s
