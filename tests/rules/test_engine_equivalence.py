"""The engine's `decide` against its executable specification, `service.rules.reference`: the
per-signal engine as it was before it was vectorised, the statement of what `decide` means.

Seeded random rule sets (enter, dwell, inside and signal triggers, shadow rules, rule and
place limits, policy caps, gaps and quiet hours, dayparts, topics, context conditions,
variants and locales) and random dense batches (repeated subscribers, fixes inside, in the
hysteresis band and outside, imprecise and context signals, stale, out-of-order and tied
times, paused, gone and unknown subscribers) run through both, batch after batch with the
states carried over and once across a reload that drops rules: outcomes, states and the
not_matched counters must be equal.
"""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.rules import Profile, Ruleset, Signal, load_ruleset
from service.rules.engine import Presence, Sent, SubscriberState, decide
from service.rules.reference import EXPIRED, reference_decide
from tests.rules.rulekit import north_of, point, square, write_dir

# ---------------------------------------------------------------------------------------------
# Random rule sets and batches.

LAT, LON = 52.52, 13.405
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # Monday 10:00 in Berlin


def east_of(lat: float, lon: float, metres: float) -> float:
    return lon + metres / (6_371_008.8 * math.pi / 180.0 * math.cos(math.radians(lat)))


# Places close enough together that one fix is within reach of several.
SPOTS = [
    point("a", LAT, LON, category="cafe", radius_m=60),
    point("b", north_of(LAT, 70), LON, category="cafe"),
    point("c", north_of(LAT, 40), east_of(LAT, LON, 50), category="shop"),
    square("sq", north_of(LAT, -120), LON, 40, category="shop"),
    point("far", north_of(LAT, 3000), LON, category="cafe"),
]
MORE = [point("m", north_of(LAT, 20), east_of(LAT, LON, -30), category="mall", radius_m=80)]
MSG = (
    'message: {title: "{place.name} {distance_m} m", body: "{attributes.tier}/{context.weather}",'
    " ttl: 30m, locales: {de: {title: 'Bei {place.name}'}}}\n"
)


def rule_texts(rnd: random.Random) -> dict[str, str]:
    def prio() -> int:
        return rnd.choice([1, 2, 5, 5, 9])

    def limits(*kinds: str) -> str:
        got = [k for k in kinds if rnd.random() < 0.5]
        if not got:
            return ""
        parts = {
            "per_subscriber": rnd.choice(["1/day", "2/hour", "3/day"]),
            "per_place": rnd.choice(["1/day", "1/12h", "2/week"]),
        }
        return "limits: {" + ", ".join(f"{k}: {parts[k]}" for k in got) + "}\n"

    def where(files: str = "places/spots.geojson") -> str:
        flt = ""
        if "spots" in files:
            flt = rnd.choice(["", ", filter: {category: cafe}", ", filter: {category: shop}"])
        return f"where: {{places: {files}{flt}, radius_m: {rnd.choice([50, 100])}}}\n"

    texts = {
        "enter.yaml": f"priority: {prio()}\ntrigger: enter\n{where()}{MSG}"
        + limits("per_subscriber", "per_place"),
        "dwell.yaml": f"priority: {prio()}\ntrigger: dwell\ndwell: {rnd.choice(['2m', '5m'])}\n"
        f"{where()}{MSG}" + limits("per_place"),
        "inside.yaml": f"priority: {prio()}\ntrigger: inside\n"
        + where("[places/spots.geojson, places/more.geojson]")
        + 'when: {between: "09:00-23:00"}\n'
        + MSG
        + limits("per_subscriber", "per_place"),
        "lunch.yaml": f"priority: {prio()}\ntrigger: enter\n{where('places/more.geojson')}"
        "when: {dayparts: [lunch], days: [mon, tue, wed]}\n"
        "who: {topics: [food], max_speed_mps: 3, max_accuracy_m: 40}\n"
        "campaign: {start: 2026-03-01, end: 2026-03-03}\n" + MSG,
        "shadow.yaml": f"priority: {prio()}\ntrigger: {rnd.choice(['enter', 'inside'])}\n"
        f"mode: shadow\n{where()}{MSG}" + limits("per_subscriber", "per_place"),
        "page.yaml": f"priority: {prio()}\ntrigger: signal\n"
        "who: {context: {weather: {in: [rain, snow]}}, moments: [know, buy]}\n"
        'message: {title: "Rain {context.weather}", body: "{rule.id}", ttl: 10m,\n'
        '  url: "https://example.com/{attributes.tier}",\n'
        '  actions: [{action: go, title: "Go"}]}\n'
        "variants:\n  - {name: a, weight: 60}\n  - {name: b, weight: 40, message: {title: B}}\n"
        + limits("per_subscriber"),
    }
    # Every rule set has at least one place rule; most have several.
    names = sorted(texts)
    chosen = [n for n in names if rnd.random() < 0.7] or ["enter.yaml"]
    return {n: texts[n] for n in chosen}


