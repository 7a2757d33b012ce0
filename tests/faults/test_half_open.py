"""A half-open database connection: a proxy between ``momentcast serve`` and PostgreSQL stops
forwarding on every connection open at that moment, keeping the sockets open (a dead peer
behind a NAT, a middlebox that lost its state); new connections pass. The process notices
within 30 s, replaces its connections, keeps delivering, and pushes every acknowledged signal
exactly once."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime

import aiohttp
import pytest

from service.testing import PushService
from tests.faults.conftest import Outage, Stack
from tests.faults.dbfaults import (
    FreezingProxy,
    Traffic,
    check_exactly_once,
    inside_rules,
    own_connection,
    postgres_address,
    register,
    wait_settled,
)
from tests.security.logscan import Watch

pytestmark = pytest.mark.slow

NOTICE_WITHIN_S = 30  # DESIGN.md, "Trust under routine production events"
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def first_timeout_logged(lines: list[str]) -> datetime | None:
    """When a background component first logged a timed-out database connection (the API's
    own signal COMMIT timeout does not count: it says nothing of the connection)."""
    for line in lines:
        match = _LOG_TIME.match(line)
        if match and "TimeoutError" in line and re.search(r"worker:|sender:|LISTEN", line):
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return None


async def test_a_half_open_connection_is_noticed_and_replaced(
    outage_stack: tuple[Stack, Outage], log_privacy: Watch
) -> None:
    stack, pg = outage_stack
    inside_rules(stack)
    proxy = await FreezingProxy(postgres_address(pg.dsn)).start()
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        # DB_TIMEOUT stays at its default: the 30 s are the default's promise. Started from
        # a thread: the proxy it connects through runs on this event loop.
        proc = await asyncio.to_thread(
            stack.start, "serve", MOMENTCAST_DATABASE_URL=proxy.dsn(pg.dsn)
        )
        traffic = Traffic()
        conn = await own_connection(pg.dsn)  # the test's own, not through the proxy
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            tokens = await register(http, proc.url, push, 10)
            for token in tokens:
                log_privacy.remember(token)
            await traffic.send(http, proc.url, tokens, seed=5, total=60)
            await wait_settled(conn, [proc], 30)
            assert len(push.all_received()) >= 20

            frozen = proxy.freeze()
            frozen_at, frozen_wall = time.monotonic(), datetime.now()
            # The pool's connections and the three LISTEN connections at least.
            assert frozen >= 4, frozen
            await traffic.send(
                http, proc.url, tokens, seed=6, until=frozen_at + NOTICE_WITHIN_S + 4, pause_s=0.2
            )
        assert proc.alive(), proc.stderr()

        noticed = first_timeout_logged(proc.err)
        assert noticed is not None, "no component noticed the silent connections"
        assert (noticed - frozen_wall).total_seconds() <= NOTICE_WITHIN_S, noticed

        await wait_settled(conn, [proc], 60)
        await asyncio.sleep(1)  # a push answered just now is being recorded
        pushed = await check_exactly_once(conn, push, traffic)
        await conn.close()
        # It kept delivering: signals sent after the freeze were accepted and pushed, the
        # first of them soon after the silent connections were noticed.
        after = [n for n in pushed if traffic.sent_at[n] > frozen_at]
        assert len(after) >= 5, (len(after), sorted(set(map(str, traffic.answers.values()))))
        received_at = {
            r.json()["notification"]["data"]["delivery_id"]: r.at for r in push.all_received()
        }
        first = min(received_at[pushed[n]] for n in after) - frozen_at
        assert first <= NOTICE_WITHIN_S + 10, f"the first push after the freeze took {first:.1f}s"

        assert proc.alive(), proc.stderr()
        assert proc.stop() == 0, proc.stderr()
        stack.check_logs(log_privacy.secrets)
    finally:
        await push.close()
        await proxy.close()
