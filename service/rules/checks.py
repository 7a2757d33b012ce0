"""Checks of a compiled rule set for rules that load but cannot do what was meant.

`rules check` prints the findings; the loader adds them to its own (so a hot reload that
has an error keeps the previous rules, and `GET /v1/rules` shows the warnings).

Warnings (documented in docs/rules.md, "Warnings"):

* a time window (a `when.between` window, or a daypart a rule uses) that overlaps the
  policy's quiet hours: nothing is sent in the overlap;
* a window longer than 16 hours (a swapped `10:30-07:00` is 20 h 30 min);
* a campaign whose `end` is before today (the caller's date, UTC in the loader);
* a place far from the rest of its file (lat/lon swapped?), see `far_places`.

Error: a window wholly inside the quiet hours - nothing is ever sent in it.

Pure: no clock and no I/O beyond the `read_text` callable it is given (used only to find
the line of a place in its GeoJSON file once a place is reported; a CSV row has its line).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from service.errors import SourceError

from .models import PolicyModel
from .places import Place, haversine_m, wrap_lon
from .ruleset import CompiledRule, Ruleset
from .source import Located, load_located
from .units import Window

DAY_S = 86_400
MAX_WINDOW_S = 16 * 3600
# A place is "far" when it is more than FAR_M from the median point of its file and more
# than FAR_SPREAD times the median distance of the file's places from that point.
FAR_M = 500_000.0
FAR_SPREAD = 10.0
FAR_MIN_PLACES = 3  # with two places there is no "rest" to compare with

Key = tuple[str | int, ...]
Span = tuple[int, int]  # seconds of the day, start < end, within 0..DAY_S


@dataclass
class Findings:
    """`file:line: message` strings, warnings as `file:line: warning: message`."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def err(self, file: str, line: int, message: str) -> None:
        self.errors.append(f"{file}:{line}: {message}")

    def warn(self, file: str, line: int, message: str) -> None:
        self.warnings.append(f"{file}:{line}: warning: {message}")


def check_ruleset(
    rs: Ruleset,
    sources: Mapping[str, Located],
    *,
    today: date,
    read_text: Callable[[str], str] | None = None,
) -> Findings:
    """The findings for a loaded rule set; see `check_rules`."""
    return check_rules(rs.rules, rs.policy, rs.places, sources, today=today, read_text=read_text)


def check_rules(
    rules: Sequence[CompiledRule],
    policy: PolicyModel | None,
    places: Sequence[Place],
    sources: Mapping[str, Located],
    *,
    today: date,
    read_text: Callable[[str], str] | None = None,
) -> Findings:
    """Warnings and errors for compiled rules, their policy and all loaded places.

    ``sources``: the parsed rule files by ``rule.file`` (for line numbers);
    ``today``: the date campaigns are compared with; ``read_text``: reads a places file,
    to give a reported place its line (without it, the line is 1).
    """
    out = Findings()
    quiet = policy.quiet_hours if policy is not None else None
    for rule in rules:
        loc = sources.get(rule.file)

        def line(key: Key, loc: Located | None = loc) -> int:
            return loc.line_of(key) if loc is not None else 1

        _campaign(out, rule, line, today)
        named = _named_windows(rule, policy)
        for window, key, label in named:
            where = f"{_dotted(key)}: {label}"
            length = _length(_spans(window))
            if length > MAX_WINDOW_S:
                out.warn(rule.file, line(key), _long_message(where, window, length))
            if quiet is None:
                continue
            inside = _intersect(_spans(window), _spans(quiet))
            if not inside:
                continue
            left = _minus(_spans(window), _spans(quiet))
            if not left:
                never = (
                    "the rule can never send"
                    if len(named) == 1
                    else "nothing is ever sent in this window"
                )
                out.err(
                    rule.file,
                    line(key),
                    f"{where} lies wholly inside the quiet hours {quiet.text} "
                    f"(policy.yaml): {never}",
                )
                continue
            out.warn(
                rule.file,
                line(key),
                f"{where} overlaps the quiet hours {quiet.text} (policy.yaml) during "
                f"{_fmt(inside, window.start)}, when nothing is sent; it can send only "
                f"{_fmt(left, window.start)}",
            )
    _far_places(out, places, read_text)
    return out


