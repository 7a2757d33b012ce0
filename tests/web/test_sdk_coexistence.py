"""The SDK on a site that has its own service worker, in a real browser (system Chromium).

The site (another origin, as in production: www.shop.example and push.shop.example) registers
its own ``/app-sw.js``, which imports momentcast's ``sw.js`` with ``importScripts`` and keeps a
push handler of its own. ``subscribe({serviceWorker: "/app-sw.js"})`` must leave that worker
the page's only one; the site's own pushes are shown once, by the site; momentcast's pushes
are still shown and reported; and the imported sw.js never takes the worker over
(``skipWaiting``, ``clients.claim``). Pushes are delivered through the DevTools protocol, as in
test_browser.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from service import tokens
from service.settings import Settings
from service.webpush.message import render_payload
from tests.conftest import LiveApi, make_settings
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
from tests.web.conftest import write_rules

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no system Chromium (Debian package `chromium`; .ci/run installs it)",
)

SITE_PAGE = """<!doctype html>
<meta charset="utf-8"><title>Shop</title>
<script src="{api}/momentcast.js"></script>
"""

# The site's own worker. It records the takeover calls before importing sw.js (the recipe of
# docs/clients.md), and shows its own pushes, which carry no momentcast data.
APP_SW = """
self.takeover = [];
const skipWaiting = self.skipWaiting.bind(self);
self.skipWaiting = () => { self.takeover.push("skipWaiting"); return skipWaiting(); };
const claim = self.clients.claim.bind(self.clients);
self.clients.claim = () => { self.takeover.push("claim"); return claim(); };

importScripts("{api}/sw.js");

self.sitePushes = [];
self.addEventListener("push", (event) => {
  if (momentcast.isOurPush(event)) return;  // momentcast's: its sw.js shows it
  const payload = event.data.json();
  self.sitePushes.push(payload.title);
  event.waitUntil(self.registration.showNotification(`Shop: ${payload.title}`));
});
"""

# How the page names its worker to the SDK: by URL, as the registration, or not at all.
SUBSCRIBE_WITH_SITE_WORKER = """async ([server, how]) => {
  await navigator.serviceWorker.register("/app-sw.js");
  const registration = await navigator.serviceWorker.ready;
  const mc = Momentcast.create(how === "none" ? { server }
    : { server, serviceWorker: how === "url" ? "/app-sw.js" : registration });
  let error = null;
  try {
    await mc.subscribe();
  } catch (e) {
    // Headless Chromium has no push service behind it: the browser's subscribe() fails
    // after the worker was chosen, which is what this test is about.
    error = `${e.code}: ${e.message}`;
  }
  const registrations = await navigator.serviceWorker.getRegistrations();
  return {
    error,
    scripts: registrations.flatMap((r) => [r.installing, r.waiting, r.active])
      .filter(Boolean).map((w) => w.scriptURL),
  };
}"""


@pytest.fixture
def site_socket() -> Iterator[socket.socket]:
    """The site's listening socket, bound first: its origin goes into CORS_ORIGINS."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def origin(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def settings(
    data_dir: Path, database_url: str, tmp_path: Path, site_socket: socket.socket
) -> Settings:
    return make_settings(
        data_dir,
        database_url,
        rules_dir=write_rules(tmp_path / "rules"),
        cors_origins=[origin(site_socket)],
    )


@pytest.fixture
async def site(api: LiveApi, site_socket: socket.socket) -> AsyncIterator[str]:
    """The site: its page (which loads the SDK from momentcast) and its own worker."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=SITE_PAGE.replace("{api}", api.url), content_type="text/html")

    async def worker(request: web.Request) -> web.Response:
        return web.Response(
            text=APP_SW.replace("{api}", api.url),
            content_type="text/javascript",
            headers={"Cache-Control": "no-cache"},
        )

    async def one_liner(request: web.Request) -> web.Response:
        # The site also serves the one-line /sw.js earlier docs suggested: a registration of
        # /sw.js would succeed here, and replace the site's worker.
        return web.Response(
            text=f'importScripts("{api.url}/sw.js");\n', content_type="text/javascript"
        )

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/app-sw.js", worker)
    app.router.add_get("/sw.js", one_liner)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, site_socket).start()
    yield origin(site_socket)
    await runner.cleanup()


@pytest.mark.parametrize("how", ["url", "registration", "none"])
async def test_subscribe_keeps_the_sites_worker_and_shows_only_its_own_pushes(
    api: LiveApi, site: str, clean_db: asyncpg.Pool, how: str
) -> None:
    delivery_id = await insert_delivery(clean_db, MESSAGE)
    data = {
        "delivery_id": delivery_id,
        "rule": "promo",
        "variant": "b",
        "events_url": api.url + "/v1/events",
        "event_token": tokens.event_token(api.ctx.keys.secret_key, delivery_id),
    }
    ours = render_payload(MESSAGE, data, base_url=api.url).decode("utf-8")
    theirs = '{"title": "Spring sale", "body": "from the shop\'s own push server"}'

    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            await context.grant_permissions(["notifications"], origin=site)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(site + "/")
            cdp = await context.new_cdp_session(page)
            versions: list[dict[str, Any]] = []
            cdp.on("ServiceWorker.workerVersionUpdated", lambda e: versions.extend(e["versions"]))
            await cdp.send("ServiceWorker.enable")

            result = await page.evaluate(SUBSCRIBE_WITH_SITE_WORKER, [api.url, how])
            # Before, with no option: /sw.js registered at scope / over the site's worker.
            assert result["scripts"] == [site + "/app-sw.js"], result
            # Any failure is the headless browser's push subscription, never the worker's.
            assert "register a ServiceWorker" not in (result["error"] or ""), result

            async with asyncio.timeout(TIMEOUT_S):
                while not (
                    active := [
                        v
                        for v in versions
                        if v["scriptURL"] == site + "/app-sw.js" and v["status"] == "activated"
                    ]
                ):
                    await asyncio.sleep(0.05)
            registration_id = active[-1]["registrationId"]

            # The site's push first, then momentcast's: when momentcast's "shown" reached
            # the server, both were handled.
            for plaintext in (theirs, ours):
                await cdp.send(
                    "ServiceWorker.deliverPushMessage",
                    {"origin": site, "registrationId": registration_id, "data": plaintext},
                )
            await wait_for_event(clean_db, delivery_id, "shown")
            shown = await page.evaluate(GET_NOTIFICATIONS)
            # Before: "Spring sale" was shown a second time, by sw.js.
            assert sorted(n["title"] for n in shown) == [MESSAGE["title"], "Shop: Spring sale"]

            [worker] = context.service_workers
            assert worker.url == site + "/app-sw.js"
            assert await worker.evaluate("self.sitePushes") == ["Spring sale"]
            # Before: ['skipWaiting', 'claim']. sw.js knows it was imported: its own URL (from
            # a stack trace) is momentcast's, the worker's script is the site's.
            assert await worker.evaluate("self.takeover") == []
            assert await worker.evaluate("self.momentcast.scriptUrl") == api.url + "/sw.js"
            assert await worker.evaluate("self.momentcast.standalone") is False
            assert errors == []
        finally:
            await browser.close()
