"""The per-origin 429 pause is shared by every sender through the database (``push_origins``):
a push service that asked one sender to pause gets no request from any other either."""

from __future__ import annotations

from service.context import Context
from service.push import Sender
from service.store.deliveries import OriginPause
from service.testing import Fault, PushService
from tests.factories import insert_delivery, insert_subscription
from tests.push.conftest import delivery, make_due


async def _wait(ctx: Context, delivery_id: int) -> float:
    seconds: float = await ctx.pool.fetchval(
        "SELECT extract(epoch FROM not_before - now())::float8 FROM deliveries WHERE id = $1",
        delivery_id,
    )
    return seconds


async def test_a_429_seen_by_one_sender_pauses_the_origin_for_another(
    ctx: Context, push_service: PushService
) -> None:
    throttled = push_service.subscribe(Fault(status=429, retry_after="3", times=1))
    neighbour = push_service.subscribe()
    await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, throttled))
    async with Sender(ctx) as a, Sender(ctx) as b:
        assert await a.run_once() == 1
        assert throttled.statuses == [429]
        # b has never had a 429 of its own: it knows of the pause through the database only.
        second = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, neighbour))
        assert await b.run_once() == 1
    assert neighbour.request_times == []
    row = await delivery(ctx.pool, second)
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "pending",
        0,
        "origin backing off",
    )
    assert 2.0 < await _wait(ctx, second) <= 3.0


async def test_a_new_sender_learns_a_running_pause_before_its_first_request(
    ctx: Context, push_service: PushService
) -> None:
    # As a process started during the pause would: nothing in memory, one row in the table.
    await ctx.store.pause_origins([OriginPause(push_service.origin, 5.0, 1)])
    sub = push_service.subscribe()
    delivery_id = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
    async with Sender(ctx) as fresh:
        assert await fresh.run_once() == 1
    assert sub.request_times == []
    assert 4.0 < await _wait(ctx, delivery_id) <= 5.0


async def test_the_longer_pause_wins_and_other_origins_are_not_paused(ctx: Context) -> None:
    origin = "https://push.example.net"
    await ctx.store.pause_origins([OriginPause(origin, 30.0, 1)])
    # A later, shorter Retry-After from another process never shortens a running pause.
    await ctx.store.record_outcomes([], [OriginPause(origin, 2.0, 2)])
    # An origin whose pause is over and whose strikes were reset is nobody's concern.
    await ctx.store.pause_origins([OriginPause("https://calm.example.net", 0.0, 0)])
    [pause] = await ctx.store.paused_origins()
    assert pause.origin == origin and 29.0 < pause.pause_s <= 30.0 and pause.strikes == 2


async def test_strikes_are_shared_and_an_accepted_push_resets_them(
    ctx: Context, push_service: PushService
) -> None:
    # Without Retry-After the pause grows with the 429s in a row, whichever sender got them.
    sub = push_service.subscribe(Fault(status=429, times=2))
    delivery_id = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))

    async def end_the_pause() -> None:
        # What the clock would do, minus the waiting.
        await ctx.pool.execute("UPDATE push_origins SET paused_until = now()")
        await make_due(ctx.pool)

    async with Sender(ctx) as a:
        assert await a.run_once() == 1
    [pause] = await ctx.store.paused_origins()
    assert pause.strikes == 1 and 0.9 < pause.pause_s <= 2.0  # base 2 s x [0.5, 1], >= 1 s
    await end_the_pause()
    async with Sender(ctx) as b:
        assert await b.run_once() == 1
    [pause] = await ctx.store.paused_origins()
    assert pause.strikes == 2 and 1.9 < pause.pause_s <= 4.0
    await end_the_pause()
    async with Sender(ctx) as c:
        assert await c.run_once() == 1
    assert sub.statuses == [429, 429, 201]
    assert (await delivery(ctx.pool, delivery_id))["status"] == "sent"
    # Accepted again: no strikes left, and the pause is over.
    assert await ctx.store.paused_origins() == []


async def test_the_429s_of_requests_in_flight_together_are_one_strike(
    ctx: Context, push_service: PushService
) -> None:
    # Ten requests on their way when the push service starts throttling: ten 429s, but one
    # throttling, so the pause without Retry-After is the first strike's (not 2**10 s).
    throttled = Fault(status=429, delay=0.2)
    for _ in range(10):
        sub = push_service.subscribe(throttled)
        await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
    async with Sender(ctx) as a:
        assert await a.run_once() == 10
    assert len(push_service.rejections) == 10
    [pause] = await ctx.store.paused_origins()
    assert pause.strikes == 1 and pause.pause_s <= 2.0