def _dotted(key: Key) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _campaign(out: Findings, rule: CompiledRule, line: Callable[[Key], int], today: date) -> None:
    campaign = rule.model.campaign
    if campaign is None or campaign.end is None or campaign.end >= today:
        return
    out.warn(
        rule.file,
        line(("campaign", "end")),
        f"campaign.end: the campaign ended on {campaign.end.isoformat()} (today is "
        f"{today.isoformat()}): the rule never fires again; move the dates or remove the file",
    )


def _named_windows(rule: CompiledRule, policy: PolicyModel | None) -> list[tuple[Window, Key, str]]:
    """The rule's windows with the key each came from and how to name it."""
    when = rule.model.when
    named: list[tuple[Window, Key, str]] = []
    if when is not None:
        between = when.windows
        single = not isinstance(when.between, list)
        for i, w in enumerate(between):
            named.append((w, ("when", "between") if single else ("when", "between", i), w.text))
        dayparts = policy.dayparts if policy is not None else {}
        for i, name in enumerate(when.dayparts or []):
            if name in dayparts:
                w = dayparts[name]
                named.append((w, ("when", "dayparts", i), f"daypart {name!r} ({w.text})"))
    if [w for w, _, _ in named] != list(rule.windows):
        # The compiled windows came from somewhere this module does not know: report
        # them at `when` rather than at a wrong line.
        named = [(w, ("when",), w.text) for w in rule.windows]
    return named


def _spans(w: Window) -> list[Span]:
    if w.start < w.end:
        return [(w.start, w.end)]
    return [s for s in ((w.start, DAY_S), (0, w.end)) if s[0] < s[1]]


def _length(spans: list[Span]) -> int:
    return sum(b - a for a, b in spans)


def _intersect(xs: list[Span], ys: list[Span]) -> list[Span]:
    out = []
    for a, b in xs:
        for c, d in ys:
            lo, hi = max(a, c), min(b, d)
            if lo < hi:
                out.append((lo, hi))
    return sorted(out)


def _minus(xs: list[Span], ys: list[Span]) -> list[Span]:
    out = []
    for a, b in xs:
        pieces = [(a, b)]
        for c, d in ys:
            pieces = [
                p for lo, hi in pieces for p in ((lo, min(hi, c)), (max(lo, d), hi)) if p[0] < p[1]
            ]
        out.extend(pieces)
    return sorted(out)


def _clock(second: int) -> str:
    return f"{second // 3600:02d}:{second % 3600 // 60:02d}"


def _fmt(spans: list[Span], origin: int) -> str:
    """Spans as windows in the order they come after `origin` (the window's start); two
    that meet, also at midnight, are one."""
    parts: list[Span] = []
    for a, b in sorted(spans, key=lambda s: (s[0] - origin) % DAY_S):
        if parts and parts[-1][1] % DAY_S == a:
            parts[-1] = (parts[-1][0], b)
        else:
            parts.append((a, b))
    return " and ".join(f"{_clock(a)}-{_clock(b)}" for a, b in parts)


