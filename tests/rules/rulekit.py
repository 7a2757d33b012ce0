"""Helpers for the pure rules/engine tests: small rule directories on disk."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.rules import Profile, Ruleset, Signal
from service.rules.engine import Outcome, SubscriberState, decide
from tests.factories import place, write_rule_folder

M_PER_DEG_LAT = 6_371_008.8 * math.pi / 180.0

POLICY = """\
dayparts: {breakfast: "06:30-10:00", lunch: "11:30-14:00", morning: "08:00-09:00"}
limits: {}
stale_after: 10m
hysteresis_m: 30
"""


def point(pid: str, lat: float, lon: float, **props: Any) -> dict[str, object]:
    return place(pid, lat, lon, **props)


def square(pid: str, lat: float, lon: float, half_m: float, **props: object) -> dict[str, object]:
    dlat = half_m / M_PER_DEG_LAT
    dlon = dlat / math.cos(math.radians(lat))
    ring = [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]
    return {
        "type": "Feature",
        "properties": {"id": pid, "name": pid.title(), **props},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def north_of(lat: float, metres: float) -> float:
    return lat + metres / M_PER_DEG_LAT


# Berlin, New York, Tokyo: used by time-zone tests.
BERLIN = (52.52, 13.405)
NEW_YORK = (40.7128, -74.006)
TOKYO = (35.6812, 139.7671)

DEFAULT_PLACES = [
    point("berlin", *BERLIN, category="cafe"),
    point("berlin-2", north_of(BERLIN[0], 60), BERLIN[1], category="cafe"),
    point("nyc", *NEW_YORK, category="cafe"),
    point("tokyo", *TOKYO, category="cafe"),
    square("plaza", 52.50, 13.40, 50, category="square"),
]


def write_dir(
    root: Path,
    rules: dict[str, str],
    policy: str = POLICY,
    places: dict[str, list[dict[str, object]]] | None = None,
) -> Path:
    return write_rule_folder(
        root,
        policy=policy,
        rules={name: textwrap.dedent(text) for name, text in rules.items()},
        places=places or {"spots": DEFAULT_PLACES},
    )


LAT, LON = 52.52, 13.405  # place "spot", radius 100 m, hysteresis 30 m


T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # Monday 11:00 in Berlin


PLACES = {"spots": [point("spot", LAT, LON), point("far", north_of(LAT, 5000), LON)]}


def rule(
    trigger: str = "enter",
    priority: int = 1,
    extra: str = "",
    places: str = "spots",
    radius: int = 100,
) -> str:
    dwell = "dwell: 3m\n" if trigger == "dwell" else ""
    return (
        f"priority: {priority}\ntrigger: {trigger}\n{dwell}"
        f"where: {{places: places/{places}.geojson, radius_m: {radius}}}\n"
        f'message: {{title: "At {{place.name}}", ttl: 1h}}\n{extra}'
    )


def walk(
    rs: Ruleset,
    steps: Sequence[tuple[float, float | None]],
    profile: Profile | None = None,
    start: datetime = T0,
    gap: timedelta = timedelta(minutes=1),
    state: dict[str, SubscriberState] | None = None,
) -> list[Outcome]:
    """Signals `metres north of the place` (with accuracy) one per `gap`."""
    prof = profile or Profile("s")
    sigs = [
        Signal(prof.id, north_of(LAT, m), LON, start + i * gap, accuracy_m=acc)
        for i, (m, acc) in enumerate(steps)
    ]
    return decide(
        rs, sigs, {prof.id: prof}, state if state is not None else {}, now=None, arrival_order=True
    )
