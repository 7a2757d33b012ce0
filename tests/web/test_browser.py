"""The demo page, the SDK's service worker and /v1/events in a real browser (system Chromium).

A push is delivered to the service worker through the DevTools protocol
(``ServiceWorker.deliverPushMessage``): headless Chromium has no push service to subscribe
with, but the worker's ``push`` handler runs exactly as for a real push, with the plaintext the
sender would encrypt (``render_payload``: a declarative message with the per-delivery data, a
real event token and click links).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from service import tokens
from service.webpush.message import render_payload
from tests.api.conftest import register
from tests.conftest import LiveApi
from tests.web.browserkit import (
    CHROMIUM,
    CHROMIUM_ARGS,
    GET_NOTIFICATIONS,
    MESSAGE,
    TIMEOUT_S,
    async_api,
    insert_delivery,
    wait_for_event,
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no system Chromium (Debian package `chromium`; .ci/run installs it)",
)


# notificationclick cannot be produced headless (no notification UI, and DevTools has no
# "click notification" command), so the worker dispatches one itself for the notification it
# really shows: sw.js's own notificationclick listener runs on it. The event is untrusted, so
# its waitUntil() throws and openWindow()/focus() are refused; the report is what is tested.
CLICK_IN_WORKER = """async ([tag, action]) => {
  const [notification] = await self.registration.getNotifications({ tag });
  if (!notification) return false;
  self.dispatchEvent(new NotificationEvent("notificationclick", { notification, action }));
  return true;
}"""


async def test_declarative_push_shows_notification_and_reports_shown_and_clicked_action(
    api: LiveApi,
    clean_db: asyncpg.Pool,
) -> None:
    message = {**MESSAGE, "url": api.url + "/#coffee"}
    delivery_id = await insert_delivery(clean_db, message)
    data = {
        "delivery_id": delivery_id,
        "rule": "promo",
        "variant": "b",
        "events_url": api.url + "/v1/events",
        "event_token": tokens.event_token(api.ctx.keys.secret_key, delivery_id),
    }
    plaintext = render_payload(message, data, base_url=api.url).decode("utf-8")

    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            await context.grant_permissions(["notifications"], origin=api.url)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            await page.goto(api.url + "/")
            assert await page.evaluate("typeof Momentcast") != "undefined"
            cdp = await context.new_cdp_session(page)
            registrations: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

            def on_versions(event: dict[str, Any]) -> None:
                for version in event["versions"]:
                    registrations.put_nowait(version)

            cdp.on("ServiceWorker.workerVersionUpdated", on_versions)
            await cdp.send("ServiceWorker.enable")

            # The demo page's Subscribe button: the SDK registers /sw.js. Its push subscription
            # then fails headless (no push service behind this Chromium), which the page
            # reports; the worker stays registered, and that is all this test needs.
            await page.click("#subscribe")
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    version = await registrations.get()
                    if (
                        version["scriptURL"] == api.url + "/sw.js"
                        and version["status"] == "activated"
                    ):
                        break

            await cdp.send(
                "ServiceWorker.deliverPushMessage",
                {
                    "origin": api.url,
                    "registrationId": version["registrationId"],
                    "data": plaintext,
                },
            )
            await wait_for_event(clean_db, delivery_id, "shown")
            shown = await page.evaluate(GET_NOTIFICATIONS)
            assert [(n["title"], n["body"], n["tag"], n["lang"]) for n in shown] == [
                (MESSAGE["title"], MESSAGE["body"], MESSAGE["tag"], "en")
            ]
            assert shown[0]["actions"] == ["Menu", "Later"]
            link = f"{api.url}/c/{delivery_id}"
            assert shown[0]["data"] == {
                **data,
                "url": message["url"],
                "action_urls": {
                    name: f"{link}/{name}?t={data['event_token']}" for name in ("menu", "later")
                },
            }

            [worker] = context.service_workers
            assert worker.url == api.url + "/sw.js"
            # Registered itself (not imported), sw.js takes over at once (skipWaiting, claim).
            assert await worker.evaluate("self.momentcast.standalone") is True
            assert await worker.evaluate(CLICK_IN_WORKER, [MESSAGE["tag"], "menu"])
            await wait_for_event(clean_db, delivery_id, "clicked")
            # sw.js closes the notification it handled.
            assert await page.evaluate(GET_NOTIFICATIONS) == []
            assert errors == []
        finally:
            await browser.close()

    rows = await clean_db.fetch(
        "SELECT type, action FROM events WHERE delivery_id = $1 ORDER BY at", delivery_id
    )
    assert [(r["type"], r["action"]) for r in rows] == [("shown", None), ("clicked", "menu")]


# The SDK in the page, with a fetch that loses the first answer of POST /v1/signals after the
# server stored the signal (a timeout, a dropped connection): the SDK must send it again, with
# the same id, and the server must store it once.
LOSE_FIRST_SIGNAL_ANSWER = """async ([server, registration]) => {
  localStorage.setItem(Momentcast.STORAGE_KEY, JSON.stringify(registration));
  const seen = [];
  const lossy = async (url, init) => {
    const response = await fetch(url, init);
    if (url.endsWith("/v1/signals")) {
      seen.push({ status: response.status, answer: await response.clone().json(),
        sent: JSON.parse(init.body) });
      if (seen.length === 1) throw new TypeError("the answer was lost");
    }
    return response;
  };
  const mc = Momentcast.create({ server, fetch: lossy, retryBaseMs: 20 });
  const ok = await mc.signal({ moment: "know", context: { page: "boots" } });
  return { ok, seen, queued: mc.queue.length };
}"""


async def test_sdk_retries_a_lost_answer_with_the_same_id_and_is_stored_once(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    device = await register(api)
    registration = {"server": api.url, "id": device.id, "token": device.token, "profile": {}}
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(api.url + "/")
            result = await page.evaluate(LOSE_FIRST_SIGNAL_ANSWER, [api.url, registration])
            assert errors == []
        finally:
            await browser.close()
    assert result["ok"] is True and result["queued"] == 0
    assert [(s["status"], s["answer"]) for s in result["seen"]] == [
        (202, {"accepted": 1, "duplicates": 0}),
        (202, {"accepted": 0, "duplicates": 1}),
    ]
    first, retry = (s["sent"] for s in result["seen"])
    assert retry == first
    rows = await clean_db.fetch("SELECT client_id, context FROM signals")
    assert [(r["client_id"], r["context"]) for r in rows] == [(first["id"], {"page": "boots"})]
