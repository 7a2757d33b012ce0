"""Helpers for the pure rules/engine tests: small rule directories on disk."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

M_PER_DEG_LAT = 6_371_008.8 * math.pi / 180.0

POLICY = """\
dayparts: {breakfast: "06:30-10:00", lunch: "11:30-14:00", morning: "08:00-09:00"}
limits: {}
stale_after: 10m
hysteresis_m: 30
"""


def point(pid: str, lat: float, lon: float, **props: object) -> dict[str, object]:
    return {
        "type": "Feature",
        "properties": {"id": pid, "name": pid.title(), **props},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


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
    root.mkdir(parents=True, exist_ok=True)
    (root / "places").mkdir(exist_ok=True)
    (root / "policy.yaml").write_text(policy)
    for name, feats in (places or {"spots": DEFAULT_PLACES}).items():
        body = ",\n".join(json.dumps(f) for f in feats)
        (root / "places" / f"{name}.geojson").write_text(
            '{"type": "FeatureCollection", "features": [\n' + body + "\n]}\n"
        )
    for name, text in rules.items():
        (root / name).write_text(textwrap.dedent(text))
    return root
