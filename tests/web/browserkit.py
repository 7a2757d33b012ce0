"""Helpers of the browser tests: the system Chromium that playwright drives, and a delivery
put in by SQL that the page's service worker is then handed.

Importing this module skips the importing test module when playwright is not installed; the
tests themselves skip when there is no Chromium binary (see their ``pytestmark``).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests import factories
from tests.factories import insert_subscription

async_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is not installed (test extra)"
)

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    found = shutil.which("chromium")
    CHROMIUM = Path(found) if found else CHROMIUM

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


TIMEOUT_S = 10.0


MESSAGE: dict[str, Any] = {
    "title": "Coffee at Cafe A",
    "body": "Cafe A is 40 m away",
    "tag": "coffee",
    "lang": "en",
    "actions": [
        {"action": "menu", "title": "Menu", "url": "https://example.com/menu"},
        {"action": "later", "title": "Later", "url": "https://example.com/later"},
    ],
}


async def insert_delivery(pool: asyncpg.Pool, message: dict[str, Any]) -> int:
    """A subscription and a sent delivery, as the worker and the sender would leave them."""
    subscription_id = await insert_subscription(
        pool, endpoint="http://127.0.0.1:9/push/browser-test"
    )
    return await factories.insert_delivery(
        pool, subscription_id, payload=message, rule_id="promo", variant="b", topic="coffee"
    )


async def wait_for_event(pool: asyncpg.Pool, delivery_id: int, kind: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        found = await pool.fetchval(
            "SELECT count(*) FROM events WHERE delivery_id = $1 AND type = $2", delivery_id, kind
        )
        if found:
            return
        if asyncio.get_running_loop().time() > deadline:
            rows = await pool.fetch("SELECT * FROM events")
            pytest.fail(
                f"no {kind!r} event for delivery {delivery_id} reached the server "
                f"within {TIMEOUT_S} s; events: {[dict(r) for r in rows]}"
            )
        await asyncio.sleep(0.05)


GET_NOTIFICATIONS = """async () => {
  const registration = await navigator.serviceWorker.ready;
  const shown = await registration.getNotifications();
  return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, lang: n.lang,
    actions: n.actions.map((a) => a.title), data: n.data }));
}"""
