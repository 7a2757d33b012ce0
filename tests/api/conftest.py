"""Fixtures of the API tests: real browser-like subscription keys and registered devices."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.api import create_app
from service.context import Context, Keys
from service.reload.watch import load
from service.store import Store
from service.tokens import event_token
from tests.conftest import LiveApi, make_settings, start_app
from tests.factories import place, subscribe, write_rule_folder


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def push_subscription(endpoint: str | None = None) -> dict[str, Any]:
    """What PushSubscription.toJSON() gives: a fresh P-256 key pair and auth secret."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {
        "endpoint": endpoint or f"http://127.0.0.1:9/push/{secrets.token_hex(16)}",
        "expirationTime": None,
        "keys": {"p256dh": b64url(point), "auth": b64url(secrets.token_bytes(16))},
    }


@dataclass
class Device:
    id: str
    token: str
    subscription: dict[str, Any]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(api: LiveApi, **profile: Any) -> Device:
    """A registered device; it consents to location use unless ``location_consent`` says no."""
    sub = push_subscription()
    registered = await subscribe(api, sub, **profile)
    return Device(registered.id, registered.token, sub)


@pytest.fixture
async def device(api: LiveApi) -> Device:
    return await register(api, timezone="Europe/Berlin", locale="de-DE", topics=["food"])


@pytest.fixture
async def other_device(api: LiveApi) -> Device:
    return await register(api)


@pytest.fixture
async def api_with(
    data_dir: Path, database_url: str, clean_db: asyncpg.Pool
) -> AsyncIterator[Callable[..., Awaitable[LiveApi]]]:
    """Start the live API with settings overrides (e.g. a larger signal burst)."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(pool: asyncpg.Pool | None = None, **overrides: Any) -> LiveApi:
        settings = make_settings(data_dir, database_url, **overrides)
        ctx = Context(settings=settings, store=Store(pool or clean_db), keys=Keys.load(settings))
        runner, url = await start_app(create_app(ctx))
        runners.append(runner)
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        sessions.append(http)
        return LiveApi(url, http, ctx)

    yield start
    for http in sessions:
        await http.close()
    for runner in runners:
        await runner.cleanup()


async def count_rows(pool: asyncpg.Pool, *tables: str) -> dict[str, int]:
    names = tables or ("subscriptions", "signals", "presence", "deliveries", "events")
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in names}


def assert_error(body: dict[str, Any], status: int, code: str, mentions: str) -> None:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, (status, error)
    assert mentions in error["message"], error
    assert isinstance(error["details"], list)


@dataclass
class RealIds:
    """One of each thing a path or body names, really stored: a device, a campaign, a rule
    and a delivery of that rule to the device (with the event token of its links)."""

    device: Device
    campaign_id: str
    rule_id: str
    delivery_id: int
    event_token: str


def later() -> str:
    """A campaign's send_at that stays ahead while a test runs (a year ahead is refused)."""
    return (datetime.now(UTC) + timedelta(days=30)).isoformat()


async def real_ids(api: LiveApi) -> RealIds:
    """Make them through the API itself, as a deployment would have them."""
    device = await register(api, topics=["food"])
    campaign_id = "real-" + secrets.token_hex(3)
    campaign = {
        "id": campaign_id,
        "audience": {"topics": ["food"]},
        "message": {"title": "Lunch time", "body": "2-for-1 mains today"},
        "send_at": later(),
    }
    async with api.http.post(api.url + "/v1/campaigns", json=campaign, headers=api.admin()) as r:
        assert r.status == 201, await r.text()
    rule_id = "lunch-nearby"
    async with api.http.post(
        api.url + f"/v1/rules/{rule_id}/test",
        json={"subscription_id": device.id},
        headers=api.admin(),
    ) as r:
        assert r.status == 202, await r.text()
        delivery_id = (await r.json())["delivery_id"]
    token = event_token(api.ctx.keys.secret_key, delivery_id)
    return RealIds(device, campaign_id, rule_id, delivery_id, token)


# The marketer routes' rule set: a promotion at two cafés and a location-free rule; the
# policy is the test's own.
CAFE = (52.5219, 13.4132)

PROMO = """
priority: 10
trigger: enter
where: {places: places/cafes.geojson, radius_m: 60}
message:
  title: "Coffee at {place.name}"
  body: "{attributes.tier} members: {place.name} is {distance_m} m away"
  url: "https://example.com/coffee/{place.id}"
  locales: {de: {title: "Kaffee im {place.name}"}}
  ttl: 20m
"""

FREE = """
priority: 1
who: {context: {page: {exists: true}}}
message: {title: "About {context.page}", body: "Read on"}
"""


def write_rules(root: Path, policy: str) -> Path:
    cafes = [
        place(pid, lat, lon, name=pid.replace("-", " ").title())
        for pid, (lat, lon) in {"cafe-a": CAFE, "cafe-b": (CAFE[0], CAFE[1] + 0.003)}.items()
    ]
    return write_rule_folder(
        root,
        policy=policy,
        rules={"promo.yaml": PROMO, "free.yaml": FREE},
        places={"cafes": cafes},
    )


@contextlib.asynccontextmanager
async def serve(ctx: Context, rules: Path) -> AsyncIterator[LiveApi]:
    settings = make_settings(ctx.settings.data_dir, ctx.settings.database_url, rules_dir=rules)
    context = Context(settings=settings, store=Store(ctx.pool, dsn=ctx.store.dsn), keys=ctx.keys)
    load(context)
    runner, url = await start_app(create_app(context))
    try:
        async with aiohttp.ClientSession() as http:
            yield LiveApi(url, http, context)
    finally:
        await runner.cleanup()