def policy_text(rnd: random.Random) -> str:
    lim = [
        x
        for x in (
            f"per_subscriber: {rnd.choice(['2/day', '4/day', '3/hour'])}"
            if rnd.random() < 0.6
            else "",
            f"min_gap: {rnd.choice(['5m', '20m', '1h'])}" if rnd.random() < 0.5 else "",
        )
        if x
    ]
    quiet = f'quiet_hours: "{rnd.choice(["21:00-08:00", "13:00-14:00", "10:30-11:00"])}"\n'
    return (
        'dayparts: {lunch: "11:30-14:00"}\n'
        + (quiet if rnd.random() < 0.7 else "")
        + "limits: {"
        + ", ".join(lim)
        + "}\n"
        + f"stale_after: {rnd.choice(['2m', '10m'])}\n"
        + f"hysteresis_m: {rnd.choice([0, 30])}\n"
        + f"presence_timeout: {rnd.choice(['5m', '30m', '2h'])}\n"
    )


ANCHORS = [(LAT, LON), (north_of(LAT, 70), LON), (north_of(LAT, -120), LON)]
ANCHORS += [(north_of(LAT, 20), east_of(LAT, LON, -30)), (north_of(LAT, 3000), LON)]


def random_signal(rnd: random.Random, sub: str, at: datetime, n: int) -> Signal:
    weather = rnd.choice([None, "rain", "sun", "snow"])
    context = {"weather": weather} if weather else {}
    moment = rnd.choice([None, "know", "go", "buy"])
    sid: int | None = n if rnd.random() < 0.8 else None
    # Stored signals know when they arrived: some late (stale when judged at their own time).
    received = at + timedelta(minutes=rnd.choice([0.0, 1.0, 9.0, 12.0, 40.0]))
    received_at = received if rnd.random() < 0.5 else None
    if rnd.random() < 0.12:  # a context signal: no location
        return Signal(
            sub, None, None, at, moment=moment, context=context, id=sid, received_at=received_at
        )
    lat, lon = rnd.choice(ANCHORS)
    r = rnd.choice([0.0, 5.0, 30.0, 55.0, 80.0, 95.0, 110.0, 125.0, 160.0, 400.0, 5000.0])
    r *= rnd.uniform(0.8, 1.2)
    a = rnd.uniform(0, 2 * math.pi)
    lat, lon = north_of(lat, r * math.sin(a)), east_of(lat, lon, r * math.cos(a))
    return Signal(
        sub,
        lat,
        lon,
        at,
        accuracy_m=rnd.choice([None, 3.0, 10.0, 35.0, 40.0, 50.0, 60.0, 100.0, 200.0]),
        speed_mps=rnd.choice([None, 0.5, 2.0, 10.0]),
        moment=moment,
        context=context,
        id=sid,
        received_at=received_at,
    )


