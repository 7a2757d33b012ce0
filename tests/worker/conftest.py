"""Fixtures for the worker: a small rule set of our own and direct database inserts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from service.api import create_app
from service.context import Context, Keys
from service.reload.holder import RulesHolder
from service.settings import Settings
from service.store import Store
from tests.conftest import LiveApi, make_settings, start_app
from tests.factories import insert_subscription, write_rule_folder

# Two cafés 200 m apart near Berlin's Alexanderplatz, and a point far from both.
CAFE_A = (52.5219, 13.4132)
CAFE_B = (52.5219, 13.4162)
FAR = (52.5000, 13.3000)

# The worker tests' default: a lunch daypart for the rules that name it, and signals that go
# stale after 10 minutes.
LUNCH_POLICY = """
dayparts: {lunch: "11:30-14:00"}
limits: {per_subscriber: 3/day, min_gap: 10m}
stale_after: 10m
hysteresis_m: 30
"""

PLACES: dict[str, Any] = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"id": "a", "name": "Café A", "category": "cafe"},
            "geometry": {"type": "Point", "coordinates": [CAFE_A[1], CAFE_A[0]]},
        },
        {
            "type": "Feature",
            "properties": {"id": "b", "name": "Café B", "category": "cafe"},
            "geometry": {"type": "Point", "coordinates": [CAFE_B[1], CAFE_B[0]]},
        },
    ],
}

COFFEE = """
priority: 10
trigger: enter
where: {places: places/cafes.geojson, radius_m: 60}
message: {title: "Coffee at {place.name}", body: "{distance_m} m away", ttl: 20m, topic: coffee}
limits: {per_place: 1/week}
"""

STAMP = """
priority: 1
trigger: dwell
dwell: 3m
where: {places: places/cafes.geojson, radius_m: 60}
message: {title: "Stamp card at {place.name}", ttl: 1h}
"""


def write_rules(
    root: Path, *, policy: str = LUNCH_POLICY, rules: dict[str, str] | None = None
) -> Path:
    return write_rule_folder(
        root,
        policy=policy,
        rules={f"{name}.yaml": text for name, text in (rules or {"coffee": COFFEE}).items()},
        places={"cafes": PLACES["features"]},
    )


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return write_rules(tmp_path / "rules")


def context_for(settings: Settings, pool: asyncpg.Pool, rules_dir: Path) -> Context:
    holder = RulesHolder(rules_dir)
    assert holder.last_errors == [], holder.last_errors
    return Context(settings=settings, store=Store(pool), keys=Keys.load(settings), rules=holder)


@pytest.fixture
def wctx(data_dir: Path, database_url: str, clean_db: asyncpg.Pool, rules_dir: Path) -> Context:
    settings = make_settings(data_dir, database_url, worker_batch_size=3)
    return context_for(settings, clean_db, rules_dir)


@pytest.fixture
async def wapi(wctx: Context) -> AsyncIterator[LiveApi]:
    """The live API on the worker's context: signals come in over HTTP, as in production."""
    runner, url = await start_app(create_app(wctx))
    async with aiohttp.ClientSession() as http:
        yield LiveApi(url, http, wctx)
    await runner.cleanup()


async def add_subscription(pool: asyncpg.Pool, **profile: Any) -> str:
    sid = uuid.uuid4()
    await insert_subscription(
        pool,
        id=sid,
        endpoint=f"https://fcm.googleapis.com/fcm/send/{sid}",
        topics=profile.get("topics", []),
        paused=profile.get("paused", False),
    )
    return str(sid)


@dataclass
class Fix:
    at: datetime
    lat: float
    lon: float
    accuracy_m: float | None = 10.0


async def add_signals(pool: asyncpg.Pool, sub: str, fixes: Sequence[Fix]) -> None:
    await pool.executemany(
        "INSERT INTO signals (subscription_id, at, lat, lon, accuracy_m) VALUES ($1,$2,$3,$4,$5)",
        [(uuid.UUID(sub), f.at, f.lat, f.lon, f.accuracy_m) for f in fixes],
    )


def offset(point: tuple[float, float], metres_east: float) -> tuple[float, float]:
    """A point ``metres_east`` of ``point`` (good to centimetres at these distances)."""
    import math

    lat, lon = point
    return lat, lon + metres_east / (111_320.0 * math.cos(math.radians(lat)))


def walk(start: datetime, points: Sequence[tuple[float, float]], step: timedelta) -> list[Fix]:
    return [Fix(start + i * step, lat, lon) for i, (lat, lon) in enumerate(points)]


# Unlike LUNCH_POLICY: no daypart and a day before a signal goes stale, so that a stream of signals
# from hours ago is decided the same at any hour the test runs.
ANY_TIME_POLICY = (
    "limits: {per_subscriber: 3/day, min_gap: 2m}\nstale_after: 1d\nhysteresis_m: 30\n"
)


async def reset_processing(pool: asyncpg.Pool) -> None:
    await pool.execute("TRUNCATE deliveries, presence, rule_counters RESTART IDENTITY CASCADE")
    await pool.execute("UPDATE signals SET processed_at = NULL, claimed_until = NULL")
    await pool.execute("UPDATE subscriptions SET last_signal_at = NULL")


Outcome = tuple[set[tuple[str, ...]], dict[tuple[str, str, str], int]]


async def outcome(pool: asyncpg.Pool) -> Outcome:
    rows = await pool.fetch(
        "SELECT subscription_id::text AS s, rule_id, place_id, variant, dedupe_key FROM deliveries"
    )
    decisions: set[tuple[str, ...]] = {
        (r["s"], r["rule_id"], r["place_id"], r["variant"], r["dedupe_key"]) for r in rows
    }
    assert len(decisions) == len(rows), "a decision was stored twice"
    counts: dict[tuple[str, str, str], int] = {
        (r["rule_id"], r["variant"], r["counter"]): r["n"]
        for r in await pool.fetch("SELECT * FROM rule_counters")
    }
    return decisions, counts
