"""The sender loses its database connection between sending a batch and recording it: the
pushes are out, so their outcomes are kept and recorded as soon as the database answers again
(instead of the rows being sent a second time when their lease runs out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
import pytest

from service import push as sender_module
from service.context import Context
from service.push import Sender
from service.store import DATABASE_ERRORS
from service.testing import Fault, PushService
from tests.factories import insert_delivery, insert_subscription
from tests.push.conftest import delivery


def _lose_the_first_record(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, error: Exception | None = None
) -> list[int]:
    """record_outcomes fails once, as it does when PostgreSQL restarts under it."""
    real = ctx.store.record_outcomes
    calls: list[int] = []

    async def flaky(outcomes: Sequence[object], *args: object, **kwargs: object) -> int:
        calls.append(len(outcomes))
        if len(calls) == 1:
            raise error or asyncpg.ConnectionDoesNotExistError("connection was closed")
        return await real(outcomes, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ctx.store, "record_outcomes", flaky)
    return calls


async def test_outcomes_kept_from_a_lost_connection_are_recorded_before_the_next_claim(
    ctx: Context, push_service: PushService, sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = push_service.subscribe()
    sub_id = await insert_subscription(ctx.pool, sub)
    ids = [await insert_delivery(ctx.pool, sub_id) for _ in range(3)]
    calls = _lose_the_first_record(ctx, monkeypatch)
    with pytest.raises(DATABASE_ERRORS):
        await sender.run_once()
    assert len(sub.received) == 3  # out, but the database does not know yet
    assert await sender.run_once() == 0
    rows = [await delivery(ctx.pool, i) for i in ids]
    assert {(r["status"], r["claimed_until"]) for r in rows} == {("sent", None)}
    assert calls[:2] == [3, 3]
    assert len(sub.received) == 3


async def test_a_cancelled_batch_whose_record_fails_is_still_cancelled_and_kept(
    ctx: Context, push_service: PushService, sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = push_service.subscribe()
    slow = push_service.subscribe(Fault(delay=0.8))
    done = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, fast))
    cut = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, slow))
    _lose_the_first_record(ctx, monkeypatch)
    task = asyncio.create_task(sender.run_once())
    deadline = time.monotonic() + 5
    while not (fast.received and slow.request_times):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    # A shutdown cancels the lane: the database error of the last record must not hide it.
    with pytest.raises(asyncio.CancelledError):
        await task
    await sender.run_once()
    assert (await delivery(ctx.pool, done))["status"] == "sent"
    # The cut POST may have reached the push service: not released, it keeps its lease.
    held = await delivery(ctx.pool, cut)
    assert held["status"] == "pending" and held["claimed_until"] is not None
    assert len(fast.received) == 1


async def test_a_lane_keeps_the_outcomes_across_an_internal_client_error(
    ctx: Context, push_service: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What asyncpg raises for a statement on a pooled connection whose server already sent a
    # FATAL (measured under a pg_terminate_backend storm): the connection is gone, like any
    # other lost connection. The lane must live on and record the outcomes it kept.
    sub = push_service.subscribe()
    sub_id = await insert_subscription(ctx.pool, sub)
    ids = [await insert_delivery(ctx.pool, sub_id) for _ in range(3)]
    lost = asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    )
    calls = _lose_the_first_record(ctx, monkeypatch, lost)
    stop = asyncio.Event()
    task = asyncio.create_task(sender_module.run(ctx, stop))
    try:
        deadline = time.monotonic() + 15
        while await ctx.pool.fetchval("SELECT count(*) FROM deliveries WHERE status <> 'sent'"):
            assert not task.done(), task
            assert time.monotonic() < deadline, "the kept outcomes were not recorded"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=ctx.settings.shutdown_grace.total_seconds() + 2)
    assert calls[:2] == [3, 3]
    assert len(sub.received) == 3  # each once: not sent again after the lease
    rows = [await delivery(ctx.pool, i) for i in ids]
    assert {(r["status"], r["attempts"], r["claimed_until"]) for r in rows} == {("sent", 1, None)}


async def test_outcomes_survive_pg_terminate_backend_during_their_record(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    # For real: the record waits for a row lock, and its backend is terminated meanwhile.
    sub = push_service.subscribe(Fault(delay=0.5))
    sub_id = await insert_subscription(ctx.pool, sub)
    ids = [await insert_delivery(ctx.pool, sub_id) for _ in range(3)]
    task = asyncio.create_task(sender.run_once())
    async with ctx.pool.acquire() as blocker:
        deadline = time.monotonic() + 10
        while not sub.request_times:  # claimed (and committed), the sends under way
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT id FROM deliveries FOR UPDATE")
        waiting = None
        while waiting is None:
            assert time.monotonic() < deadline, "the record never waited for the lock"
            waiting = await ctx.pool.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%unnest($1::bigint[]%'"
            )
            await asyncio.sleep(0.01)
        assert await ctx.pool.fetchval("SELECT pg_terminate_backend($1)", waiting)
        with pytest.raises(DATABASE_ERRORS):
            await task
        await tx.rollback()
    assert len(sub.received) == 3
    assert {(await delivery(ctx.pool, i))["status"] for i in ids} == {"pending"}
    assert await sender.run_once() == 0  # records what it kept, claims nothing
    rows = [await delivery(ctx.pool, i) for i in ids]
    assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}
    assert len(sub.received) == 3