def random_profiles(rnd: random.Random, subs: list[str]) -> dict[str, Profile]:
    out = {}
    for s in subs:
        if rnd.random() < 0.1:
            continue  # unknown to the caller: the engine's default profile
        out[s] = Profile(
            s,
            timezone=rnd.choice([None, "Europe/Berlin", "America/New_York"]),
            locale=rnd.choice([None, "de", "de-AT", "en"]),
            topics=frozenset(rnd.sample(["food", "shoes", "news"], rnd.randint(0, 2))),
            attributes={"tier": rnd.choice(["gold", "silver"])} if rnd.random() < 0.7 else {},
            paused=rnd.random() < 0.08,
            gone=rnd.random() < 0.05,
        )
    return out


def random_batches(
    rnd: random.Random, subs: list[str]
) -> list[tuple[list[Signal], datetime | None, bool]]:
    """Batches of signals with their `now` and `arrival_order`; per subscriber a walk in time
    (minute steps, ties, a few steps back, long gaps across quiet hours and days)."""
    clock = {s: T0 + timedelta(minutes=rnd.uniform(0, 600)) for s in subs}
    batches = []
    n = 0
    for _ in range(rnd.randint(2, 5)):
        signals = []
        for _ in range(rnd.choice([1, 5, 40, 150, 400])):
            s = rnd.choice(subs)
            step = rnd.choice([0.0, 0.5, 1.0, 1.0, 2.0, 3.0, 6.0, 30.0, 200.0, -2.0])
            clock[s] += timedelta(minutes=step, microseconds=rnd.choice([0, 0, 1, 999_999]))
            signals.append(random_signal(rnd, s, clock[s], n))
            n += 1
        if rnd.random() < 0.4:
            rnd.shuffle(signals)
        latest = max(s.at for s in signals)
        now = None if rnd.random() < 0.25 else latest + timedelta(minutes=rnd.uniform(-5, 4))
        if now is not None and rnd.random() < 0.3:
            # Exactly at the staleness boundary for some signal.
            pick = rnd.choice(signals).at
            now = (
                pick + timedelta(minutes=2) if rnd.random() < 0.5 else pick + timedelta(minutes=10)
            )
        batches.append((signals, now, rnd.random() < 0.3))
    return batches


def check_batches(
    rs: Ruleset,
    batches: list[tuple[list[Signal], datetime | None, bool]],
    profiles: dict[str, Profile],
    got_states: dict[str, SubscriberState],
    want_states: dict[str, SubscriberState],
) -> int:
    decided = 0
    for b, (signals, now, arrival) in enumerate(batches):
        got_tally: Counter[tuple[str, str]] = Counter()
        want_tally: Counter[tuple[str, str]] = Counter()
        got = decide(rs, signals, profiles, got_states, now, arrival, not_matched=got_tally)
        want = reference_decide(
            rs, signals, profiles, want_states, now, arrival, not_matched=want_tally
        )
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"batch {b}, outcome {i}"
        assert got_states == want_states, f"batch {b}"
        assert got_tally == want_tally
        decided += sum(o.decision is not None for o in want)
    return decided


