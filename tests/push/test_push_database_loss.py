"""The sender loses its database connection between sending a batch and recording it: the
pushes are out, so their outcomes are kept and recorded as soon as the database answers again
(instead of the rows being sent a second time when their lease runs out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
import pytest

from service.context import Context
from service.push import Sender
from service.store import DATABASE_ERRORS
from service.testing import Fault, PushService
from tests.push.conftest import delivery, insert_delivery, insert_subscription


def _lose_the_first_record(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """record_outcomes fails once, as it does when PostgreSQL restarts under it."""
    real = ctx.store.record_outcomes
    calls: list[int] = []

    async def flaky(outcomes: Sequence[object], *args: object) -> None:
        calls.append(len(outcomes))
        if len(calls) == 1:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")
        await real(outcomes, *args)  # type: ignore[arg-type]

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
    released = await delivery(ctx.pool, cut)
    assert released["claimed_until"] is None and released["status"] in ("pending", "sent")
    assert len(fast.received) == 1
