"""Recorded traces for `rules replay`: GPX, GeoJSON or CSV into Signals."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx

from service.errors import TraceError
from service.vocabulary import MOMENTS

from .signals import Signal


def _time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise TraceError(f"{where}: time {value!r} is not RFC 3339") from None
    else:
        raise TraceError(f"{where}: every point needs a time")
    # A trace without offsets is taken as UTC, as GPX specifies.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _opt_float(value: Any, where: str, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {name} {value!r} is not a number") from None


def _moment(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in MOMENTS:
        raise TraceError(f"{where}: moment {value!r} is not one of {', '.join(MOMENTS)}")
    return str(value)


def read_trace(path: str | Path, subscription_id: str = "replay") -> list[Signal]:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    if suffix == ".gpx":
        signals = _gpx(text, subscription_id)
    elif suffix in (".geojson", ".json"):
        signals = _geojson(text, subscription_id)
    elif suffix == ".csv":
        signals = _csv(text, subscription_id)
    else:
        raise TraceError(f"{p}: unknown trace type; use .gpx, .geojson or .csv")
    if not signals:
        raise TraceError(f"{p}: the trace has no points")
    return signals


def _gpx(text: str, sub: str) -> list[Signal]:
    try:
        doc = gpxpy.parse(text)
    except gpxpy.gpx.GPXException as exc:
        raise TraceError(f"not valid GPX: {exc}") from None
    out = []
    points: list[Any] = [pt for trk in doc.tracks for seg in trk.segments for pt in seg.points]
    points += doc.waypoints
    for i, pt in enumerate(points):
        where = f"point {i}"
        acc = pt.horizontal_dilution
        out.append(
            Signal(
                sub,
                float(pt.latitude),
                float(pt.longitude),
                _time(pt.time, where),
                # GPX has no accuracy in metres; HDOP x 5 m is the usual estimate.
                accuracy_m=None if acc is None else float(acc) * 5.0,
                speed_mps=None if pt.speed is None else float(pt.speed),
            )
        )
    return out


def _geojson(text: str, sub: str) -> list[Signal]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"line {exc.lineno}: not valid JSON: {exc.msg}") from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if doc.get("type") == "Feature":
        feats = [doc]
    if not isinstance(feats, list):
        raise TraceError("a GeoJSON trace is a Feature or FeatureCollection")
    out: list[Signal] = []
    for i, f in enumerate(feats):
        where = f"feature {i}"
        geom = f.get("geometry") or {}
        props = f.get("properties") or {}
        if geom.get("type") == "Point":
            lon, lat = geom["coordinates"][:2]
            out.append(
                Signal(
                    sub,
                    float(lat),
                    float(lon),
                    _time(props.get("time"), where),
                    accuracy_m=_opt_float(props.get("accuracy_m"), where, "accuracy_m"),
                    speed_mps=_opt_float(props.get("speed_mps"), where, "speed_mps"),
                    moment=_moment(props.get("moment"), where),
                    received_at=_time(props["received_at"], f"{where} received_at")
                    if props.get("received_at")
                    else None,
                )
            )
        elif geom.get("type") == "LineString":
            # Times per vertex as in the common `coordTimes`/`times` property.
            times = props.get("times") or props.get("coordTimes")
            coords = geom.get("coordinates") or []
            if not isinstance(times, list) or len(times) != len(coords):
                raise TraceError(f"{where}: a LineString needs properties.times, one per vertex")
            for j, (pos, t) in enumerate(zip(coords, times, strict=True)):
                out.append(
                    Signal(sub, float(pos[1]), float(pos[0]), _time(t, f"{where} vertex {j}"))
                )
        else:
            raise TraceError(f"{where}: use Point or LineString geometries")
    return out


def _csv(text: str, sub: str) -> list[Signal]:
    reader = csv.reader(io.StringIO(text))
    out = []
    for n, row in enumerate(reader, start=1):
        if not row or row[0].strip().startswith("#") or row[0].strip() == "lat":
            continue
        where = f"line {n}"
        if len(row) < 3:
            raise TraceError(
                f"{where}: expected lat,lon,time[,accuracy_m,speed_mps,moment,received_at]"
            )
        lat = _opt_float(row[0], where, "lat")
        lon = _opt_float(row[1], where, "lon")
        if lat is None or lon is None:
            raise TraceError(f"{where}: lat and lon are required")
        cells = [c.strip() for c in row] + [""] * 4
        out.append(
            Signal(
                sub,
                lat,
                lon,
                _time(cells[2], where),
                accuracy_m=_opt_float(cells[3], where, "accuracy_m"),
                speed_mps=_opt_float(cells[4], where, "speed_mps"),
                moment=_moment(cells[5], where),
                received_at=_time(cells[6], f"{where} received_at") if cells[6] else None,
            )
        )
    return out