@pytest.mark.parametrize("seed", range(40))
def test_decide_equals_the_reference(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    rules = rule_texts(rnd)
    places = {"spots": SPOTS, "more": MORE}
    rs = load_ruleset(write_dir(tmp_path / "rules", rules, policy_text(rnd), places))
    subs = [f"s{i}" for i in range(rnd.choice([1, 3, 12, 40]))]
    profiles = random_profiles(rnd, subs)
    got: dict[str, SubscriberState] = {}
    want: dict[str, SubscriberState] = {}
    check_batches(rs, random_batches(rnd, subs), profiles, got, want)
    # A reload that drops rules (and so fences the states are inside of) and keeps going.
    fewer = dict(list(rules.items())[: max(1, len(rules) // 2)])
    rs2 = load_ruleset(write_dir(tmp_path / "rules2", fewer, policy_text(rnd), places))
    check_batches(rs2, random_batches(rnd, subs), profiles, got, want)


def test_the_random_batches_exercise_every_path(tmp_path: Path) -> None:
    """The generator is worth its name: over the seeds above, every trigger decides, every
    suppression reason occurs, shadow rules fire, presence enters and leaves, signals arrive
    stale and out of order."""
    seen: Counter[str] = Counter()
    expired_before = EXPIRED["presence"]
    for seed in range(40):
        rnd = random.Random(seed)
        rules = rule_texts(rnd)
        places = {"spots": SPOTS, "more": MORE}
        rs = load_ruleset(write_dir(tmp_path / f"r{seed}", rules, policy_text(rnd), places))
        subs = [f"s{i}" for i in range(rnd.choice([1, 3, 12, 40]))]
        profiles = random_profiles(rnd, subs)
        states: dict[str, SubscriberState] = {}
        for signals, now, arrival in random_batches(rnd, subs):
            for o in reference_decide(rs, signals, profiles, states, now, arrival):
                seen["applied" if o.applied else "out_of_order"] += 1
                seen["stale"] += o.stale
                seen["entered"] += bool(o.entered)
                seen["left"] += bool(o.left)
                seen["silent"] += bool(o.silent)
                seen["shadow"] += bool(o.shadow)
                for s in o.suppressed:
                    seen[s.reason] += 1
                if o.decision is not None:
                    seen["decided:" + rs.rule_by_id[o.decision.rule_id].trigger] += 1
    wanted = {"applied", "out_of_order", "stale", "entered", "left", "shadow", "silent"}
    wanted |= {"gone", "paused", "quiet_hours", "global_cap", "min_gap", "rule_cap"}
    wanted |= {"place_cooldown"} | {f"decided:{t}" for t in ("enter", "dwell", "inside", "signal")}
    assert wanted <= {k for k, v in seen.items() if v}, seen
    assert EXPIRED["presence"] > expired_before


def test_states_given_by_the_caller_are_used_as_given(tmp_path: Path) -> None:
    """States loaded from the store (presence inside, history of earlier sends, a last signal
    later than some of the batch) decide the same as the reference."""
    rnd = random.Random(99)
    rules = rule_texts(random.Random(3))
    rs = load_ruleset(
        write_dir(tmp_path / "rules", rules, policy_text(rnd), {"spots": SPOTS, "more": MORE})
    )
    subs = [f"s{i}" for i in range(20)]
    profiles = random_profiles(rnd, subs)
    states: dict[str, SubscriberState] = {}
    for s in subs[:15]:
        st = states[s] = SubscriberState(
            s, last_signal_at=T0 + timedelta(minutes=rnd.randint(0, 300))
        )
        for rid, pid in rnd.sample(sorted(rs.fence_by_ids), min(3, len(rs.fence_by_ids))):
            st.presence[(rid, pid)] = Presence(T0, dwell_fired=rnd.random() < 0.5)
        st.presence[("gone-rule", "a")] = Presence(T0)
        st.history = [
            Sent(r.id, "a", T0 + timedelta(minutes=m)) for r in rs.rules for m in (0, 200)
        ]
    batches = random_batches(rnd, subs)
    check_batches(rs, batches, profiles, copy.deepcopy(states), copy.deepcopy(states))

    # A batch with no pair at all: far-away fixes, some too imprecise to leave anything, a
    # minute after each subscriber's last signal (within any presence_timeout).
    def next_minute(s: str) -> datetime:
        st = states.get(s)
        last = st.last_signal_at if st is not None else None
        return (last or T0) + timedelta(minutes=1)

    far = [
        Signal(s, north_of(LAT, 9000), LON, next_minute(s), accuracy_m=acc)
        for i, s in enumerate(subs)
        for acc in (5000.0, None if i % 2 else 5000.0)
    ]
    got, want = copy.deepcopy(states), copy.deepcopy(states)
    check_batches(rs, [(far, None, False)], profiles, got, want)
    assert any(st.presence for st in got.values())
