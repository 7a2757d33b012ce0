"""Fixtures of the web tests: a small A/B rule set, a strict push service and a live API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.context import Context
from service.push import Sender
from service.settings import Settings
from service.testing import BrowserSubscription, Fault, PushService
from service.worker import Worker
from tests.conftest import LiveApi, make_settings
from tests.factories import insert_delivery, place, subscribe, write_rule_folder

# Three cafés about 200 m apart along a street near Berlin's Alexanderplatz.
CAFES = {
    "cafe-a": (52.5219, 13.4132),
    "cafe-b": (52.5219, 13.4162),
    "cafe-c": (52.5219, 13.4192),
}

POLICY = """
limits: {per_subscriber: 5/day, min_gap: 1h}
stale_after: 10m
hysteresis_m: 30
"""

PROMO = """
description: Coffee promotion with two titles under test
priority: 10
trigger: enter
where: {places: places/cafes.geojson, radius_m: 60}
message:
  title: "Coffee at {place.name}"
  body: "{place.name} is {distance_m} m away"
  url: "https://example.com/coffee/{place.id}"
  ttl: 20m
variants:
  - {name: a, weight: 50}
  - {name: b, weight: 50, message: {title: "Espresso break at {place.name}?"}}
"""


def write_rules(root: Path) -> Path:
    cafes = [
        place(pid, lat, lon, name=pid.replace("-", " ").title())
        for pid, (lat, lon) in CAFES.items()
    ]
    return write_rule_folder(
        root, policy=POLICY, rules={"promo.yaml": PROMO}, places={"cafes": cafes}
    )


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(data_dir, database_url, rules_dir=write_rules(tmp_path / "rules"))


@pytest.fixture
async def push_service(ctx: Context) -> AsyncIterator[PushService]:
    service = await PushService(ctx.keys.vapid_public_b64).start()
    yield service
    await service.close()


def notification(message: dict[str, Any]) -> dict[str, Any]:
    """The shown notification, whether the push is declarative or the older flat form."""
    return message.get("notification", message)


async def subscriber(
    api: LiveApi, push: PushService, location_consent: bool | None = None, **profile: Any
) -> tuple[Any, str]:
    """A subscriber in Berlin that, unless told, has not answered the location question."""
    sub = push.subscribe()
    fields = {"timezone": "Europe/Berlin", **profile}
    return sub, (await subscribe(api, sub, location_consent=location_consent, **fields)).token


async def send(api: LiveApi, token: str, signal: dict[str, Any]) -> None:
    async with api.http.post(
        f"{api.url}/v1/signals", json=signal, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 202, await r.text()


async def deliver(api: LiveApi) -> None:
    await Worker(api.ctx).drain()
    async with Sender(api.ctx) as sender:
        while await sender.run_once():
            pass


async def delivery(
    pool: asyncpg.Pool,
    subscription_id: uuid.UUID,
    *,
    place: str,
    at: datetime,
    status: str = "sent",
    events: tuple[str, ...] = (),
    test: bool = False,
    rule: str = "promo",
) -> None:
    """A delivery of ``rule`` at ``place`` made at ``at``, and the events reported for it."""
    await insert_delivery(
        pool,
        subscription_id,
        rule_id=rule,
        payload={},
        topic="coffee",
        place_id=place,
        status=status,
        created_at=at,
        expires_at=at + timedelta(minutes=20),
        test=test,
        events=events,
    )


async def register(api: LiveApi, sub: BrowserSubscription) -> tuple[str, str]:
    registered = await subscribe(api, sub)
    return registered.id, registered.token


async def signal(api: LiveApi, token: str, place: str, at: datetime) -> None:
    lat, lon = CAFES[place]
    async with api.http.post(
        f"{api.url}/v1/signals",
        headers={"Authorization": f"Bearer {token}"},
        json={"lat": lat, "lon": lon, "accuracy_m": 10, "at": at.isoformat()},
    ) as r:
        assert r.status == 202, await r.text()


async def pipeline(
    api: LiveApi, push_service: PushService, n: int, gone: int
) -> tuple[list[tuple[str, BrowserSubscription]], int]:
    """n subscribers walk cafe-a then cafe-b; the first ``gone`` have expired endpoints."""
    subscribers = []
    for i in range(n):
        sub = push_service.subscribe(Fault(status=410) if i < gone else None)
        sid, token = await register(api, sub)
        subscribers.append((sid, sub))
        now = datetime.now(UTC)
        await signal(api, token, "cafe-a", now - timedelta(minutes=2))
        # Within the policy's 1 h min_gap: matched, then suppressed for min_gap.
        await signal(api, token, "cafe-b", now - timedelta(minutes=1))
    processed = await Worker(api.ctx).drain()
    async with Sender(api.ctx) as sender:
        while await sender.run_once():
            pass
    return subscribers, processed
