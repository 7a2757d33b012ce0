"""A campaign experiment through SIGKILLs of real ``momentcast serve`` processes: one after
the test share's pushes went out and before the decision, one while the decision's
transaction is queueing the rest. Each restart takes over where the committed state is, and
every audience member gets exactly one push: the test share its variant, the rest the
winner the clicks chose."""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest

from service.campaigns import usecases as campaigns_api
from service.campaigns.experiment import in_test_share
from service.store import Store
from service.testing import BrowserSubscription, PushService
from tests.faults.conftest import Proc, Stack, add_browser_subscriptions
from tests.faults.dbfaults import FAN_OUT_STATEMENT, wait_blocked, wait_finished, wait_true

pytestmark = pytest.mark.slow

# The start of campaign_fan_out (pg_stat_activity keeps the first 1 kB of a query).
AUDIENCE = 120
SHARE = 0.3


async def _click(proc: Proc, sub: BrowserSubscription) -> None:
    """The subscriber follows the push's click link, as a browser without a service worker."""
    [message] = sub.messages()
    data = message["notification"]["data"]
    link = f"{proc.url}/c/{data['delivery_id']}/open?t={data['event_token']}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(link, allow_redirects=False) as r,
    ):
        assert r.status == 302


def _variant(sub: BrowserSubscription) -> str:
    [message] = sub.messages()
    return str(message["notification"]["data"]["variant"])


async def _decision(pool: asyncpg.Pool) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT decided_at, winner, started_at FROM campaign_experiments")
    assert row is not None
    return row


async def test_sigkill_between_and_during_the_phases_sends_each_member_one_push(
    stack: Stack, clean_db: asyncpg.Pool
) -> None:
    pool = clean_db
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        browser = await add_browser_subscriptions(pool, push, AUDIENCE)
        await pool.execute("UPDATE subscriptions SET topics = '{food}'")
        test = [(sid, sub) for sid, sub in browser if in_test_share(str(sid), "flash", SHARE)]
        rest = [(sid, sub) for sid, sub in browser if (sid, sub) not in test]
        body = {
            "id": "flash",
            "audience": {"topics": ["food"]},
            "message": {"title": "Flash sale", "url": "https://example.com/sale"},
            "variants": [
                {"name": "a", "weight": 1, "message": {"title": "10 % off"}},
                {"name": "b", "weight": 1, "message": {"title": "Free delivery"}},
            ],
            "experiment": {"test_share": SHARE, "decide_after": "1m", "metric": "clicked"},
            "send_at": datetime.now(UTC).isoformat(),
            "ttl": "1h",
        }
        await campaigns_api.create(Store(pool), json.dumps(body), now=datetime.now(UTC))

        # The test phase: the test share's pushes go out; half of b's get clicked.
        first = stack.start("serve")
        await wait_true(
            pool,
            "SELECT count(*) = $1 FROM deliveries WHERE status = 'sent'",
            60,
            len(test),
        )
        clicked = [sub for _, sub in test if _variant(sub) == "b"][::2]
        assert clicked, "b is tested"
        for sub in clicked:
            await _click(first, sub)
        # Killed after the test phase, before the decision is due.
        decision = await _decision(pool)
        assert decision["started_at"] is not None and decision["decided_at"] is None
        first.sp.proc.send_signal(signal.SIGKILL)
        first.sp.proc.wait(10)
        assert (await _decision(pool))["decided_at"] is None

        # An uncommitted delivery with one of the rest's dedupe keys: the decision's tick
        # waits on it half-way through queueing the rest, so the second kill lands there.
        blocked = rest[-1][0]
        async with pool.acquire() as blocker:
            tx = blocker.transaction()
            await tx.start()
            try:
                await blocker.execute(
                    "INSERT INTO deliveries (subscription_id, campaign_id, dedupe_key, payload,"
                    " ttl_s, expires_at) VALUES ($1, 'flash', $2, '{}', 60,"
                    " now() + interval '1 minute')",
                    blocked,
                    f"campaign:flash:{blocked}",
                )
                second = stack.start("serve")
                await wait_blocked(pool, FAN_OUT_STATEMENT, 120)
                # Deciding: the decision is written, not committed.
                assert (await _decision(pool))["decided_at"] is None
                second.sp.proc.send_signal(signal.SIGKILL)
                second.sp.proc.wait(10)
            finally:
                await tx.rollback()
        # The killed process's statement finishes, cannot answer, and rolls back: neither the
        # decision nor any of the rest's pushes was stored.
        await wait_finished(pool, FAN_OUT_STATEMENT, 30)
        assert (await _decision(pool))["decided_at"] is None
        assert await pool.fetchval("SELECT count(*) FROM deliveries") == len(test)

        third = stack.start("serve")
        await wait_true(
            pool,
            "SELECT count(*) = $1 FROM deliveries WHERE status = 'sent'",
            60,
            AUDIENCE,
        )
        assert third.stop() == 0
    finally:
        await push.close()
    received = Counter(sub.id for _, sub in browser for _ in sub.received)
    assert received == Counter({sub.id: 1 for _, sub in browser})
    decision = await _decision(pool)
    assert decision["winner"] == "b"
    assert {_variant(sub) for _, sub in rest} == {"b"}
    assert {_variant(sub) for _, sub in test} == {"a", "b"}
    assert await pool.fetchval("SELECT count(DISTINCT subscription_id) FROM deliveries") == (
        AUDIENCE
    )
