"""PostgreSQL dropping connections under load: every client backend of the database is
terminated every 0.3 s (what a restart, a failover or ``idle_session_timeout`` does to a
process) while hundreds of signals flow through a real ``momentcast serve`` to the strict
test push service. The process stays up, and every acknowledged signal that should push is
pushed exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import pytest

from service.testing import PushService
from tests.faults.conftest import Outage, Stack
from tests.faults.dbfaults import (
    Traffic,
    check_exactly_once,
    inside_rules,
    own_connection,
    register,
    storm,
    wait_settled,
)
from tests.security.logscan import Watch

pytestmark = pytest.mark.slow


async def test_backend_storm_under_load_loses_and_duplicates_nothing(
    outage_stack: tuple[Stack, Outage], log_privacy: Watch
) -> None:
    stack, pg = outage_stack
    inside_rules(stack)
    push = await PushService(stack.keys.vapid_public_b64).start()
    proc = stack.start("serve", MOMENTCAST_WORKER_BATCH_SIZE="20")
    traffic = Traffic()
    stop = asyncio.Event()
    storming: asyncio.Task[int] | None = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            tokens = await register(http, proc.url, push, 30)
            for token in tokens:
                log_privacy.remember(token)
            storming = asyncio.create_task(storm(pg.dsn, stop))
            started = time.monotonic()
            await traffic.send(http, proc.url, tokens, seed=3, total=800)
            # Terminating goes on a while after the last signal: the worker and the sender
            # are still busy with the backlog.
            while time.monotonic() - started < 12:
                assert proc.alive(), proc.stderr()
                await asyncio.sleep(0.2)
            stop.set()
            terminated = await storming
        assert proc.alive(), proc.stderr()
        assert terminated >= 50, f"the storm terminated only {terminated} backends"
        answers = Counter(traffic.answers.values())
        assert answers[202] >= 100, answers

        conn = await own_connection(pg.dsn)
        try:
            await wait_settled(conn, [proc], 60)
            await asyncio.sleep(1)  # a push answered just now is being recorded
            pushed = await check_exactly_once(conn, push, traffic)
        finally:
            await conn.close()
        assert len(pushed) >= 50, len(pushed)
        assert proc.alive(), proc.stderr()
        assert proc.stop() == 0, proc.stderr()
        stack.check_logs(log_privacy.secrets)
    finally:
        stop.set()
        if storming is not None and not storming.done():
            storming.cancel()
            await asyncio.gather(storming, return_exceptions=True)
        await push.close()
