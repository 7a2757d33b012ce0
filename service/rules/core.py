"""The pure, vectorised evaluation core shared by worker, simulator and replay.

Steps for a whole batch at once:
1. one bulk STRtree query of all located signal points against the reach boxes
   of all places (reach = radius + hysteresis, so presence can see leaving);
2. exact metres per (signal, place) pair: haversine for points, polygon
   distance for polygons; each pair is then fanned out to every rule (fence)
   that uses the place and cut to the fence's reach; every signal, located or
   not, also pairs with each location-free rule;
3. per pair: local time at the signal (zone of the place when its whole reach
   lies in one zone, else a lookup at the signal; for location-free rules the
   zone at the signal's location, else the subscriber's timezone), then
   campaign, days, dayparts, topics, attribute, moment, speed and context
   conditions as numpy masks.

Nothing here reads state or clocks; the engine applies presence and caps.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np
import numpy.typing as npt
import shapely

from service.vocabulary import PlaceReason

from .conditions import Column, Condition
from .conditions import mask as condition_mask
from .localtime import utc_offsets, zone, zone_name_at
from .places import FloatArray, IntArray, Place, haversine_m, polygon_distances
from .ruleset import CompiledRule, CompiledVariant, Ruleset
from .signals import SignalBatch

# The first failed condition of a pair is a code: 0 passes, c > 0 is the ruleset's
# reason_names[c]; a lower code is checked (and reported) first.
OK: Final = 0
NO_PLACE: Final[PlaceReason] = "no_place"
ACCURACY: Final[PlaceReason] = "accuracy"
NO_LOCATION: Final[PlaceReason] = "no_location"
_EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Match:
    rule: CompiledRule
    place: Place | None  # None for a location-free rule
    place_id: str  # "" for a location-free rule
    distance_m: float | None
    ttl_left_s: float | None  # seconds until the firing window ends
    pair: int  # index of the (signal, fence) pair in its Evaluation
    # Drawn for a rule with allocation: adaptive (adaptive.draw_variants); None: the fixed
    # variant of the weights (engine.rule_variant).
    variant: CompiledVariant | None = None


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
    code: npt.NDArray[np.int16]  # first failed condition (a reason code), OK when all pass
    ttl_left: FloatArray  # seconds left in the firing window, NaN: no window
    quiet: npt.NDArray[np.bool_]  # in policy quiet hours at the local time
    local_offset: FloatArray  # seconds east of UTC at the signal
    start: IntArray  # pairs of signal i are [start[i], start[i + 1])
    free: npt.NDArray[np.bool_]  # the pair's rule is location-free (no place)

    @cached_property
    def matched(self) -> npt.NDArray[np.bool_]:
        """Pairs that passed every condition. Cached: the engine, the reasons and the counts
        all read it."""
        return np.asarray(self.inside & self.accurate & (self.code == OK))

    def pair_range(self, i: int) -> range:
        return range(int(self.start[i]), int(self.start[i + 1]))

    def matches(
        self, ks: IntArray, variants: Sequence[CompiledVariant | None] | None = None
    ) -> list[Match]:
        """The matches of pairs ``ks``, read out of the arrays in one go; ``variants``: the one
        drawn for each (adaptive.draw_variants), None for the fixed one."""
        rs = self.ruleset
        fence = self.fence[ks]
        rules, places = rs.rules, rs.places
        out = []
        for k, r, p, d, ttl, v in zip(
            ks.tolist(),
            rs.fence_rule[fence].tolist(),
            rs.fence_place[fence].tolist(),
            self.distance[ks].tolist(),
            self.ttl_left[ks].tolist(),
            variants if variants is not None else itertools.repeat(None, len(ks)),
            strict=True,
        ):
            place = places[p] if p >= 0 else None
            out.append(
                Match(
                    rule=rules[r],
                    place=place,
                    place_id=place.id if place is not None else "",
                    distance_m=d if place is not None else None,
                    ttl_left_s=None if ttl != ttl else ttl,  # NaN: no window
                    pair=k,
                    variant=v,
                )
            )
        return out

    def reasons(self, i: int) -> dict[str, str | None]:
        """For every rule: None when it matched signal i, else why not."""
        rs = self.ruleset
        located = not np.isnan(self.batch.lat[i])
        out: dict[str, str | None] = {r.id: NO_PLACE if located else NO_LOCATION for r in rs.rules}
        best: dict[str, int] = {}
        why: str
        ok = self.matched
        for k in self.pair_range(i):
            rule = rs.rules[int(rs.fence_rule[int(self.fence[k])])]
            if ok[k]:
                best[rule.id] = -1
                out[rule.id] = None
                continue
            if not self.inside[k] or best.get(rule.id, 1 << 30) <= 0:
                continue
            if self.code[k] != OK:
                rank = int(self.code[k])
                why = rs.reason_names[rank]
            else:
                rank, why = 0, ACCURACY
            if rank < best.get(rule.id, 1 << 30):
                best[rule.id] = rank
                out[rule.id] = why
        return out


def evaluate(ruleset: Ruleset, batch: SignalBatch) -> Evaluation:
    rs = ruleset
    n = len(batch)
    with collector_paused():
        sig, fence, d = _place_pairs(rs, batch)
    free_n = len(rs.free_fences)
    if free_n and n:
        # Every signal pairs with every location-free rule, after its place pairs.
        sig = np.concatenate((sig, np.repeat(np.arange(n, dtype=np.intp), free_n)))
        fence = np.concatenate((fence, np.tile(rs.free_fences, n)))
        d = np.concatenate((d, np.full(n * free_n, np.nan)))
        order = np.argsort(sig, kind="stable")
        sig, fence, d = sig[order], fence[order], d[order]
    place = rs.fence_place[fence]
    free = place < 0
    radius = rs.fence_radius[fence]
    inside = (d <= radius) | free
    accurate = ~(batch.accuracy[sig] > rs.fence_gate[fence])
    offset = _offsets(rs, batch, sig, place)
    local = batch.t[sig] + offset
    day = np.floor(local / 86400.0)
    sec = local - day * 86400.0
    weekday = ((day + 3) % 7).astype(np.intp)  # 1970-01-01 was a Thursday
    code = np.zeros(len(sig), dtype=np.int16)
    ttl_left = np.full(len(sig), np.nan)
    rule_of = rs.fence_rule[fence]
    for r in np.unique(rule_of):
        m = np.flatnonzero(rule_of == r)
        _conditions(
            rs, rs.rules[int(r)], batch, sig[m], day[m], sec[m], weekday[m], code, ttl_left, m
        )
    quiet = np.zeros(len(sig), dtype=bool)
    qh = rs.policy.quiet_hours
    if qh is not None:
        quiet = _in_window(qh.start, qh.end, sec)
    start = np.searchsorted(sig, np.arange(n + 1)).astype(np.intp)
    return Evaluation(
        rs, batch, sig, fence, d, inside, accurate, code, ttl_left, quiet, offset, start, free
    )


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch allocates an object per signal (shapely's
    points, the engine's outcomes): those allocations trigger collections that walk every
    live object, and a worker's batch keeps its signals and their contexts alive - measured
    25x slower point creation with 100k signals held. Nothing allocated here forms a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _place_pairs(rs: Ruleset, batch: SignalBatch) -> tuple[IntArray, IntArray, FloatArray]:
    """(signal, fence, metres) of every located signal within reach of a rule's place."""
    located = np.flatnonzero(~(np.isnan(batch.lat) | np.isnan(batch.lon)))
    if len(rs.tree_place) == 0 or len(located) == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp), np.empty(0)
    pts = shapely.points(batch.lon[located], batch.lat[located])
    hit, tree_i = rs.tree.query(pts)
    sig_i = located[hit]
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
    return sig[keep][order].astype(np.intp), fence[keep][order], d[keep][order]


