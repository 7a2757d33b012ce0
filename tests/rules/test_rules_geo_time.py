"""Distances against independent computations; local time, DST and midnight."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.rules import Profile, Ruleset, Signal, simulate
from service.rules.places import EARTH_RADIUS_M, haversine_m, make_place, polygon_distances
from tests.rules.rulekit import BERLIN, NEW_YORK, TOKYO, north_of

R = EARTH_RADIUS_M


def vincenty_sphere(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance by the atan2 (Vincenty special case) formula -
    a different formula from haversine, well conditioned everywhere."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    num = math.hypot(
        math.cos(p2) * math.sin(dl),
        math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl),
    )
    den = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return R * math.atan2(num, den)


def destination(lat: float, lon: float, bearing_deg: float, metres: float) -> tuple[float, float]:
    d, b = metres / R, math.radians(bearing_deg)
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(
        math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0


def aeqd(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """Azimuthal equidistant projection centred on (lat0, lon0): distances
    from the centre are exact great-circle distances."""
    d = vincenty_sphere(lat0, lon0, lat, lon)
    p1, p2, dl = math.radians(lat0), math.radians(lat), math.radians(lon - lon0)
    az = math.atan2(
        math.sin(dl) * math.cos(p2),
        math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl),
    )
    return d * math.sin(az), d * math.cos(az)


lats = st.floats(-80, 80)
lons = st.floats(-180, 180)


@settings(max_examples=300, deadline=None)
@given(lats, lons, st.floats(0, 360), st.floats(0, 5000))
def test_haversine_matches_vincenty(lat: float, lon: float, bearing: float, dist: float) -> None:
    lat2, lon2 = destination(lat, lon, bearing, dist)
    got = float(haversine_m(lat, lon, lat2, lon2))
    assert abs(got - vincenty_sphere(lat, lon, lat2, lon2)) < 0.5
    assert abs(got - dist) < 0.5


@settings(max_examples=150, deadline=None)
@given(
    st.floats(-75, 75),
    st.floats(-179.99, 179.99),
    st.integers(5, 12),
    st.floats(20, 800),
    st.floats(0, 360),
    st.floats(0, 5000),
    st.randoms(),
)
def test_polygon_distance_matches_aeqd(
    lat: float, lon: float, n: int, size: float, bearing: float, dist: float, rnd: object
) -> None:
    # A star-shaped (hence simple) polygon around (lat, lon).
    angles = sorted(rnd.uniform(0, 360) for _ in range(n))  # type: ignore[attr-defined]
    if len({round(a, 3) for a in angles}) < n:
        return
    ring = [
        destination(lat, lon, a, size * rnd.uniform(0.4, 1.0))  # type: ignore[attr-defined]
        for a in angles
    ]
    coords = [[lo, la] for la, lo in ring]
    if max(c[0] for c in coords) - min(c[0] for c in coords) > 180:
        return  # crosses the antimeridian; covered by its own test
    assume(shapely.Polygon(coords).is_valid)
    feature = {
        "type": "Feature",
        "properties": {"id": "p"},
        "geometry": {"type": "Polygon", "coordinates": [[*coords, coords[0]]]},
    }
    place = make_place("f", 0, feature, "f")
    slat, slon = destination(lat, lon, bearing, dist)
    got = polygon_distances(
        np.array([place.shape], dtype=object),
        np.array([place.lon0]),
        np.array([place.lat0]),
        np.array([slat]),
        np.array([slon]),
    )[0]
    # Independent: densify the lon/lat-straight edges, project around the
    # signal with an exact-distance projection, measure with shapely.
    dense = []
    closed = [*coords, coords[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(closed):
        steps = 200
        for k in range(steps):
            t = k / steps
            x = x0 + (((x1 - x0) + 540) % 360 - 180) * t
            dense.append(aeqd(slat, slon, y0 + (y1 - y0) * t, x))
    poly = shapely.Polygon(dense)
    expected = (
        0.0 if poly.contains(shapely.Point(0, 0)) else poly.exterior.distance(shapely.Point(0, 0))
    )
    assert abs(got - expected) < 0.5, (got, expected)


def test_polygon_across_antimeridian() -> None:
    # Split at 180 as RFC 7946 asks: two parts of one 2 km x 2 km square.
    dlat = 1000 / (R * math.pi / 180)
    dlon = dlat / math.cos(math.radians(-17.0))
    east = [
        [180 - dlon, -17 - dlat],
        [180.0, -17 - dlat],
        [180.0, -17 + dlat],
        [180 - dlon, -17 + dlat],
        [180 - dlon, -17 - dlat],
    ]
    west = [
        [-180.0, -17 - dlat],
        [-180 + dlon, -17 - dlat],
        [-180 + dlon, -17 + dlat],
        [-180.0, -17 + dlat],
        [-180.0, -17 - dlat],
    ]
    feature = {
        "type": "Feature",
        "properties": {"id": "fiji"},
        "geometry": {"type": "MultiPolygon", "coordinates": [[east], [west]]},
    }
    place = make_place("f", 0, feature, "f")
    shapes = np.array([place.shape, place.shape], dtype=object)
    lat0, lon0 = np.array([place.lat0] * 2), np.array([place.lon0] * 2)
    # Inside on both sides of the line, and 500 m east of the western edge.
    inside = polygon_distances(
        shapes, lon0, lat0, np.array([-17.0, -17.0]), np.array([179.999, -179.999])
    )
    assert inside.tolist() == [0.0, 0.0]
    lat_o, lon_o = destination(-17.0, -180 + dlon, 90, 500)
    out = polygon_distances(shapes[:1], lon0[:1], lat0[:1], np.array([lat_o]), np.array([lon_o]))
    assert abs(out[0] - 500) < 0.5


WINDOW_RULE = """\
priority: 1
where: {{places: places/spots.geojson, radius_m: 200}}
when:
  between: "{window}"
{days}message: {{title: "x"}}
"""


def decide_at(
    rs: Ruleset, where: tuple[float, float], at: datetime, tz: str | None = None, rule: str = "r"
) -> str | None:
    result = simulate(rs, Signal("s", where[0], where[1], at), Profile("s", timezone=tz), at)
    return next(r["reason"] for r in result["rules"] if r["rule"] == rule)


def test_dst_spring_forward_berlin(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": WINDOW_RULE.format(window="08:00-09:00", days="")})
    # 2026-03-29: 06:30 UTC is 08:30 CEST (a fixed +01:00 would say 07:30).
    assert decide_at(rs, BERLIN, datetime(2026, 3, 29, 6, 30, tzinfo=UTC)) is None
    assert decide_at(rs, BERLIN, datetime(2026, 3, 29, 7, 30, tzinfo=UTC)) == "daypart"
    # The day before, still CET: 07:30 UTC is 08:30.
    assert decide_at(rs, BERLIN, datetime(2026, 3, 28, 7, 30, tzinfo=UTC)) is None


def test_dst_fall_back_berlin(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": WINDOW_RULE.format(window="08:00-09:00", days="")})
    assert decide_at(rs, BERLIN, datetime(2026, 10, 25, 7, 30, tzinfo=UTC)) is None
    assert decide_at(rs, BERLIN, datetime(2026, 10, 25, 6, 30, tzinfo=UTC)) == "daypart"


def test_dst_new_york(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": WINDOW_RULE.format(window="08:00-09:00", days="")})
    # 2026-03-08: EDT starts; 12:30 UTC is 08:30 EDT (07:30 in EST).
    assert decide_at(rs, NEW_YORK, datetime(2026, 3, 8, 12, 30, tzinfo=UTC)) is None
    assert decide_at(rs, NEW_YORK, datetime(2026, 3, 7, 12, 30, tzinfo=UTC)) == "daypart"
    assert decide_at(rs, NEW_YORK, datetime(2026, 3, 7, 13, 30, tzinfo=UTC)) is None


def test_window_across_midnight_belongs_to_its_start_day(
    make_rules: Callable[..., Ruleset],
) -> None:
    rs = make_rules({"r.yaml": WINDOW_RULE.format(window="22:00-02:00", days="  days: [fri]\n")})
    # Berlin in June is UTC+2. Friday 2026-06-05 23:00 local, Saturday 01:00 local.
    assert decide_at(rs, BERLIN, datetime(2026, 6, 5, 21, 0, tzinfo=UTC)) is None
    assert decide_at(rs, BERLIN, datetime(2026, 6, 5, 23, 0, tzinfo=UTC)) is None
    # Friday 01:00 is the tail of Thursday's window; Saturday 23:00 is Saturday's.
    assert decide_at(rs, BERLIN, datetime(2026, 6, 4, 23, 0, tzinfo=UTC)) == "day"
    assert decide_at(rs, BERLIN, datetime(2026, 6, 6, 21, 0, tzinfo=UTC)) == "day"
    # Friday 02:30 and 21:30 are on the right day but outside the window.
    assert decide_at(rs, BERLIN, datetime(2026, 6, 5, 0, 30, tzinfo=UTC)) == "daypart"
    assert decide_at(rs, BERLIN, datetime(2026, 6, 5, 19, 30, tzinfo=UTC)) == "daypart"


def test_tokyo_lunch_uses_local_time_not_profile(make_rules: Callable[..., Ruleset]) -> None:
    rule = WINDOW_RULE.format(window="11:30-14:00", days="").replace(
        'between: "11:30-14:00"', "dayparts: [lunch]"
    )
    rs = make_rules({"r.yaml": rule})
    at = datetime(2026, 3, 2, 3, 30, tzinfo=UTC)  # 12:30 in Tokyo, 04:30 in Paris
    assert decide_at(rs, TOKYO, at, tz="Europe/Paris") is None
    assert decide_at(rs, BERLIN, at, tz="Asia/Tokyo") == "daypart"


def test_profile_timezone_is_the_fallback_at_sea(make_rules: Callable[..., Ruleset]) -> None:
    from service.rules.localtime import local_datetime

    at = datetime(2026, 3, 2, 3, 30, tzinfo=UTC)
    assert local_datetime(at, 0.0, -30.0, "Asia/Tokyo").hour == 12
    assert local_datetime(at, 0.0, -30.0, None).hour == 3
    assert local_datetime(at, north_of(BERLIN[0], 10), BERLIN[1], "Asia/Tokyo").hour == 4
