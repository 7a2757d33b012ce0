"""Places (GeoJSON features, or rows of a CSV: see places_csv.py) and distances in metres.

Earth model: a sphere of radius 6,371,008.8 m (the IUGG mean radius); the
difference to the WGS84 ellipsoid is below 0.5 % and far below GPS error.

* Points: great-circle distance (haversine), exact on the sphere, correct
  across the antimeridian because only the longitude difference is used.
* Polygons: 0 inside, otherwise metres to the nearest boundary point. Each
  polygon is stored in a local equirectangular plane centred on its bounding
  box (an affine map of lon/lat, so edges stay the straight lon/lat lines
  RFC 7946 specifies). The plane only *locates* the nearest boundary point;
  the reported distance is the haversine distance to that point, so the
  plane's scale error (about 0.1 % at 5 km) does not reach the result.
* Supported: latitudes within +-85 degrees; polygons must not span more than
  180 degrees of longitude. A polygon across the antimeridian must be split at
  +-180 into a MultiPolygon as RFC 7946 section 3.1.9 asks; its parts are
  unwrapped into one plane, so distances across the line are correct.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from service.errors import PlaceError

EARTH_RADIUS_M = 6_371_008.8
MAX_ABS_LAT = 85.0
M_PER_DEG = EARTH_RADIUS_M * np.pi / 180.0

# The files a rules folder's places may come from: GeoJSON in either of its usual
# extensions, or a spreadsheet saved as CSV (places_csv.py).
PLACE_SUFFIXES = (".geojson", ".json", ".csv")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def haversine_m(
    lat1: FloatArray | float,
    lon1: FloatArray | float,
    lat2: FloatArray | float,
    lon2: FloatArray | float,
) -> FloatArray:
    """Great-circle distance in metres, vectorised over numpy arrays."""
    p1 = np.radians(lat1)
    p2 = np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - lon1)
    a = np.sin(dp / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2.0) ** 2
    return np.asarray(2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def wrap_lon(dlon: FloatArray) -> FloatArray:
    """Longitude difference folded into [-180, 180)."""
    return np.asarray((dlon + 180.0) % 360.0 - 180.0)


def is_places_file(path: Path | str) -> bool:
    return Path(path).suffix.lower() in PLACE_SUFFIXES


def number(text: str) -> float | None:
    """A decimal number as a person writes it in a cell (`40.7`, `-74`, `1e3`), else None:
    no `nan`, `inf` or `1_000`, which Python's float() would take."""
    if _NUMBER.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


