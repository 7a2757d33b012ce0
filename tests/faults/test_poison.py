"""A signal whose evaluation raises is quarantined; the rest of its batch is decided."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest

from service.testing import PushService
from tests.conftest import ADMIN_TOKEN
from tests.faults.conftest import Stack, add_browser_subscriptions
from tests.worker.conftest import CAFE_A

pytestmark = pytest.mark.slow

# The API refuses signals from the future, but a row written by an older version or by hand
# can hold one; at the end of year 9999 UTC, Berlin's local time no longer exists and the
# engine's local-time arithmetic raises OverflowError. A real poison, not an injected one.
POISON_AT = datetime(9999, 12, 31, 23, 30, tzinfo=UTC)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_a_poison_signal_is_quarantined_and_the_batch_is_decided(
    stack: Stack, clean_db: asyncpg.Pool
) -> None:
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        subs = await add_browser_subscriptions(clean_db, push, 4)
        now = datetime.now(UTC)
        rows = [(sid, now, *CAFE_A) for sid, _ in subs]
        poisoned = subs[0][0]
        rows.append((poisoned, POISON_AT, *CAFE_A))
        await clean_db.executemany(
            "INSERT INTO signals (subscription_id, at, lat, lon, accuracy_m)"
            " VALUES ($1, $2, $3, $4, 5)",
            rows,
        )
        worker = stack.start("serve")
        deadline = time.monotonic() + 30
        while True:
            left = await clean_db.fetchval(
                "SELECT count(*) FROM signals WHERE processed_at IS NULL"
            )
            if left == 0:
                break
            assert worker.alive(), worker.stderr()
            assert time.monotonic() < deadline, f"{left} signals still queued\n{worker.stderr()}"
            await asyncio.sleep(0.2)

        quarantined = await clean_db.fetch(
            "SELECT subscription_id, at, attempts, quarantine_reason FROM signals"
            " WHERE quarantined_at IS NOT NULL"
        )
        assert [(q["subscription_id"], q["at"]) for q in quarantined] == [(poisoned, POISON_AT)]
        assert quarantined[0]["attempts"] == 3
        assert "OverflowError" in quarantined[0]["quarantine_reason"]
        # Every subscriber's ordinary signal was decided, the poisoned one's included.
        decided = await clean_db.fetch("SELECT subscription_id FROM deliveries")
        assert sorted(d["subscription_id"] for d in decided) == sorted(sid for sid, _ in subs)
        async with (
            aiohttp.ClientSession() as http,
            http.get(worker.url + "/metrics", headers=ADMIN) as r,
        ):
            metrics = await r.text()
        assert "momentcast_signals_quarantined_total 1.0" in metrics
        assert worker.alive()
        # In a thread: the push service runs on this event loop and may be answering a send
        # that the stop waits for.
        assert await asyncio.to_thread(worker.stop) == 0
        assert "quarantined" in worker.stderr()
        assert "52.52" not in worker.stderr()  # the log line names no location
    finally:
        await push.close()
