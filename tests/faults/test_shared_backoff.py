"""Two sender processes and one push service that answers 429 with Retry-After: once one of
them has been told to pause, neither sends that push service anything until the pause ends."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest

from service.testing import Fault, PushService
from tests.factories import insert_delivery
from tests.faults.conftest import Stack, add_browser_subscriptions
from tests.security.logscan import Watch

pytestmark = pytest.mark.slow


def delivery_id(message: dict[str, Any]) -> int:
    """The delivery a decrypted push is for (plain or declarative Web Push message)."""
    data = message.get("notification", message)["data"]
    return int(data["delivery_id"])


RETRY_AFTER = 4  # seconds
# A pause reaches the other processes through the database within milliseconds of the 429;
# the test starts sending more only after this much (a request already on its way when the
# 429 arrived would still get through; there is none here).
SETTLE = 0.1


async def test_two_sender_processes_honour_one_429(
    stack: Stack, clean_db: asyncpg.Pool, log_privacy: Watch
) -> None:
    pool = clean_db
    env = {"MOMENTCAST_SENDER_CONCURRENCY": "4"}
    procs = [stack.start("worker", **env), stack.start("worker", **env)]
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        # One fault object for every subscription: the first request to this push service,
        # whoever makes it, is answered 429; the ones after it would all be accepted.
        throttle = Fault(status=429, retry_after=str(RETRY_AFTER), times=1)
        browser = await add_browser_subscriptions(pool, push, 30)
        for _, sub in browser:
            sub.fault = throttle
        ids = [await insert_delivery(pool, browser[0][0])]
        await pool.execute("NOTIFY momentcast_deliveries")
        deadline = time.monotonic() + 10
        while not browser[0][1].request_times:
            assert time.monotonic() < deadline, "nobody sent the first push"
            await asyncio.sleep(0.005)
        first_429 = browser[0][1].request_times[0]
        assert browser[0][1].statuses == [429]

        # More pushes for the same push service, in waves that both processes race for (the
        # one that did not get the 429 has nothing in memory about it).
        await asyncio.sleep(SETTLE)
        for wave in range(14):
            for k in range(2):
                sid, _ = browser[1 + (2 * wave + k) % (len(browser) - 1)]
                ids.append(await insert_delivery(pool, sid))
            await pool.execute("NOTIFY momentcast_deliveries")
            await asyncio.sleep(0.2)
        assert time.monotonic() - first_429 < RETRY_AFTER - 0.5

        deadline = time.monotonic() + 30
        while await pool.fetchval("SELECT count(*) FROM deliveries WHERE status <> 'sent'"):
            assert time.monotonic() < deadline, "the pushes were not all sent after the pause"
            for p in procs:
                assert p.alive(), p.stderr()
            await asyncio.sleep(0.1)

        requests = sorted(t for _, sub in browser for t in sub.request_times)
        assert requests[0] == first_429
        early = [round(t - first_429, 3) for t in requests[1:] if t - first_429 < RETRY_AFTER - 0.2]
        assert early == [], f"requests during the {RETRY_AFTER} s pause, at +{early} s"
        received = Counter(delivery_id(m) for _, sub in browser for m in sub.messages())
        assert sorted(received) == sorted(ids) and set(received.values()) == {1}
    finally:
        await push.close()
    for p in procs:
        assert p.stop() == 0, p.stderr()
    stack.check_logs(log_privacy.secrets)
