"""The per-origin 429 pause is shared by every sender through the database (``push_origins``):
a push service that asked one sender to pause gets no request from any other either."""

from __future__ import annotations

from service.context import Context
from service.store.deliveries import OriginPause


async def test_the_longer_pause_wins_and_other_origins_are_not_paused(ctx: Context) -> None:
    origin = "https://push.example.net"
    await ctx.store.pause_origins([OriginPause(origin, 30.0, 1)])
    # A later, shorter Retry-After from another process never shortens a running pause.
    await ctx.store.record_outcomes([], [OriginPause(origin, 2.0, 2)])
    # An origin whose pause is over and whose strikes were reset is nobody's concern.
    await ctx.store.pause_origins([OriginPause("https://calm.example.net", 0.0, 0)])
    [pause] = await ctx.store.paused_origins()
    assert pause.origin == origin and 29.0 < pause.pause_s <= 30.0 and pause.strikes == 2