def _in_window(start: int, end: int, sec: FloatArray) -> npt.NDArray[np.bool_]:
    if start > end:
        return np.asarray((sec >= start) | (sec < end))
    return np.asarray((sec >= start) & (sec < end))


def _offsets(rs: Ruleset, batch: SignalBatch, sig: IntArray, place: IntArray) -> FloatArray:
    """UTC offset at each pair's signal, grouped by zone so zoneinfo runs
    once per (zone, quarter hour)."""
    names = list(rs.tz_names)
    # Only real places are looked up: -1 (a location-free rule) would index the last place,
    # or fail on a rule set without places.
    zone_code = np.full(len(place), -1, dtype=np.intp)
    placed = place >= 0
    zone_code[placed] = rs.place_tz_code[place[placed]]
    unknown = np.flatnonzero(zone_code < 0)
    if len(unknown):
        codes = {name: c for c, name in enumerate(names)}
        looked_up: dict[int, int] = {}
        for k in unknown:
            s = int(sig[k])
            c = looked_up.get(s)
            if c is None:
                name = _zone_of_signal(batch, s)
                c = looked_up[s] = codes.setdefault(name, len(codes))
                if c == len(names):
                    names.append(name)
            zone_code[k] = c
    offset = np.zeros(len(sig), dtype=np.float64)
    for c in np.unique(zone_code):
        m = zone_code == c
        offset[m] = utc_offsets(names[int(c)], batch.t[sig[m]])
    return offset


