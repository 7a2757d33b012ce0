"""Fixtures of the web tests: a small A/B rule set, a strict push service and a live API."""

from __future__ import annotations

import json
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
    features = [
        {
            "type": "Feature",
            "properties": {"id": pid, "name": pid.replace("-", " ").title()},
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
        }
        for pid, (lat, lon) in CAFES.items()
    ]
    (root / "places").mkdir(parents=True)
    (root / "places" / "cafes.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    (root / "policy.yaml").write_text(POLICY)
    (root / "promo.yaml").write_text(PROMO)
    return root


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


async def subscriber(api: LiveApi, push: PushService, **profile: Any) -> tuple[Any, str]:
    sub = push.subscribe()
    body = {"subscription": sub.to_json(), "timezone": "Europe/Berlin", **profile}
    async with api.http.post(f"{api.url}/v1/subscriptions", json=body) as r:
        assert r.status == 201, await r.text()
        return sub, (await r.json())["token"]


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
    subscription_id: int,
    *,
    place: str,
    at: datetime,
    status: str = "sent",
    events: tuple[str, ...] = (),
    test: bool = False,
    rule: str = "promo",
) -> None:
    delivery_id = await pool.fetchval(
        "INSERT INTO deliveries (subscription_id, rule_id, variant, payload, ttl_s, urgency,"
        " topic, expires_at, place_id, status, created_at, test) VALUES ($1, $2, 'a', '{}',"
        " 1200, 'normal', 'coffee', $3::timestamptz + interval '20 minutes', $4, $5, $3, $6)"
        " RETURNING id",
        subscription_id,
        rule,
        at,
        place,
        status,
        test,
    )
    for kind in events:
        await pool.execute(
            "INSERT INTO events (delivery_id, type) VALUES ($1, $2)", delivery_id, kind
        )


async def register(api: LiveApi, sub: BrowserSubscription) -> tuple[str, str]:
    async with api.http.post(
        f"{api.url}/v1/subscriptions",
        json={"subscription": sub.to_json(), "location_consent": True},
    ) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    return body["id"], body["token"]


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
