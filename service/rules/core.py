"""The pure, vectorised evaluation core shared by worker, simulator and replay.

Steps for a whole batch at once:
1. one bulk STRtree query of all signal points against the reach boxes of
   all places (reach = radius + hysteresis, so presence can see leaving);
2. exact metres per (signal, place) pair: haversine for points, polygon
   distance for polygons; each pair is then fanned out to every rule (fence)
   that uses the place and cut to the fence's reach;
3. per pair: local time at the signal (zone of the place when its whole reach
   lies in one zone, else a lookup at the signal), then campaign, days,
   dayparts, audience, moment and speed conditions as numpy masks.

Nothing here reads state or clocks; the engine applies presence and caps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np
import numpy.typing as npt
import shapely

from service.vocabulary import CONDITION_REASONS, NonMatchReason, PlaceReason

from .localtime import utc_offsets, zone_name_at
from .places import FloatArray, IntArray, Place, haversine_m, polygon_distances
from .ruleset import CompiledRule, Ruleset
from .signals import Profile, SignalBatch

# The first failed condition of a pair: code c > 0 stands for CONDITION_REASONS[c - 1], and a
# lower code is checked (and reported) first.
OK, CAMPAIGN, DAY, DAYPART, TOPICS, ATTRIBUTES, MOMENT, SPEED = range(len(CONDITION_REASONS) + 1)
NO_PLACE: Final[PlaceReason] = "no_place"
ACCURACY: Final[PlaceReason] = "accuracy"
_EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Match:
    rule: CompiledRule
    place: Place
    place_id: str
    distance_m: float
    ttl_left_s: float | None  # seconds until the firing window ends


@dataclass
class Evaluation:
    """Per (signal, fence) pairs within reach, sorted by signal."""

    ruleset: Ruleset
    batch: SignalBatch
    sig: IntArray
    fence: IntArray
    distance: FloatArray
    inside: npt.NDArray[np.bool_]  # within the fence's radius
    accurate: npt.NDArray[np.bool_]  # accuracy passes the fence's gate
    code: npt.NDArray[np.int8]  # first failed condition, OK when all pass
    ttl_left: FloatArray  # seconds left in the firing window, NaN: no window
    quiet: npt.NDArray[np.bool_]  # in policy quiet hours at the local time
    local_offset: FloatArray  # seconds east of UTC at the signal
    start: IntArray  # pairs of signal i are [start[i], start[i + 1])

    @cached_property
    def matched(self) -> npt.NDArray[np.bool_]:
        """Pairs that passed every condition. Cached: the engine reads it once per signal,
        and rebuilding the whole-batch mask each time made ``decide`` quadratic."""
        return np.asarray(self.inside & self.accurate & (self.code == OK))

    def pair_range(self, i: int) -> range:
        return range(int(self.start[i]), int(self.start[i + 1]))

    def match_at(self, k: int) -> Match:
        rs = self.ruleset
        f = int(self.fence[k])
        p = int(rs.fence_place[f])
        ttl = float(self.ttl_left[k])
        return Match(
            rule=rs.rules[int(rs.fence_rule[f])],
            place=rs.places[p],
            place_id=rs.places[p].id,
            distance_m=float(self.distance[k]),
            ttl_left_s=None if np.isnan(ttl) else ttl,
        )

    def reasons(self, i: int) -> dict[str, str | None]:
        """For every rule: None when it matched signal i, else why not."""
        out: dict[str, str | None] = {r.id: NO_PLACE for r in self.ruleset.rules}
        best: dict[str, int] = {}
        why: NonMatchReason
        ok = self.matched
        for k in self.pair_range(i):
            rule = self.ruleset.rules[int(self.ruleset.fence_rule[int(self.fence[k])])]
            if ok[k]:
                best[rule.id] = -1
                out[rule.id] = None
                continue
            if not self.inside[k] or best.get(rule.id, 99) <= 0:
                continue
            if self.code[k] != OK:
                rank = int(self.code[k])
                why = CONDITION_REASONS[rank - 1]
            else:
                rank, why = 0, ACCURACY
            if rank < best.get(rule.id, 99):
                best[rule.id] = rank
                out[rule.id] = why
        return out


def evaluate(ruleset: Ruleset, batch: SignalBatch) -> Evaluation:
    rs = ruleset
    n = len(batch)
    if len(rs.tree_place) == 0 or n == 0:
        empty_i = np.empty(0, dtype=np.intp)
        empty_f = np.empty(0, dtype=np.float64)
        empty_b = np.empty(0, dtype=bool)
        return Evaluation(
            rs,
            batch,
            empty_i,
            empty_i,
            empty_f,
            empty_b,
            empty_b,
            np.empty(0, dtype=np.int8),
            empty_f,
            empty_b,
            empty_f,
            np.zeros(n + 1, dtype=np.intp),
        )
    pts = shapely.points(batch.lon, batch.lat)
    sig_i, tree_i = rs.tree.query(pts)
    place_i = rs.tree_place[tree_i]
    if len(rs.tree_place) != int(np.count_nonzero(rs.place_fence_count)):
        # Antimeridian places own two boxes; a point on the line hits both.
        key = np.unique(sig_i.astype(np.int64) * len(rs.places) + place_i)
        sig_i, place_i = key // len(rs.places), key % len(rs.places)
    dist = np.empty(len(sig_i), dtype=np.float64)
    poly = rs.place_is_poly[place_i]
    pt = ~poly
    dist[pt] = haversine_m(
        batch.lat[sig_i[pt]],
        batch.lon[sig_i[pt]],
        rs.place_lat[place_i[pt]],
        rs.place_lon[place_i[pt]],
    )
    pp = place_i[poly]
    dist[poly] = polygon_distances(
        rs.place_shape[pp],
        rs.place_lon0[pp],
        rs.place_lat0[pp],
        batch.lat[sig_i[poly]],
        batch.lon[sig_i[poly]],
    )
    # Fan each (signal, place) pair out to the fences (rules) using the place.
    cnt = rs.place_fence_count[place_i]
    rep = np.repeat(np.arange(len(place_i)), cnt)
    within = np.arange(len(rep)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    fence = rs.place_fences[rs.place_fence_start[place_i][rep] + within]
    sig = sig_i[rep]
    d = dist[rep]
    keep = d <= rs.fence_reach[fence]
    order = np.argsort(sig[keep], kind="stable")
    sig, fence, d = sig[keep][order], fence[keep][order], d[keep][order]
    radius = rs.fence_radius[fence]
    inside = d <= radius
    accurate = ~(batch.accuracy[sig] > rs.fence_gate[fence])
    offset = _offsets(rs, batch, sig, rs.fence_place[fence])
    local = batch.t[sig] + offset
    day = np.floor(local / 86400.0)
    sec = local - day * 86400.0
    weekday = ((day + 3) % 7).astype(np.intp)  # 1970-01-01 was a Thursday
    code = np.zeros(len(sig), dtype=np.int8)
    ttl_left = np.full(len(sig), np.nan)
    rule_of = rs.fence_rule[fence]
    for r in np.unique(rule_of):
        m = np.flatnonzero(rule_of == r)
        _conditions(rs.rules[int(r)], batch, sig[m], day[m], sec[m], weekday[m], code, ttl_left, m)
    quiet = np.zeros(len(sig), dtype=bool)
    qh = rs.policy.quiet_hours
    if qh is not None:
        quiet = _in_window(qh.start, qh.end, sec)
    start = np.searchsorted(sig, np.arange(n + 1)).astype(np.intp)
    return Evaluation(
        rs, batch, sig, fence, d, inside, accurate, code, ttl_left, quiet, offset, start
    )


def _in_window(start: int, end: int, sec: FloatArray) -> npt.NDArray[np.bool_]:
    if start > end:
        return np.asarray((sec >= start) | (sec < end))
    return np.asarray((sec >= start) & (sec < end))


def _offsets(rs: Ruleset, batch: SignalBatch, sig: IntArray, place: IntArray) -> FloatArray:
    """UTC offset at each pair's signal, grouped by zone so zoneinfo runs
    once per (zone, quarter hour)."""
    names = list(rs.tz_names)
    zone_code = rs.place_tz_code[place].copy()
    unknown = np.flatnonzero(zone_code < 0)
    if len(unknown):
        codes = {name: c for c, name in enumerate(names)}
        looked_up: dict[int, int] = {}
        for k in unknown:
            s = int(sig[k])
            c = looked_up.get(s)
            if c is None:
                name = zone_name_at(
                    float(batch.lat[s]),
                    float(batch.lon[s]),
                    batch.unique_profiles[int(batch.profile_idx[s])].timezone,
                )
                c = looked_up[s] = codes.setdefault(name, len(codes))
                if c == len(names):
                    names.append(name)
            zone_code[k] = c
    offset = np.zeros(len(sig), dtype=np.float64)
    for c in np.unique(zone_code):
        m = zone_code == c
        offset[m] = utc_offsets(names[int(c)], batch.t[sig[m]])
    return offset


def _conditions(
    rule: CompiledRule,
    batch: SignalBatch,
    sig: IntArray,
    day: FloatArray,
    sec: FloatArray,
    weekday: IntArray,
    code: npt.NDArray[np.int8],
    ttl_left: FloatArray,
    m: IntArray,
) -> None:
    model = rule.model
    mask = rule.day_mask
    day_ok = ((mask >> weekday) & 1).astype(bool)
    if rule.windows:
        hit = np.zeros(len(sig), dtype=bool)
        in_any = np.zeros(len(sig), dtype=bool)
        left = np.full(len(sig), np.nan)
        for w in rule.windows:
            inw = _in_window(w.start, w.end, sec)
            in_any |= inw
            # A window across midnight belongs to the day it started on.
            started = weekday - ((sec < w.end) & w.crosses_midnight).astype(np.intp)
            both = inw & ((mask >> (started % 7)) & 1).astype(bool)
            end = np.where(w.crosses_midnight & (sec >= w.start), w.end + 86400.0, float(w.end))
            left = np.where(both, np.fmax(left, end - sec), left)
            hit |= both
        # In a window that started on an excluded day, or on an excluded day
        # at all: the day is the reason; otherwise the time of day is.
        day_fail = ~hit & (in_any | ~day_ok)
        time_fail = ~hit
        ttl_left[m] = left
    else:
        day_fail = ~day_ok
        time_fail = np.zeros(len(sig), dtype=bool)
    fails: list[tuple[int, npt.NDArray[np.bool_]]] = [(DAY, day_fail), (DAYPART, time_fail)]
    camp = model.campaign
    if camp is not None:
        ordinal = day + _EPOCH_ORDINAL
        bad = np.zeros(len(sig), dtype=bool)
        if camp.start is not None:
            bad |= ordinal < camp.start.toordinal()
        if camp.end is not None:
            bad |= ordinal > camp.end.toordinal()
        fails.insert(0, (CAMPAIGN, bad))
    who = model.who
    if who is not None:
        if who.topics or who.attributes:
            pidx = batch.profile_idx[sig]
            uniq, inv = np.unique(pidx, return_inverse=True)
            verdict = np.fromiter(
                (_audience(rule, batch.unique_profiles[int(p)]) for p in uniq),
                dtype=np.int8,
                count=len(uniq),
            )[inv.reshape(-1)]
            fails.append((TOPICS, verdict == TOPICS))
            fails.append((ATTRIBUTES, verdict == ATTRIBUTES))
        if who.moments:
            fails.append((MOMENT, ((rule.moment_mask >> batch.moment[sig]) & 1) == 0))
        if who.max_speed_mps is not None:
            # Unknown speed (NaN) passes: a missing sensor is not speeding.
            fails.append((SPEED, batch.speed[sig] > who.max_speed_mps))
    for c, bad in reversed(fails):
        code[m[bad]] = c


def _audience(rule: CompiledRule, profile: Profile) -> int:
    who = rule.model.who
    if who is None:
        return OK
    if who.topics and not set(who.topics) & profile.topics:
        return TOPICS
    if who.attributes and not _attrs_equal(who.attributes, profile.attributes):
        return ATTRIBUTES
    return OK


def _attrs_equal(wanted: Mapping[str, object], have: Mapping[str, object]) -> bool:
    for key, value in wanted.items():
        got = have.get(key)
        # bool is an int subclass; `tier: 1` must not match `tier: true`.
        if key not in have or (type(got) is bool and type(value) is not bool) or got != value:
            return False
    return True
