"""Throughput of the rules evaluation core, with an in-run naive baseline.

100k signals against 20k places (10k points with a radius, 10k polygons of
5-12 vertices) in 50 rules, over greater Berlin. The core (service.rules.core
.evaluate: one bulk STRtree query, exact distances, time and audience masks)
is timed on the whole batch; the naive baseline loops over every place for
each signal of a subsample and is scaled to the same count.

    python benchmarks/evaluate.py [--signals 100000] [--naive-sample 200]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from service.rules import Profile, Signal, SignalBatch, evaluate, load_ruleset
from service.rules.engine import Outcome, SubscriberState, decide
from service.rules.places import EARTH_RADIUS_M
from service.rules.whynot import not_matched_counts

LAT0, LON0 = 52.52, 13.405
SPAN_M = 20_000.0  # 40 km x 40 km
M_LAT = 6_371_008.8 * math.pi / 180


def haversine_scalar(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def offset(dx: float, dy: float) -> tuple[float, float]:
    return LAT0 + dy / M_LAT, LON0 + dx / (M_LAT * math.cos(math.radians(LAT0)))


CONDITIONS = [
    "context: {weather: {in: [rain, snow]}}",
    "context: {battery_pct: {gt: 20}}",
    "attributes: {tier: {in: [gold, silver]}}",
    "attributes: {visits: {gte: 3}}",
    "context: {page_category: {exists: true}}",
]


def build(root: Path, rnd: random.Random, conditions: bool = False) -> None:
    (root / "places").mkdir(parents=True)
    (root / "policy.yaml").write_text(
        'dayparts: {lunch: "11:30-14:00"}\nquiet_hours: "22:00-07:00"\n'
        "limits: {per_subscriber: 3/day, min_gap: 1h}\nhysteresis_m: 30\n"
    )
    for f in range(10):  # 10 files of 1k points and 1k polygons each
        feats = []
        for i in range(1000):
            lat, lon = offset(rnd.uniform(-SPAN_M, SPAN_M), rnd.uniform(-SPAN_M, SPAN_M))
            feats.append(
                {
                    "type": "Feature",
                    "properties": {
                        "id": f"p{f}-{i}",
                        "name": f"Point {f}-{i}",
                        "category": f"c{i % 5}",
                        "radius_m": rnd.choice([50, 100, 150, 300]),
                    },
                    "geometry": {"type": "Point", "coordinates": [lon, lat]},
                }
            )
        for i in range(1000):
            cx, cy = rnd.uniform(-SPAN_M, SPAN_M), rnd.uniform(-SPAN_M, SPAN_M)
            n = rnd.randint(5, 12)
            # One vertex per sector keeps the star-shaped polygon simple.
            angles = [2 * math.pi * (k + rnd.uniform(0, 0.8)) / n for k in range(n)]
            ring = []
            for a in angles:
                r = rnd.uniform(40, 150)
                lat, lon = offset(cx + r * math.cos(a), cy + r * math.sin(a))
                ring.append([lon, lat])
            ring.append(ring[0])
            feats.append(
                {
                    "type": "Feature",
                    "properties": {
                        "id": f"g{f}-{i}",
                        "name": f"Area {f}-{i}",
                        "category": f"c{i % 5}",
                    },
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            )
        (root / "places" / f"set{f}.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": feats})
        )
    for r in range(50):  # each rule: one file, one category (about 400 places)
        when = "\nwhen: {dayparts: [lunch], days: [mon, tue, wed, thu, fri]}" if r % 3 == 0 else ""
        who = f"\nwho: {{topics: [t{r % 4}], max_speed_mps: 5}}" if r % 2 == 0 else ""
        if conditions and r % 5 == 0:  # 10 of the 50 rules carry a condition
            cond = CONDITIONS[(r // 5) % len(CONDITIONS)]
            who = f"\nwho: {{{cond}}}" if not who else who[:-1] + f", {cond}}}"
        (root / f"rule{r:02d}.yaml").write_text(
            f"priority: {r}\nwhere: {{places: places/set{r % 10}.geojson, "
            f"filter: {{category: c{r // 10}}}, radius_m: 100}}{when}{who}\n"
            f'message: {{title: "Near {{place.name}}", body: "{{distance_m}} m"}}\n'
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--signals", type=int, default=100_000)
    ap.add_argument("--naive-sample", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rnd = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rules"
        build(root, rnd)
        t = time.perf_counter()
        rs = load_ruleset(root)
        load_s = time.perf_counter() - t
    n = args.signals
    nprof = 10_000
    profiles = [
        Profile(f"s{i}", timezone="Europe/Berlin", topics=frozenset({f"t{i % 4}"}))
        for i in range(nprof)
    ]
    gen = np.random.default_rng(7)
    dx, dy = gen.uniform(-SPAN_M, SPAN_M, n), gen.uniform(-SPAN_M, SPAN_M, n)
    lat = LAT0 + dy / M_LAT
    lon = LON0 + dx / (M_LAT * math.cos(math.radians(LAT0)))
    t0 = 1772449200.0  # Monday 2026-03-02 12:00 CET
    batch = SignalBatch(
        signals=[],
        profiles=[],
        lat=lat,
        lon=lon,
        t=t0 + gen.uniform(0, 3600, n),
        accuracy=gen.uniform(3, 60, n),
        speed=gen.uniform(0, 4, n),
        moment=gen.integers(0, 5, n),
        profile_idx=gen.integers(0, nprof, n),
        unique_profiles=profiles,
    )
    evaluate(rs, batch)  # warm-up
    best = math.inf
    for _ in range(args.repeat):
        t = time.perf_counter()
        ev = evaluate(rs, batch)
        best = min(best, time.perf_counter() - t)
    core_rate = n / best
    matched = int(ev.matched.sum())
    # Naive: every signal against every fence of every rule, exact distance.
    fences = [
        (int(rs.fence_place[f]), float(rs.fence_radius[f])) for f in range(len(rs.fence_rule))
    ]
    places = rs.places
    sample = range(args.naive_sample)
    t = time.perf_counter()
    naive_hits = 0
    for i in sample:
        la, lo = float(lat[i]), float(lon[i])
        for p, radius in fences:
            place = places[p]
            if place.kind == "point":
                d = haversine_scalar(la, lo, place.lat, place.lon)
            else:
                k = M_LAT * math.cos(math.radians(place.lat0))
                pt = shapely.Point((lo - place.lon0) * k, (la - place.lat0) * M_LAT)
                d = float(place.shape.distance(pt))  # type: ignore[union-attr]
            naive_hits += d <= radius
    naive_rate = len(sample) / (time.perf_counter() - t)
    print(
        f"rule set: {len(rs.rules)} rules, {len(rs.places)} places, "
        f"{len(rs.fence_rule)} fences, loaded in {load_s:.2f} s"
    )
    print(
        f"core:  {n} signals in {best * 1000:.1f} ms -> {core_rate:,.0f} signals/s "
        f"({len(ev.sig)} pairs within reach, {matched} matches)"
    )
    print(
        f"naive: {len(sample)} signals x {len(fences)} fences -> {naive_rate:,.1f} signals/s "
        f"(scaled to {n}: {n / naive_rate:.0f} s)"
    )
    print(f"ratio: {core_rate / naive_rate:,.0f}x")
    with_conditions(args, batch, profiles, core_rate, naive_rate, gen)
    why_not(args, rs, batch)
    dense(rs, n, profiles, core_rate, naive_rate, gen)


def with_conditions(
    args: argparse.Namespace,
    batch: SignalBatch,
    profiles: list[Profile],
    core_rate: float,
    naive_rate: float,
    gen: np.random.Generator,
) -> None:
    """The same batch against the same rules of which 10 carry an attribute or context
    condition; the signals carry contexts and the subscribers attributes."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rules"
        build(root, random.Random(7), conditions=True)
        rs = load_ruleset(root)
    n = len(batch)
    weather = np.array(["rain", "snow", "sun", "cloud"])[gen.integers(0, 4, n)]
    battery = gen.integers(0, 100, n)
    contexts = [
        {"weather": str(w), "battery_pct": int(b)} | ({"page_category": "boots"} if b % 3 else {})
        for w, b in zip(weather, battery, strict=True)
    ]
    signals = [Signal(f"s{i}", None, None, _T0, context=c) for i, c in enumerate(contexts)]
    tiers = ["gold", "silver", "bronze"]
    people = [
        Profile(
            p.id, p.timezone, topics=p.topics, attributes={"tier": tiers[i % 3], "visits": i % 7}
        )
        for i, p in enumerate(profiles)
    ]
    cbatch = SignalBatch(
        signals=signals,
        profiles=[],
        lat=batch.lat,
        lon=batch.lon,
        t=batch.t,
        accuracy=batch.accuracy,
        speed=batch.speed,
        moment=batch.moment,
        profile_idx=batch.profile_idx,
        unique_profiles=people,
    )
    best = math.inf
    for _ in range(args.repeat):
        # Columns and topic memberships built each run.
        fresh = SignalBatch(**{**cbatch.__dict__, "_columns": {}, "_topics": []})
        t = time.perf_counter()
        ev = evaluate(rs, fresh)
        best = min(best, time.perf_counter() - t)
    rate = n / best
    print(
        f"core with 10 context/attribute conditions: {rate:,.0f} signals/s "
        f"({int(ev.matched.sum())} matches; {rate / core_rate:.2f}x the plain core, "
        f"{rate / naive_rate:,.0f}x the naive baseline)"
    )