def _hours(seconds: int) -> str:
    h, m = divmod(seconds // 60, 60)
    return f"{h} h {m} min" if m else f"{h} h"


def _long_message(where: str, window: Window, length: int) -> str:
    text = f"{where} is {_hours(length)} long (more than 16 h)"
    if window.crosses_midnight:
        text += f": it runs from {_clock(window.start)} to {_clock(window.end)} the next day"
        if DAY_S - length <= MAX_WINDOW_S:
            text += f"; did you mean {_clock(window.end)}-{_clock(window.start)}?"
    return text


def far_places(places: Sequence[Place]) -> list[tuple[Place, float, tuple[float, float]]]:
    """The places of one file that lie far from the rest, with their distance in metres
    from the file's median point (lat, lon).

    The median point is the median latitude and the median longitude of the file's
    places (longitudes taken relative to their circular mean, so a file around the
    180th meridian works). The median ignores a minority of stray places, so it stays
    where the file's places are. A place is far when it is more than 500 km from that
    point and more than 10 times the median distance of the file's places from it. Only
    files of at least 3 places are looked at, and only when the far places are at most a
    quarter of the file (at least one): a file that spreads over several cities on
    purpose has more.
    """
    n = len(places)
    if n < FAR_MIN_PLACES:
        return []
    lat = np.asarray([p.lat for p in places], dtype=np.float64)
    lon = np.asarray([p.lon for p in places], dtype=np.float64)
    rad = np.radians(lon)
    ref = math.degrees(math.atan2(float(np.sin(rad).mean()), float(np.cos(rad).mean())))
    mid_lat = float(np.median(lat))
    mid_lon = float(wrap_lon(np.asarray([ref + float(np.median(wrap_lon(lon - ref)))]))[0])
    dist = haversine_m(lat, lon, mid_lat, mid_lon)
    limit = max(FAR_M, FAR_SPREAD * float(np.median(dist)))
    far = np.flatnonzero(dist > limit)
    if len(far) == 0 or len(far) > max(1, n // 4):
        return []
    return [(places[int(i)], float(dist[i]), (mid_lat, mid_lon)) for i in far]


def _far_places(
    out: Findings, places: Sequence[Place], read_text: Callable[[str], str] | None
) -> None:
    by_file: dict[str, list[Place]] = {}
    for p in places:
        by_file.setdefault(p.file, []).append(p)
    for file, group in by_file.items():
        found = far_places(group)
        if not found:
            continue
        # A CSV row knows its line; a GeoJSON feature's is found in the file's text.
        loc = _locate(file, read_text) if group[0].line is None else None
        for place, metres, (mid_lat, mid_lon) in found:
            key: Key = ("features", place.index, "geometry", "coordinates")
            what = f"feature {place.index} ({place.id!r})"
            if place.line is not None:
                what = f"place {place.id!r}"
            message = (
                f"{what} is {metres / 1000:,.0f} km from the "
                f"median point of the {len(group)} places in this file "
                f"({mid_lat:.4f}, {mid_lon:.4f}), far from the rest"
            )
            swapped = _swapped_m(place, mid_lat, mid_lon)
            if place.line is not None:
                if swapped is not None and swapped <= FAR_M:
                    message += (
                        f"; with lat and lon swapped it would be {swapped / 1000:,.0f} km "
                        "from it - are the lat and lon columns swapped?"
                    )
                else:
                    message += "; are its lat and lon right?"
                out.warn(file, place.line, message)
                continue
            if swapped is not None and swapped <= FAR_M:
                message += (
                    f"; with latitude and longitude swapped it would be "
                    f"{swapped / 1000:,.0f} km from it - GeoJSON coordinates are "
                    "[longitude, latitude]"
                )
            else:
                message += "; are its coordinates right (GeoJSON order is [longitude, latitude])?"
            out.warn(file, loc.line_of(key) if loc is not None else 1, message)


def _swapped_m(place: Place, mid_lat: float, mid_lon: float) -> float | None:
    if place.kind != "point" or abs(place.lon) > 90.0:
        return None
    return float(haversine_m(place.lon, place.lat, mid_lat, mid_lon))


def _locate(file: str, read_text: Callable[[str], str] | None) -> Located | None:
    if read_text is None:
        return None
    try:
        return load_located(read_text(file))
    except (OSError, UnicodeDecodeError, SourceError):
        return None
