"""Local time at a signal's coordinates.

Order of preference: the time zone at the coordinates (tzfpy, offline), then
the subscription's time zone, then UTC. tzfpy answers `Etc/GMT+N` over open
sea; a nautical zone says less about a person's day than the time zone they
chose, so those answers fall through to the subscription's.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import tzfpy

from .places import FloatArray

_BUCKET_S = 900  # every tzdata transition falls on a quarter hour (UTC)


@lru_cache(maxsize=1024)
def zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def zone_name_at(lat: float, lon: float, fallback: str | None) -> str:
    name = tzfpy.get_tz(lon, lat)
    if name and not name.startswith("Etc/"):
        return str(name)
    if fallback and zone(fallback) is not UTC:
        return fallback
    return "UTC"


def local_datetime(
    at: datetime, lat: float | None, lon: float | None, fallback: str | None
) -> datetime:
    """Local time at the coordinates; without them, in the subscriber's zone (``fallback``)."""
    if lat is None or lon is None:
        return at.astimezone(zone(fallback))
    return at.astimezone(zone(zone_name_at(lat, lon, fallback)))


def utc_offsets(name: str, t: FloatArray) -> FloatArray:
    """UTC offsets in seconds of zone `name` at POSIX times `t`. Offsets are
    constant within a quarter hour, so one zoneinfo call per distinct
    quarter hour in the batch is enough."""
    tz = zone(name)
    buckets = np.floor(t / _BUCKET_S).astype(np.int64)
    uniq, inverse = np.unique(buckets, return_inverse=True)
    offs = np.empty(len(uniq), dtype=np.float64)
    for i, b in enumerate(uniq):
        off = datetime.fromtimestamp(int(b) * _BUCKET_S, tz).utcoffset()
        offs[i] = off.total_seconds() if off is not None else 0.0
    return np.asarray(offs[inverse.reshape(-1)])