@dataclass(eq=False)
class Place:
    """One GeoJSON feature or CSV row. `key` is unique over all files; `id` is what
    marketers see (the `id` property, else `<file stem>-<index>`; a CSV's `id` column)."""

    key: str
    id: str
    file: str
    index: int
    properties: dict[str, Any]
    kind: str  # "point" or "polygon"
    lat: float
    lon: float
    radius_m: float | None = None  # from the feature's radius_m property
    shape: BaseGeometry | None = None  # polygon in the local plane, metres
    lon0: float = 0.0
    lat0: float = 0.0
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # unwrapped lon/lat
    equivalent_radius_m: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    line: int | None = None  # the CSV line of the row; None for a GeoJSON feature

    @classmethod
    def point(
        cls,
        *,
        file: str,
        index: int,
        id: str,
        properties: dict[str, Any],
        lat: float,
        lon: float,
        radius_m: float | None,
        line: int | None = None,
    ) -> Place:
        """A point place (a GeoJSON Point or a CSV row): its centre and bounds are the point."""
        return cls(
            key=f"{file}#{index}",
            id=id,
            file=file,
            index=index,
            properties=properties,
            kind="point",
            lat=lat,
            lon=lon,
            radius_m=radius_m,
            lon0=lon,
            lat0=lat,
            bounds=(lon, lat, lon, lat),
            line=line,
        )

    @property
    def name(self) -> str:
        return str(self.properties.get("name", self.id))

    def has(self, key: str, value: Any) -> bool:
        """Whether a `where.filter` entry holds. GeoJSON values compare as they are; a
        spreadsheet's cells are all text, so there a number matches a cell holding the
        same number (`2` matches "2" and "02") and true/false match true/yes and
        false/no in any case."""
        if key not in self.properties:
            return False
        have = self.properties[key]
        if self.line is None or not isinstance(have, str):
            return bool(have == value)
        if isinstance(value, bool):
            return have.lower() in (("true", "yes") if value else ("false", "no"))
        if isinstance(value, int | float):
            return number(have) == value
        return bool(have == value)

    def feature(self, radius_m: float | None) -> dict[str, Any]:
        """The place as a GeoJSON feature in lon/lat (the dashboard's map); a point carries
        the radius it is reached with."""
        properties = {**self.properties, "id": self.id, "name": self.name}
        if self.kind == "point" or self.shape is None:
            geometry: dict[str, Any] = {"type": "Point", "coordinates": [self.lon, self.lat]}
            if radius_m is not None:
                properties["radius_m"] = radius_m
        else:
            geometry = shapely.geometry.mapping(shapely.transform(self.shape, self._unproject))
        return {"type": "Feature", "properties": properties, "geometry": geometry}

    def _unproject(self, xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The inverse of the loader's local projection: metres back to lon/lat."""
        k = M_PER_DEG * np.cos(np.radians(self.lat0))
        out = np.empty_like(xy)
        out[:, 0] = xy[:, 0] / k + self.lon0
        out[:, 1] = xy[:, 1] / M_PER_DEG + self.lat0
        return out

    def reach_box(self, reach_m: float) -> list[tuple[float, float, float, float]]:
        """Lon/lat boxes that hold every point within `reach_m` of the place;
        two boxes when the reach crosses the antimeridian."""
        minx, miny, maxx, maxy = self.bounds
        # +1 m and the widest latitude keep the box conservative.
        dlat = (reach_m + 1.0) / M_PER_DEG
        lat_edge = min(89.9, max(abs(miny), abs(maxy)) + dlat)
        dlon = (reach_m + 1.0) / (M_PER_DEG * np.cos(np.radians(lat_edge)))
        x0, x1 = minx - dlon, maxx + dlon
        y0, y1 = miny - dlat, maxy + dlat
        if x0 < -180.0:
            return [(-180.0, y0, x1, y1), (x0 + 360.0, y0, 180.0, y1)]
        if x1 > 180.0:
            return [(x0, y0, 180.0, y1), (-180.0, y0, x1 - 360.0, y1)]
        return [(x0, y0, x1, y1)]


def _check_lonlat(lon: float, lat: float, where: str) -> None:
    if not (-180.0 <= lon <= 180.0):
        raise PlaceError(
            f"{where}: longitude {lon} is outside -180..180 "
            "(GeoJSON order is [longitude, latitude])"
        )
    if abs(lat) > MAX_ABS_LAT:
        raise PlaceError(f"{where}: latitude {lat} is beyond the supported +-{MAX_ABS_LAT:g}")


# One polygon: its outer ring, then its holes, each a list of (lon, lat).
_Rings = list[list[tuple[float, float]]]


def _rings(coords: Any, where: str) -> _Rings:
    if not isinstance(coords, list) or not coords:
        raise PlaceError(f"{where}: Polygon coordinates must be a list of rings")
    rings = []
    for ring in coords:
        if not isinstance(ring, list) or len(ring) < 4:
            raise PlaceError(
                f"{where}: a polygon ring needs at least 4 positions "
                "(the first repeated at the end)"
            )
        pts = []
        for pos in ring:
            if (
                not isinstance(pos, list)
                or len(pos) < 2
                or not all(isinstance(v, int | float) for v in pos[:2])
            ):
                raise PlaceError(f"{where}: positions must be [longitude, latitude]")
            lon, lat = float(pos[0]), float(pos[1])
            _check_lonlat(lon, lat, where)
            pts.append((lon, lat))
        if pts[0] != pts[-1]:
            raise PlaceError(f"{where}: a polygon ring must end where it starts")
        rings.append(pts)
    return rings


def make_place(file: str, index: int, feature: Any, stem: str) -> Place:
    """Build a Place from one GeoJSON feature; raises PlaceError."""
    where = f"feature {index}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise PlaceError(f"{where}: not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise PlaceError(f"{where}: properties must be an object")
    pid = str(props.get("id", f"{stem}-{index}"))
    where = f"feature {index} (id {pid!r})"
    geom = feature.get("geometry")
    if not isinstance(geom, dict):
        raise PlaceError(f"{where}: geometry is missing")
    gtype, coords = geom.get("type"), geom.get("coordinates")
    radius = _radius(props, where)
    key = f"{file}#{index}"
    if gtype == "Point":
        lon, lat = _point_lonlat(coords, where)
        return Place.point(
            file=file, index=index, id=pid, properties=props, lat=lat, lon=lon, radius_m=radius
        )
    polys = _polygon_rings(gtype, coords, where)
    polys, unwrapped = _unwrap_antimeridian(polys, where)
    lonlat = _lonlat_shape(polys, unwrapped, where)
    lons = [lon for poly in polys for ring in poly for lon, _ in ring]
    lats = [lat for poly in polys for ring in poly for _, lat in ring]
    minx, miny, maxx, maxy = min(lons), min(lats), max(lons), max(lats)
    lon0, lat0 = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    local = _to_local(lonlat, lon0, lat0)
    centroid = lonlat.centroid
    return Place(
        key=key,
        id=pid,
        file=file,
        index=index,
        properties=props,
        kind="polygon",
        lat=float(centroid.y),
        lon=float(wrap_lon(np.asarray([centroid.x]))[0]),
        radius_m=radius,
        shape=local,
        lon0=lon0,
        lat0=lat0,
        bounds=(minx, miny, maxx, maxy),
        equivalent_radius_m=float(np.sqrt(local.area / np.pi)),
    )


def _radius(props: dict[str, Any], where: str) -> float | None:
    """The feature's radius_m in metres, or None when it has none."""
    radius = props.get("radius_m")
    if radius is not None and (
        isinstance(radius, bool) or not isinstance(radius, int | float) or radius <= 0
    ):
        raise PlaceError(f"{where}: radius_m must be a positive number of metres")
    return float(radius) if radius else None


def _point_lonlat(coords: Any, where: str) -> tuple[float, float]:
    """The (longitude, latitude) of a Point geometry."""
    if (
        not isinstance(coords, list)
        or len(coords) < 2
        or not all(isinstance(v, int | float) for v in coords[:2])
    ):
        raise PlaceError(f"{where}: Point coordinates must be [longitude, latitude]")
    lon, lat = float(coords[0]), float(coords[1])
    _check_lonlat(lon, lat, where)
    return lon, lat


def _polygon_rings(gtype: Any, coords: Any, where: str) -> list[_Rings]:
    """The rings of each polygon of a Polygon or MultiPolygon geometry."""
    if gtype == "Polygon":
        return [_rings(coords, where)]
    if gtype == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise PlaceError(f"{where}: MultiPolygon coordinates must be a list of polygons")
        return [_rings(p, where) for p in coords]
    raise PlaceError(
        f"{where}: geometry type {gtype!r} is not supported (use Point, Polygon or MultiPolygon)"
    )


def _unwrap_antimeridian(polys: list[_Rings], where: str) -> tuple[list[_Rings], bool]:
    """The polygons made continuous across +-180, and whether that was needed."""
    lons = [lon for poly in polys for ring in poly for lon, _ in ring]
    if max(lons) - min(lons) <= 180.0:
        return polys, False
    # Parts on both sides of +-180: unwrap the western side by +360.
    polys = [
        [[(lon + 360.0 if lon < 0 else lon, lat) for lon, lat in ring] for ring in poly]
        for poly in polys
    ]
    lons = [lon for poly in polys for ring in poly for lon, _ in ring]
    if max(lons) - min(lons) > 180.0:
        raise PlaceError(f"{where}: polygon spans more than 180 degrees of longitude")
    return polys, True


def _lonlat_shape(polys: list[_Rings], unwrapped: bool, where: str) -> BaseGeometry:
    """The valid shapely geometry, in longitude/latitude, of the polygons."""
    parts = [shapely.Polygon(p[0], p[1:]) for p in polys]
    for part in parts:
        if not shapely.is_valid(part):
            raise PlaceError(
                f"{where}: invalid polygon: {shapely.is_valid_reason(part)} "
                "(rings must not cross themselves or each other)"
            )
    if len(parts) == 1:
        return parts[0]
    if unwrapped:
        # Parts split at +-180 share that edge; once unwrapped they are one area.
        return shapely.union_all(parts)
    multi = shapely.MultiPolygon(parts)
    if not shapely.is_valid(multi):
        raise PlaceError(
            f"{where}: invalid polygon: {shapely.is_valid_reason(multi)} "
            "(the parts of a MultiPolygon must not overlap)"
        )
    return multi


def _to_local(geom: BaseGeometry, lon0: float, lat0: float) -> BaseGeometry:
    k = M_PER_DEG * np.cos(np.radians(lat0))

    def project(xy: FloatArray) -> FloatArray:
        out = np.empty_like(xy)
        out[:, 0] = (xy[:, 0] - lon0) * k
        out[:, 1] = (xy[:, 1] - lat0) * M_PER_DEG
        return out

    return shapely.transform(geom, project)


def polygon_distances(
    shapes: npt.NDArray[np.object_],
    lon0: FloatArray,
    lat0: FloatArray,
    lat: FloatArray,
    lon: FloatArray,
) -> FloatArray:
    """Metres from each (lat[i], lon[i]) to the local-plane polygon shapes[i]
    centred at (lat0[i], lon0[i]); 0 inside. Vectorised: one shapely call per
    step for the whole batch."""
    n = len(shapes)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    k = M_PER_DEG * np.cos(np.radians(lat0))
    x = wrap_lon(lon - lon0) * k
    y = (lat - lat0) * M_PER_DEG
    pts = shapely.points(x, y)
    planar = shapely.distance(shapes, pts)
    out = np.zeros(n, dtype=np.float64)
    outside = planar > 0.0
    if outside.any():
        lines = shapely.shortest_line(shapes[outside], pts[outside])
        near = shapely.get_coordinates(shapely.get_point(lines, 0))
        near_lon = near[:, 0] / k[outside] + lon0[outside]
        near_lat = near[:, 1] / M_PER_DEG + lat0[outside]
        out[outside] = haversine_m(lat[outside], lon[outside], near_lat, near_lon)
    return out
