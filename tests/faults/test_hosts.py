"""Several hosts: `momentcast api` on one, `momentcast worker` on another, each with its own
DATA_DIR, sharing what docs/operations.md ("Several hosts") says they must share. A push
decided and sent by the worker carries an event token the API accepts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import asyncpg
import pytest

from service.testing import BrowserSubscription, PushService
from service.webpush import vapid
from tests.conftest import ADMIN_TOKEN
from tests.faults.conftest import Proc, Stack
from tests.processes import start
from tests.security.logscan import Watch
from tests.worker.conftest import CAFE_A

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET_KEY = "two-hosts-share-this-event-token-key-0123456789"


async def _first_push(
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    api: Proc,
    worker: Proc,
    sub: BrowserSubscription,
) -> dict[str, Any]:
    """Register through the API host, send one signal at the café, wait for the push."""
    async with http.post(
        api.url + "/v1/subscriptions",
        json={"subscription": sub.to_json(), "location_consent": True},
    ) as r:
        assert r.status == 201, await r.text()
        token = (await r.json())["token"]
    async with http.post(
        api.url + "/v1/signals",
        json={"lat": CAFE_A[0], "lon": CAFE_A[1], "accuracy_m": 5},
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        assert r.status == 202, await r.text()
    deadline = time.monotonic() + 30
    # Received, and its 201 recorded by the sender.
    while not sub.received or not await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE status = 'sent'"
    ):
        assert api.alive(), api.stderr()
        assert worker.alive(), worker.stderr()
        assert time.monotonic() < deadline, "no push within 30 s:\n" + worker.stderr()
        await asyncio.sleep(0.1)
    data: dict[str, Any] = sub.messages()[0]["notification"]["data"]
    return data


async def _post_events(http: aiohttp.ClientSession, data: dict[str, Any]) -> list[int]:
    statuses = []
    for kind in ("shown", "clicked"):
        body = {"delivery_id": data["delivery_id"], "token": data["event_token"], "type": kind}
        async with http.post(data["events_url"], json=body) as r:
            statuses.append(r.status)
    return statuses


async def _coffee_stats(http: aiohttp.ClientSession, api: Proc) -> dict[str, Any]:
    async with http.get(api.url + "/v1/stats", headers=ADMIN) as r:
        assert r.status == 200, await r.text()
        rows = [row for row in (await r.json())["rules"] if row["rule"] == "coffee"]
    assert len(rows) == 1, rows
    row: dict[str, Any] = rows[0]
    return row


async def test_api_and_worker_on_two_hosts_record_events_with_one_secret_key(
    stack: Stack, clean_db: asyncpg.Pool, log_privacy: Watch
) -> None:
    push = await PushService(stack.keys.vapid_public_b64).start()
    # What the hosts share; the data dirs are their own.
    shared = {
        "MOMENTCAST_SECRET_KEY": SECRET_KEY,
        "MOMENTCAST_VAPID_PRIVATE_KEY": vapid.private_key_to_b64url(stack.keys.vapid_private),
    }
    log_privacy.remember(SECRET_KEY)
    try:
        api = stack.start("api", MOMENTCAST_DATA_DIR=str(stack.tmp / "host-a"), **shared)
        worker = stack.start(
            "worker",
            MOMENTCAST_DATA_DIR=str(stack.tmp / "host-b"),
            MOMENTCAST_PUBLIC_URL=api.url,
            **shared,
        )
        sub = push.subscribe()
        async with aiohttp.ClientSession() as http:
            data = await _first_push(http, clean_db, api, worker, sub)
            log_privacy.remember(data["event_token"])
            assert data["events_url"] == api.url + "/v1/events"
            assert await _post_events(http, data) == [202, 202]
            row = await _coffee_stats(http, api)
            assert (row["sent"], row["shown"], row["clicked"]) == (1, 1, 1), row
        # Neither host wrote a key of its own: the setting is the key.
        assert not (stack.tmp / "host-a" / "secret_key").exists()
        assert not (stack.tmp / "host-b" / "secret_key").exists()
        assert api.stop() == 0, api.stderr()
        assert worker.stop() == 0, worker.stderr()
        stack.check_logs(log_privacy.secrets)
    finally:
        await push.close()


async def test_without_a_shared_secret_key_the_second_host_does_not_start(
    stack: Stack, clean_db: asyncpg.Pool
) -> None:
    """What an operator who follows the docs half-way gets: each host would generate its own
    key, and every event of the worker's pushes would be refused with 403. The database
    remembers the first host's key, so the second host stops at start-up with one line."""
    shared = {"MOMENTCAST_VAPID_PRIVATE_KEY": vapid.private_key_to_b64url(stack.keys.vapid_private)}
    api = stack.start("api", MOMENTCAST_DATA_DIR=str(stack.tmp / "host-a"), **shared)
    worker = start(
        ["worker"],
        stack.env(
            MOMENTCAST_DATA_DIR=str(stack.tmp / "host-b"), MOMENTCAST_PUBLIC_URL=api.url, **shared
        ),
    )
    _, err = worker.proc.communicate(timeout=120)
    assert worker.proc.returncode == 2, err
    [line] = [line for line in err.splitlines() if "configuration error" in line]
    assert line.startswith("momentcast: configuration error: MOMENTCAST_SECRET_KEY: "), err
    assert "Traceback" not in err, err
    assert api.alive()
    assert api.stop() == 0, api.stderr()