def _context_holds(cond: Condition, batch: SignalBatch, sig: IntArray) -> npt.NDArray[np.bool_]:
    """The condition on the contexts of ``sig``. A rule near few of the batch's signals reads
    just theirs; one that pairs with most (a location-free rule) shares a whole-batch column."""
    if 4 * len(sig) >= len(batch):
        return condition_mask(cond, batch.context_column(cond.key))[sig]
    return condition_mask(cond, Column.build(batch.contexts(sig), cond.key))


def _zone_of_signal(batch: SignalBatch, s: int) -> str:
    """The zone at the signal's location; for a signal without one, the subscriber's."""
    fallback = batch.unique_profiles[int(batch.profile_idx[s])].timezone
    lat, lon = float(batch.lat[s]), float(batch.lon[s])
    if np.isnan(lat) or np.isnan(lon):
        return fallback if fallback and zone(fallback) is not UTC_ZONE else "UTC"
    return zone_name_at(lat, lon, fallback)


UTC_ZONE = zone(None)


def _conditions(
    rs: Ruleset,
    rule: CompiledRule,
    batch: SignalBatch,
    sig: IntArray,
    day: FloatArray,
    sec: FloatArray,
    weekday: IntArray,
    code: npt.NDArray[np.int16],
    ttl_left: FloatArray,
    m: IntArray,
) -> None:
    model = rule.model
    rc = rs.reason_code
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
    fails: list[tuple[int, npt.NDArray[np.bool_]]] = [
        (rc["day"], day_fail),
        (rc["daypart"], time_fail),
    ]
    camp = model.campaign
    if camp is not None:
        ordinal = day + _EPOCH_ORDINAL
        bad = np.zeros(len(sig), dtype=bool)
        if camp.start is not None:
            bad |= ordinal < camp.start.toordinal()
        if camp.end is not None:
            bad |= ordinal > camp.end.toordinal()
        fails.insert(0, (rc["campaign"], bad))
    who = model.who
    if who is not None:
        pidx = batch.profile_idx[sig]
        if who.topics:
            fails.append((rc["topics"], ~batch.having_topics(who.topics)[pidx]))
        for cond in rule.conditions:
            if cond.source == "attributes":
                holds = condition_mask(cond, batch.attribute_column(cond.key))
                fails.append((rc[cond.reason], ~holds[pidx]))
        if who.moments:
            fails.append((rc["moment"], ((rule.moment_mask >> batch.moment[sig]) & 1) == 0))
        if who.max_speed_mps is not None:
            # Unknown speed (NaN) passes: a missing sensor is not speeding.
            fails.append((rc["speed"], batch.speed[sig] > who.max_speed_mps))
        for cond in rule.conditions:
            if cond.source == "context":
                fails.append((rc[cond.reason], ~_context_holds(cond, batch, sig)))
    for c, bad in reversed(fails):
        code[m[bad]] = c
