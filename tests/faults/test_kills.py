"""Worker and sender processes killed with SIGKILL, repeatedly, and a push service on a bad
day: nothing lost, nothing decided twice, nothing sent twice after its 201 was recorded."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from service.testing import Fault, PushService, Received
from service.worker import Worker
from tests.factories import insert_delivery
from tests.faults.conftest import Stack, add_browser_subscriptions
from tests.security.logscan import Watch
from tests.worker.conftest import (
    CAFE_A,
    CAFE_B,
    FAR,
    context_for,
    offset,
    outcome,
    reset_processing,
)

pytestmark = pytest.mark.slow


def _delivery_id(received: Received) -> int:
    delivery_id: int = received.json()["notification"]["data"]["delivery_id"]
    return delivery_id


async def _stream(pool: asyncpg.Pool, subs: list[uuid.UUID], per_sub: int, seed: int) -> None:
    rng = random.Random(seed)
    # Recent enough that the decided pushes are still within their TTL when sent.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=8)
    rows = []
    for sid in subs:
        spot = rng.choice([CAFE_A, CAFE_B])
        for i in range(per_sub):
            lat, lon = offset(spot if rng.random() < 0.6 else FAR, rng.uniform(-90, 90))
            rows.append(
                (sid, start + timedelta(seconds=30 * i + rng.randint(0, 20)), lat, lon, 10.0)
            )
    rng.shuffle(rows)
    await pool.copy_records_to_table(
        "signals", records=rows, columns=["subscription_id", "at", "lat", "lon", "accuracy_m"]
    )


async def _until(pool: asyncpg.Pool, sql: str, timeout: float, procs: list) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while await pool.fetchval(sql):
        assert time.monotonic() < deadline, f"still true after {timeout}s: {sql}"
        for p in procs:
            assert p.alive(), p.stderr()
        await asyncio.sleep(0.2)


async def test_sigkill_of_worker_and_sender_loses_and_duplicates_nothing(
    stack: Stack, clean_db: asyncpg.Pool, log_privacy: Watch
) -> None:
    pool = clean_db
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        # Each request takes a little while, so kills land mid-batch, mid-send.
        browser = await add_browser_subscriptions(pool, push, 200)
        for _, sub in browser:
            sub.fault = Fault(delay=0.1)
        await _stream(pool, [sid for sid, _ in browser], per_sub=20, seed=21)
        ctx = context_for(stack.settings, pool, stack.rules)
        await Worker(ctx).drain()
        expected = await outcome(pool)
        assert len(expected[0]) > 100
        await reset_processing(pool)

        rng = random.Random(8)
        in_kill_window: set[int] = set()
        decided_left = []
        # Early kills land while signals are being decided, later ones while pushes are sent.
        for kill in range(7):
            p = stack.start(
                "worker", MOMENTCAST_WORKER_BATCH_SIZE="5", MOMENTCAST_SENDER_CONCURRENCY="4"
            )
            await asyncio.sleep(rng.uniform(0.02, 0.25) if kill < 4 else rng.uniform(0.4, 1.0))
            p.stop(signal.SIGKILL)
            decided_left.append(
                await pool.fetchval("SELECT count(*) FROM signals WHERE processed_at IS NULL")
            )
            # What reached the receiver but is not recorded as sent may be sent again: the
            # sender died between the push service's 201 and its own COMMIT.
            received = {_delivery_id(m) for m in push.all_received()}
            recorded = {
                r["id"] for r in await pool.fetch("SELECT id FROM deliveries WHERE status = 'sent'")
            }
            in_kill_window |= received - recorded
        assert decided_left[0] > 0, "the first kills should interrupt the worker"
        left = decided_left[-1]
        unsent = await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'")
        assert left + unsent > 0, "the kills should interrupt work in progress"

        final = stack.start("worker", MOMENTCAST_SENDER_CONCURRENCY="16")
        await _until(pool, "SELECT count(*) FROM signals WHERE processed_at IS NULL", 90, [final])
        await _until(pool, "SELECT count(*) FROM deliveries WHERE status = 'pending'", 90, [final])
        assert final.stop() == 0

        assert await outcome(pool) == expected  # decisions: exactly once
        statuses = Counter(r["status"] for r in await pool.fetch("SELECT status FROM deliveries"))
        assert statuses == Counter({"sent": len(expected[0])}), statuses
        copies = Counter(_delivery_id(m) for m in push.all_received())
        sent_ids = {r["id"] for r in await pool.fetch("SELECT id FROM deliveries")}
        assert set(copies) == sent_ids, "every delivery reached its browser"
        twice = {d for d, n in copies.items() if n > 1}
        assert twice <= in_kill_window, f"sent twice after a recorded 201: {twice - in_kill_window}"
        assert len(twice) <= len(in_kill_window)
        stack.check_logs(log_privacy.secrets)
    finally:
        await push.close()


def _bad_day(rng: random.Random) -> Fault | None:
    kind = rng.choice(["ok", "ok", "500", "503", "timeout", "reset", "429", "410", "500-always"])
    times = rng.randint(1, 2)
    return {
        "ok": None,
        "500": Fault(status=500, times=times),
        "503": Fault(status=503, times=times),
        # Answers after the sender gave up (read timeout 1 s), and then not with a 201.
        "timeout": Fault(delay=1.6, status=503, times=1),
        "reset": Fault(reset=True, times=times),
        "429": Fault(status=429, retry_after="1", times=1),
        "410": Fault(status=410),
        "500-always": Fault(status=500),
    }[kind]


async def test_push_service_on_a_bad_day_every_delivery_ends_once(
    stack: Stack, clean_db: asyncpg.Pool, log_privacy: Watch
) -> None:
    pool = clean_db
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        rng = random.Random(13)
        browser = await add_browser_subscriptions(pool, push, 60)
        by_delivery = {}
        for sid, sub in browser:
            sub.fault = _bad_day(rng)
            by_delivery[await insert_delivery(pool, sid, ttl_s=600)] = sub
        proc = stack.start("worker")
        await _until(pool, "SELECT count(*) FROM deliveries WHERE status = 'pending'", 90, [proc])
        assert proc.stop() == 0
        rows = {r["id"]: r for r in await pool.fetch("SELECT * FROM deliveries")}
        finals = Counter(r["status"] for r in rows.values())
        assert set(finals) <= {"sent", "failed", "gone"}, finals
        assert finals["sent"] and finals["failed"] and finals["gone"], finals
        for delivery_id, sub in by_delivery.items():
            row = rows[delivery_id]
            got = [_delivery_id(m) for m in sub.received]
            if row["status"] == "sent":
                assert got == [delivery_id], (row["status"], sub.statuses)
                assert sub.statuses[-1] == 201 and sub.statuses.count(201) == 1
            else:
                assert got == [], (row["status"], sub.statuses)
            # Every attempt the sender counted is a request the push service saw, and after
            # a 201 there was none.
            assert row["attempts"] == len(sub.request_times), (row["attempts"], sub.statuses)
            # (A request cut off by the sender's timeout records no status, so the statuses
            # list can be shorter; a 201 is still the last thing this subscription saw.)
            assert sub.statuses.count(201) <= 1
            if 201 in sub.statuses:
                assert sub.statuses[-1] == 201
        stack.check_logs(log_privacy.secrets)
    finally:
        await push.close()
