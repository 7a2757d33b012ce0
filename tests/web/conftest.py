"""Fixtures of the web tests: a small A/B rule set, a strict push service and a live API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.context import Context
from service.settings import Settings
from service.testing import PushService
from tests.conftest import make_settings

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
