"""PostgreSQL stopped and restarted under load: 503s while it is down, never a false 202, the
processes reconnect by themselves, and every accepted signal is decided exactly once."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import aiohttp
import pytest

from service.context import Context
from service.worker import Worker
from tests.faults.conftest import Outage, Stack, pool_for, registration_body
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


async def test_postgres_restart_loses_nothing_and_decides_once(
    outage_stack: tuple[Stack, Outage], log_privacy: Watch
) -> None:
    stack, pg = outage_stack
    api = stack.start("api")
    worker = stack.start("worker", "--no-sender", MOMENTCAST_WORKER_BATCH_SIZE="50")
    rng = random.Random(5)
    serial = itertools.count()
    # Signal number -> HTTP status or error name, and when it was sent and answered.
    answers: dict[int, int | str] = {}
    sent_at: dict[int, float] = {}
    answered_at: dict[int, float] = {}
    done = asyncio.Event()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        tokens = []
        for _ in range(20):
            async with http.post(api.url + "/v1/subscriptions", json=registration_body()) as r:
                assert r.status == 201
                tokens.append((await r.json())["token"])
                log_privacy.remember(tokens[-1])

        async def client(token: str) -> None:
            spot = rng.choice([CAFE_A, CAFE_B])
            while not done.is_set():
                n = next(serial)
                base = spot if rng.random() < 0.7 else FAR
                lat, lon = offset(base, rng.uniform(-80, 80))
                body = {"lat": lat, "lon": lon, "accuracy_m": 10, "context": {"n": n}}
                sent_at[n] = time.monotonic()
                try:
                    async with http.post(
                        api.url + "/v1/signals",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    ) as r:
                        answers[n] = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answers[n] = type(exc).__name__
                answered_at[n] = time.monotonic()
                await asyncio.sleep(0.02)

        clients = [asyncio.create_task(client(t)) for t in tokens]
        await asyncio.sleep(1.5)
        # In a thread: the clients run on this event loop, and a request must go out when
        # it is timed, not after a blocking stop or start has returned.
        stopping = time.monotonic()
        await asyncio.to_thread(pg.stop)
        down_from = time.monotonic()  # known down from here...
        await asyncio.sleep(3)
        async with http.get(api.url + "/readyz") as r:
            assert r.status == 503, "readiness must report the database gone"
        down_until = time.monotonic()  # ...until the start begins
        await asyncio.to_thread(pg.start)
        up_from = time.monotonic()
        await asyncio.sleep(4)
        done.set()
        await asyncio.gather(*clients)

    def within(start: float, end: float) -> list[int | str]:
        """The answers of the requests both sent and answered within [start, end]."""
        return [a for n, a in answers.items() if sent_at[n] > start and answered_at[n] < end]

    assert api.alive() and worker.alive(), api.stderr() + worker.stderr()
    down = within(down_from, down_until)
    # Every 202 follows a confirmed COMMIT: none while the server was known to be down.
    assert set(down) <= {503}, sorted(set(map(str, down)))
    assert down.count(503) >= 10
    assert 202 in within(0, stopping)
    # Reconnected by themselves: the tail of what was sent after the restart is all 202.
    tail = [answers[n] for n in sorted(answers) if sent_at[n] > up_from][-100:]
    assert tail and set(tail) == {202}, sorted(set(map(str, tail)))
    assert all(a in (202, 503) for a in answers.values()), sorted(set(map(str, answers.values())))

    pool = await pool_for(pg)
    deadline = time.monotonic() + 60
    while await pool.fetchval("SELECT count(*) FROM signals WHERE processed_at IS NULL"):
        assert time.monotonic() < deadline, "the worker did not catch up after the restart"
        assert worker.alive(), worker.stderr()
        await asyncio.sleep(0.3)
    stored = [r["n"] for r in await pool.fetch("SELECT (context->>'n')::int AS n FROM signals")]
    accepted = {n for n, a in answers.items() if a == 202}
    assert len(stored) == len(set(stored)), "a signal was stored twice"
    assert accepted <= set(stored), f"{len(accepted - set(stored))} accepted signals are missing"
    # A 503 whose COMMIT reached the server just before it died may exist; it is not a 202.
    assert len(set(stored) - accepted) <= 5

    decided = await outcome(pool)
    assert decided[0], "the stream should produce decisions"
    # Exactly what one uninterrupted worker decides on the same signals.
    await reset_processing(pool)
    ctx: Context = context_for(
        stack.settings.model_copy(update={"database_url": pg.dsn}), pool, stack.rules
    )
    await Worker(ctx).drain()
    assert await outcome(pool) == decided

    assert api.stop() == 0 and worker.stop() == 0
    stack.check_logs(log_privacy.secrets)


async def test_after_a_postgres_restart_signals_are_decided_at_once_again(
    outage_stack: tuple[Stack, Outage],
) -> None:
    """LISTEN is re-established: the worker wakes on the signal, not on its poll interval."""
    stack, pg = outage_stack
    api = stack.start("api")
    worker = stack.start("worker", "--no-sender", MOMENTCAST_WORKER_POLL_INTERVAL="10")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        tokens = []
        for _ in range(6):
            async with http.post(api.url + "/v1/subscriptions", json=registration_body()) as r:
                assert r.status == 201
                tokens.append((await r.json())["token"])
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(pg.start)
        pool = await pool_for(pg)
        deadline = time.monotonic() + 20
        while True:  # the API is back; the listener reconnects within its retry interval
            async with http.get(api.url + "/readyz") as r:
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "the API did not reconnect"
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)

        latencies = []
        for token in tokens:
            before = await pool.fetchval("SELECT count(*) FROM deliveries")
            started = time.monotonic()
            async with http.post(
                api.url + "/v1/signals",
                json={"lat": CAFE_A[0], "lon": CAFE_A[1], "accuracy_m": 5},
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                assert r.status == 202, await r.text()
            while await pool.fetchval("SELECT count(*) FROM deliveries") == before:
                assert time.monotonic() - started < 5, "decided on the poll interval, not NOTIFY"
                await asyncio.sleep(0.005)
            latencies.append(time.monotonic() - started)
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.1, latencies
    assert api.stop() == 0 and worker.stop() == 0
