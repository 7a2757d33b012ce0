"""SSRF: push endpoints pointing inside the network are refused at registration and at send.

Registration checks the URL without DNS; the sender checks it again for every send and its
resolver drops non-public addresses after DNS. The allow list below deliberately *lists* the
internal hosts as plain (https) patterns: being listed must not be enough, only an explicit
``http://HOST`` entry opens a private address.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from service.api import create_app
from service.context import Context, Keys
from service.push import Sender
from service.store import Store
from service.testing import Fault, PushService
from tests.api.conftest import push_subscription
from tests.conftest import LiveApi, make_settings, start_app
from tests.factories import insert_delivery, insert_subscription

INTERNAL_LITERALS = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",
    "0.0.0.0",
    "169.254.169.254",
    "169.254.1.1",
    "[::1]",
    "[fe80::1]",
    "[fd00::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:10.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
]
# Numeric forms some client somewhere reads as 127.0.0.1 / 169.254.169.254.
NUMERIC_FORMS = [
    "2130706433",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "0x7f000001",
    "127.1",
    "017700000001",
    "2852039166",
    "0251.0376.0251.0376",
    "0xa9fea9fe",
    "127.0.0.1.",
]
OTHER_TRICKS = [
    "http://fcm.googleapis.com/fcm/send/x",  # plain http to a real push service
    "https://fcm.googleapis.com@127.0.0.1/x",
    "https://127.0.0.1#@fcm.googleapis.com/x",
    "https://fcm.googleapis.com.evil.example/x",
    "https://evil.example/fcm.googleapis.com/x",
    "https://fcm.googleapis.com:8443/x",
    "https://%31%32%37.0.0.1/x",
    "https://fcm.googleapis.com\\@127.0.0.1/x",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/x",
]


def _pattern(host: str) -> str:
    return host.strip("[]")


def _etc_hosts_loopback_names() -> list[str]:
    """Names /etc/hosts maps to loopback on this machine (``localhost`` at least)."""
    names = {"localhost"}
    try:
        for line in Path("/etc/hosts").read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 2 and ipaddress.ip_address(parts[0]).is_loopback:
                names.update(p for p in parts[1:] if "." not in p or p.endswith(".localdomain"))
    except (OSError, ValueError):
        pass
    resolvable = []
    for name in sorted(names):
        try:
            infos = socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        if all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos):
            resolvable.append(name)
    return resolvable


LOOPBACK_NAMES = _etc_hosts_loopback_names()


@pytest.fixture
async def guarded_api(
    data_dir: Path, database_url: str, clean_db: asyncpg.Pool
) -> AsyncIterator[LiveApi]:
    hosts = ["fcm.googleapis.com", *(_pattern(h) for h in INTERNAL_LITERALS), *LOOPBACK_NAMES]
    settings = make_settings(
        data_dir, database_url, push_hosts=hosts, push_connect_timeout=1, push_read_timeout=1
    )
    ctx = Context(settings=settings, store=Store(clean_db), keys=Keys.load(settings))
    runner, url = await start_app(create_app(ctx))
    async with aiohttp.ClientSession() as http:
        yield LiveApi(url, http, ctx)
    await runner.cleanup()


async def _register(api: LiveApi, endpoint: str) -> tuple[int, dict[str, Any]]:
    body = {"subscription": push_subscription(endpoint)}
    async with api.http.post(api.url + "/v1/subscriptions", json=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    "endpoint",
    [
        *(f"https://{h}/push/x" for h in INTERNAL_LITERALS),
        *(f"https://{h}/push/x" for h in NUMERIC_FORMS),
        *(f"https://{h}:8443/push/x" for h in ("127.0.0.1", "[::1]")),
        *OTHER_TRICKS,
    ],
)
async def test_registration_refuses_internal_endpoints(guarded_api: LiveApi, endpoint: str) -> None:
    status, body = await _register(guarded_api, endpoint)
    assert status == 422, (endpoint, body)
    assert "endpoint" in body["error"]["message"] or any(
        "endpoint" in d["field"] for d in body["error"]["details"]
    ), body
    assert await guarded_api.ctx.pool.fetchval("SELECT count(*) FROM subscriptions") == 0


async def test_a_public_push_endpoint_is_still_accepted(guarded_api: LiveApi) -> None:
    status, body = await _register(guarded_api, "https://fcm.googleapis.com/fcm/send/abc")
    assert status == 201, body


async def _send_all(ctx: Context) -> None:
    async with Sender(ctx, retry_base=0.05, retry_cap=0.1) as sender:
        for _ in range(10):
            await ctx.pool.execute(
                "UPDATE deliveries SET not_before = now() WHERE status = 'pending'"
            )
            if not await sender.run_once():
                return


async def test_names_resolving_to_loopback_pass_registration_but_never_get_a_request(
    guarded_api: LiveApi,
) -> None:
    assert LOOPBACK_NAMES, "/etc/hosts should name at least localhost"
    push = await PushService(guarded_api.ctx.keys.vapid_public_b64).start()
    try:
        port = int(push.origin.rsplit(":", 1)[1])
        hosts = [*guarded_api.ctx.settings.push_hosts, *(f"{n}:{port}" for n in LOOPBACK_NAMES)]
        settings = guarded_api.ctx.settings.model_copy(update={"push_hosts": hosts})
        ctx = Context(
            settings=settings, store=Store(guarded_api.ctx.pool), keys=guarded_api.ctx.keys
        )
        runner, url = await start_app(create_app(ctx))
        api = LiveApi(url, guarded_api.http, ctx)
        ids = []
        for name in LOOPBACK_NAMES:
            sub = push.subscribe()
            # Registration does no DNS (clients must not make us resolve names at will) ...
            status, body = await _register(api, f"https://{name}:{port}/push/{sub.id}")
            assert status == 201, (name, body)
            ids.append(await insert_delivery(ctx.pool, uuid.UUID(body["id"])))
        await _send_all(ctx)
        await runner.cleanup()
        # ... so the sender's resolver is what refuses: no request reached the receiver.
        rows = await ctx.pool.fetch(
            "SELECT status, last_error FROM deliveries WHERE id = ANY($1::bigint[])", ids
        )
        assert len(rows) == len(LOOPBACK_NAMES)
        for row in rows:
            assert row["status"] == "failed", dict(row)
            assert "non-public" in row["last_error"], dict(row)
        assert all(s.request_times == [] for s in push.subscriptions.values())
    finally:
        await push.close()


@pytest.mark.parametrize(
    "host", [h for h in INTERNAL_LITERALS if h != "[::]"][:12] + NUMERIC_FORMS[:4]
)
async def test_rows_planted_in_the_database_are_refused_at_send_time(
    guarded_api: LiveApi, host: str
) -> None:
    # As if the row predates a policy change or was written behind the API's back.
    ctx = guarded_api.ctx
    sub_id = await insert_subscription(ctx.pool, endpoint=f"https://{host}/push/x")
    delivery_id = await insert_delivery(ctx.pool, sub_id)
    await _send_all(ctx)
    row = await ctx.pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", delivery_id)
    assert row["status"] == "failed" and row["attempts"] == 0, dict(row)
    assert row["last_error"].startswith("endpoint refused"), row["last_error"]


async def test_redirect_to_an_internal_target_is_not_followed(
    data_dir: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    settings = make_settings(data_dir, database_url, push_connect_timeout=1, push_read_timeout=1)
    ctx = Context(settings=settings, store=Store(clean_db), keys=Keys.load(settings))
    push = await PushService(ctx.keys.vapid_public_b64).start()
    try:
        inside = push.subscribe()  # stands for an internal service the redirect points to
        targets = [
            inside.endpoint,
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/admin",
        ]
        ids, subs = [], []
        for target in targets:
            sub = push.subscribe(Fault(redirect_to=target))
            subs.append(sub)
            ids.append(await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub)))
        await _send_all(ctx)
        rows = await ctx.pool.fetch(
            "SELECT status, last_status FROM deliveries WHERE id = ANY($1::bigint[])", ids
        )
        assert [(r["status"], r["last_status"]) for r in rows] == [("failed", 307)] * 3
        assert inside.request_times == []
        assert all(len(s.request_times) == 1 for s in subs)  # one try, no retry
    finally:
        await push.close()
