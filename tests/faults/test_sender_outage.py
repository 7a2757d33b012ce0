"""PostgreSQL restarted while a sender process is mid-batch: the process survives, reconnects by
itself, records what it sent while the database was away, and sends every push exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from service.testing import Fault, PushService
from tests.factories import insert_delivery
from tests.faults.conftest import Outage, Stack, add_browser_subscriptions, pool_for
from tests.security.logscan import Watch

pytestmark = pytest.mark.slow


def delivery_id(message: dict[str, Any]) -> int:
    """The delivery a decrypted push is for (plain or declarative Web Push message)."""
    data = message.get("notification", message)["data"]
    return int(data["delivery_id"])


async def test_sender_survives_a_postgres_restart_and_sends_each_push_once(
    outage_stack: tuple[Stack, Outage], log_privacy: Watch
) -> None:
    stack, pg = outage_stack
    worker = stack.start("worker", MOMENTCAST_SENDER_CONCURRENCY="8")
    pool = await pool_for(pg)
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        # Each request takes a while, so the restart lands while batches are being sent.
        browser = await add_browser_subscriptions(pool, push, 40)
        for _, sub in browser:
            sub.fault = Fault(delay=0.25)
        ids = [await insert_delivery(pool, browser[i % 40][0]) for i in range(160)]
        await pool.execute("NOTIFY momentcast_deliveries")
        deadline = time.monotonic() + 10
        while len(push.all_received()) < 24:
            assert time.monotonic() < deadline, "nothing sent before the restart"
            await asyncio.sleep(0.01)
        await pool.close()
        outage_at = len(push.all_received())
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(2.5)
        stopped_at = len(push.all_received())
        await asyncio.to_thread(pg.start)
        pool = await pool_for(pg)

        deadline = time.monotonic() + 60
        while await pool.fetchval("SELECT count(*) FROM deliveries WHERE status <> 'sent'"):
            assert time.monotonic() < deadline, "the sender did not catch up after the restart"
            assert worker.alive(), worker.stderr()
            await asyncio.sleep(0.2)
        # A batch was in flight when the database went away.
        assert stopped_at > outage_at, (outage_at, stopped_at)
        received = Counter(delivery_id(m) for _, sub in browser for m in sub.messages())
        assert sorted(received) == sorted(ids), "a push was lost"
        duplicated = {i: n for i, n in received.items() if n > 1}
        assert not duplicated, f"{len(duplicated)} pushes were sent twice"
    finally:
        await push.close()
    assert worker.alive(), worker.stderr()
    assert worker.stop() == 0, worker.stderr()
    assert "sender lane failed" not in worker.stderr()
    stack.check_logs(log_privacy.secrets)
