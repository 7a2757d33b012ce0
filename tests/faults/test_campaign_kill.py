"""A worker process killed with SIGKILL in the middle of a campaign's fan-out, then started
again: each subscriber gets exactly one push."""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import pytest

from service.campaigns import usecases as campaigns_api
from service.store import Store
from service.testing import PushService
from tests.faults.conftest import Stack, add_browser_subscriptions
from tests.faults.dbfaults import FAN_OUT_STATEMENT, wait_blocked, wait_finished, wait_true

pytestmark = pytest.mark.slow

# The start of campaign_fan_out (pg_stat_activity keeps the first 1 kB of a query).


async def test_sigkill_mid_fan_out_then_restart_sends_each_push_once(
    stack: Stack, clean_db: asyncpg.Pool
) -> None:
    pool = clean_db
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        browser = await add_browser_subscriptions(pool, push, 150)
        await pool.execute("UPDATE subscriptions SET topics = '{food}'")
        body = {
            "id": "flash",
            "audience": {"topics": ["food"]},
            "message": {"title": "Flash sale"},
            "send_at": datetime.now(UTC).isoformat(),
            "ttl": "1h",
        }
        await campaigns_api.create(Store(pool), json.dumps(body), now=datetime.now(UTC))
        # An uncommitted delivery with one subscriber's dedupe key: the fan-out's insert
        # waits on it half-way through its statement, so the kill lands mid-fan-out.
        async with pool.acquire() as blocker:
            tx = blocker.transaction()
            await tx.start()
            try:
                await blocker.execute(
                    "INSERT INTO deliveries (subscription_id, campaign_id, dedupe_key, payload,"
                    " ttl_s, expires_at) VALUES ($1, 'flash', $2, '{}', 60,"
                    " now() + interval '1 minute')",
                    browser[-1][0],
                    f"campaign:flash:{browser[-1][0]}",
                )
                proc = stack.start("worker", "--no-sender")
                await wait_blocked(pool, FAN_OUT_STATEMENT, 30)
                proc.sp.proc.send_signal(signal.SIGKILL)
                proc.sp.proc.wait(10)
            finally:
                await tx.rollback()
        # The killed process's statement finishes, cannot answer, and rolls back.
        await wait_finished(pool, FAN_OUT_STATEMENT, 30)
        assert await pool.fetchval("SELECT count(*) FROM deliveries") == 0
        assert await pool.fetchval("SELECT status FROM campaigns") == "scheduled"

        proc = stack.start("worker")
        await wait_true(pool, "SELECT count(*) = 150 FROM deliveries WHERE status = 'sent'", 60)
        assert proc.stop() == 0
    finally:
        await push.close()
    received = Counter(sub.id for _, sub in browser for _ in sub.received)
    assert received == Counter({sub.id: 1 for _, sub in browser})
    titles = {m["notification"]["title"] for _, sub in browser for m in sub.messages()}
    assert titles == {"Flash sale"}
    assert await pool.fetchval("SELECT count(DISTINCT subscription_id) FROM deliveries") == 150