_T0 = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)


def why_not(args: argparse.Namespace, rs: Any, batch: SignalBatch) -> None:
    """The worker's not_matched counters (whynot.not_matched_counts: one sort of the batch's
    pairs) on the same batch: timed alone, and evaluate with and without the counting,
    interleaved in the same run."""
    ev = evaluate(rs, batch)
    plain = counted = count_only = math.inf
    for _ in range(args.repeat):
        t = time.perf_counter()
        evaluate(rs, batch)
        plain = min(plain, time.perf_counter() - t)
        t = time.perf_counter()
        counts = not_matched_counts(evaluate(rs, batch))
        counted = min(counted, time.perf_counter() - t)
        t = time.perf_counter()
        not_matched_counts(ev)
        count_only = min(count_only, time.perf_counter() - t)
    n = len(batch)
    print(
        f"why not: counting {len(ev.sig)} pairs into {len(counts)} (rule, reason) counts "
        f"({sum(counts.values())} signal-rule verdicts) takes {count_only * 1000:.1f} ms, "
        f"{count_only / plain:.1%} of evaluate; evaluate with the counting "
        f"{n / counted:,.0f} signals/s, without {n / plain:,.0f} signals/s"
    )


def dense(
    rs: Any,
    n: int,
    profiles: list[Profile],
    core_rate: float,
    naive_rate: float,
    gen: np.random.Generator,
) -> None:
    """decide() on one dense batch: a share of the signals stands on a place, so decisions,
    presence and caps all run; the engine must stay linear in the batch size (it is timed
    on the whole batch and on its first tenth)."""
    t0 = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # Monday 12:00 in Berlin
    used = sorted({int(p) for p in rs.fence_place})
    on_place = gen.random(n) < 0.4
    pick = gen.integers(0, len(used), n)
    dx, dy = gen.uniform(-SPAN_M, SPAN_M, n), gen.uniform(-SPAN_M, SPAN_M, n)
    signals = []
    for i in range(n):
        if on_place[i]:
            place = rs.places[used[int(pick[i])]]
            la, lo = place.lat, place.lon
        else:
            la, lo = offset(float(dx[i]), float(dy[i]))
        signals.append(
            Signal(
                subscription_id=f"d{i % (n // 2)}",
                lat=la,
                lon=lo,
                at=t0 + timedelta(seconds=i * 3600 / n),
                accuracy_m=10.0,
                speed_mps=1.0,
                id=i,
            )
        )
    # Two signals a subscriber: the caps let most who stand on a place get their push.
    profiles = [
        Profile(f"d{i}", timezone="Europe/Berlin", topics=frozenset({f"t{i % 4}"}))
        for i in range(n // 2)
    ]
    by_id = {p.id: p for p in profiles}
    best, decided, best_counted = math.inf, 0, math.inf
    outcomes: list[Outcome] | None = None
    counted: list[Outcome] | None = None
    for _ in range(3):
        # The last run's outcomes are freed here, outside the timings.
        outcomes = counted = None
        states: dict[str, SubscriberState] = {}
        t = time.perf_counter()
        outcomes = decide(rs, signals, by_id, states, t0 + timedelta(hours=1))
        best = min(best, time.perf_counter() - t)
        decided = sum(o.decision is not None for o in outcomes)
        outcomes = None  # both timings with the same objects alive (the collector walks them)
        # As the worker calls it: with the not_matched counters.
        states = {}
        tally: Counter[tuple[str, str]] = Counter()
        t = time.perf_counter()
        counted = decide(rs, signals, by_id, states, t0 + timedelta(hours=1), not_matched=tally)
        best_counted = min(best_counted, time.perf_counter() - t)
        assert len(counted) == n  # kept until here: its freeing is not timed either
    rate = n / best
    tenth = signals[: n // 10]
    best_tenth = math.inf
    for _ in range(3):
        outcomes = None
        t = time.perf_counter()
        outcomes = decide(rs, tenth, by_id, {}, t0 + timedelta(hours=1))
        best_tenth = min(best_tenth, time.perf_counter() - t)
    print(
        f"decide (dense): {n} signals, {len(rs.fence_rule)} fences, "
        f"{int(on_place.sum())} on a place, {decided} pushes decided "
        f"({decided / n:.0%}) in {best * 1000:.0f} ms -> {rate:,.0f} signals/s "
        f"({rate / core_rate:.2f}x the core's evaluate alone, {rate / naive_rate:,.0f}x the "
        f"naive baseline); with the not_matched counters {best_counted * 1000:.0f} ms -> "
        f"{n / best_counted:,.0f} signals/s ({best_counted / best - 1:+.1%}); "
        f"the first tenth alone {len(tenth) / best_tenth:,.0f} signals/s"
    )


if __name__ == "__main__":
    main()
