"""service.waiting.wait_any: the one "until stop, a wake-up or the next poll" wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.waiting import wait_any


async def test_returns_when_an_event_is_set_long_before_the_limit() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, wake.set)
    started = time.monotonic()
    await wait_any(stop, wake, seconds=60)
    assert wake.is_set() and not stop.is_set()
    assert time.monotonic() - started < 30


async def test_returns_after_the_limit_when_no_event_is_set() -> None:
    stop = asyncio.Event()
    started = time.monotonic()
    await wait_any(stop, seconds=0.05)
    assert not stop.is_set()
    assert time.monotonic() - started >= 0.04


async def test_an_event_already_set_still_lets_other_tasks_run() -> None:
    stop = asyncio.Event()
    stop.set()
    ran = asyncio.Event()

    async def other() -> None:
        ran.set()

    task = asyncio.create_task(other())
    await wait_any(stop, seconds=60)
    assert ran.is_set()
    await task


async def test_leaves_no_waiter_behind() -> None:
    before = asyncio.all_tasks()
    stop, lost = asyncio.Event(), asyncio.Event()
    await wait_any(stop, lost, seconds=0.01)
    assert asyncio.all_tasks() == before


async def test_cancelled_while_waiting_leaves_no_waiter_behind() -> None:
    before = asyncio.all_tasks()
    stop = asyncio.Event()
    waiting = asyncio.create_task(wait_any(stop, seconds=60))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert asyncio.all_tasks() == before


async def test_needs_an_event() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        await wait_any(seconds=1)
