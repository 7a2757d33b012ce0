"""Presence, triggers, suppression reasons and variants of the pure engine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from service.rules import Profile, Ruleset, Signal
from service.rules.engine import Outcome, SubscriberState, decide, rule_variant
from tests.rules.rulekit import LAT, LON, PLACES, POLICY, T0, north_of, point, rule, walk


def sent(outcomes: list[Outcome]) -> list[int]:
    return [i for i, o in enumerate(outcomes) if o.decision is not None]


def test_jitter_does_not_flap_and_enter_fires_once(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": rule()}, places=PLACES)
    # In at 90 m, then jitter across the radius but inside radius + hysteresis.
    steps = [(300, 5), (150, 5), (90, 5), (105, 5), (95, 5), (125, 5), (99, 5), (129, 5)]
    out = walk(rs, steps)
    assert sent(out) == [2]
    assert [len(o.entered) for o in out] == [0, 0, 1, 0, 0, 0, 0, 0]
    assert all(not o.left for o in out)
    # Leaving needs > 130 m; coming back is a new visit with a new key.
    out2 = walk(rs, [*steps, (140, 5), (50, 5)])
    assert [i for i, o in enumerate(out2) if o.left] == [8]
    assert [i for i, o in enumerate(out2) if o.entered] == [2, 9]
    assert out2[2].decision is not None and out2[9].decision is not None
    assert out2[2].decision.dedupe_key != out2[9].decision.dedupe_key


def test_inaccurate_fixes_neither_enter_nor_leave(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": rule()}, places=PLACES)
    # accuracy 150 m > radius 100 m (no max_accuracy_m set): ignored both ways.
    out = walk(rs, [(10, 150), (10, 20), (1000, 150), (20, 20), (1000, 20), (10, 20)])
    assert [len(o.entered) for o in out] == [0, 1, 0, 0, 0, 1]
    assert [len(o.left) for o in out] == [0, 0, 0, 0, 1, 0]


def test_max_accuracy_m_replaces_radius_as_gate(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": rule(extra="who: {max_accuracy_m: 20}\n")}, places=PLACES)
    out = walk(rs, [(10, 50), (10, 15)])
    assert sent(out) == [1]


def test_dwell_fires_once_after_the_dwell_time(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": rule("dwell")}, places=PLACES)
    out = walk(rs, [(10, 5)] * 8)  # one per minute, inside all along
    assert sent(out) == [3]  # at +3 min


def test_inside_trigger_is_eligible_on_every_signal(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": rule("inside")}, places=PLACES)
    out = walk(rs, [(10, 5)] * 3)
    assert sent(out) == [0, 1, 2]
    keys = {o.decision.dedupe_key for o in out if o.decision}
    assert len(keys) == 3


def test_out_of_order_and_stale_trigger_nothing(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": rule()}, places=PLACES)
    prof = Profile("s")
    state: dict[str, SubscriberState] = {}
    outside = Signal("s", north_of(LAT, 500), LON, T0, accuracy_m=5)
    decide(rs, [outside], {"s": prof}, state, now=T0)
    late = Signal("s", LAT, LON, T0 - timedelta(minutes=1), accuracy_m=5)
    out = decide(rs, [late], {"s": prof}, state, now=T0)
    assert not out[0].applied and out[0].decision is None and not state["s"].presence
    stale = Signal("s", LAT, LON, T0 + timedelta(minutes=1), accuracy_m=5)
    out = decide(rs, [stale], {"s": prof}, state, now=T0 + timedelta(minutes=20))
    assert out[0].stale and out[0].decision is None
    assert ("r", "spot") in state["s"].presence  # presence did update
    fresh = Signal("s", LAT, LON, T0 + timedelta(minutes=2), accuracy_m=5)
    out = decide(rs, [fresh], {"s": prof}, state, now=T0 + timedelta(minutes=2))
    assert out[0].decision is None  # the enter happened on the stale signal


def reasons(out: list[Outcome]) -> list[str]:
    return [s.reason for o in out for s in o.suppressed]


def in_out(n: int) -> list[tuple[float, float | None]]:
    return [(10, 5), (500, 5)] * n


def test_each_suppression_reason(make_rules: Callable[..., Ruleset]) -> None:
    base = {"r.yaml": rule()}
    hour = timedelta(hours=1)
    rs = make_rules(base, policy=POLICY + 'quiet_hours: "10:00-12:00"\n', places=PLACES)
    assert reasons(walk(rs, in_out(1))) == ["quiet_hours"]  # 11:00 Berlin
    rs = make_rules(
        base, policy=POLICY.replace("limits: {}", "limits: {per_subscriber: 2/day}"), places=PLACES
    )
    out = walk(rs, in_out(3), gap=hour)
    assert sent(out) == [0, 2] and reasons(out) == ["global_cap"]
    rs = make_rules(
        base, policy=POLICY.replace("limits: {}", "limits: {min_gap: 3h}"), places=PLACES
    )
    out = walk(rs, in_out(3), gap=hour)
    assert sent(out) == [0, 4] and reasons(out) == ["min_gap"]
    rs = make_rules({"r.yaml": rule(extra="limits: {per_subscriber: 1/day}\n")}, places=PLACES)
    assert reasons(walk(rs, in_out(2), gap=hour)) == ["rule_cap"]
    rs = make_rules({"r.yaml": rule(extra="limits: {per_place: 1/week}\n")}, places=PLACES)
    out = walk(rs, in_out(2), gap=timedelta(days=2))
    assert sent(out) == [0] and reasons(out) == ["place_cooldown"]
    rs = make_rules(base, places=PLACES)
    assert reasons(walk(rs, in_out(1), profile=Profile("s", paused=True))) == ["paused"]
    assert reasons(walk(rs, in_out(1), profile=Profile("s", gone=True))) == ["gone"]


def test_suppressed_rule_lets_lower_priority_through(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules(
        {
            "high.yaml": rule(priority=10, extra="limits: {per_subscriber: 1/day}\n"),
            "low.yaml": rule(priority=1, radius=200),
        },
        places=PLACES,
    )
    out = walk(rs, [(10, 5), (600, 5), (10, 5)], gap=timedelta(hours=1))
    assert [(o.decision.rule_id if o.decision else None) for o in out] == ["high", None, "low"]
    assert [(s.rule_id, s.reason) for s in out[2].suppressed] == [("high", "rule_cap")]


def test_priority_then_nearest_then_id(make_rules: Callable[..., Ruleset]) -> None:
    places = {"spots": [point("a", LAT, LON), point("b", north_of(LAT, 40), LON)]}
    rs = make_rules({"z.yaml": rule(priority=5), "y.yaml": rule(priority=5)}, places=places)
    out = walk(rs, [(35, 5)])  # 35 m from a, 5 m from b
    d = out[0].decision
    assert d is not None and (d.rule_id, d.place_id) == ("y", "b")


def test_ttl_is_capped_at_the_end_of_the_daypart(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"r.yaml": rule(extra='when: {between: "10:00-11:20"}\n')}, places=PLACES)
    out = walk(rs, [(10, 5)])  # 11:00 Berlin: 20 minutes left, rule ttl 1h
    assert out[0].decision is not None and out[0].decision.ttl_s == 20 * 60


def test_rendering_uses_place_and_attributes(make_rules: Callable[..., Ruleset]) -> None:
    extra = 'message: {title: "Hi {attributes.tier} at {place.name}", body: "{distance_m} m"}\n'
    rs = make_rules({"r.yaml": rule().split("message:")[0] + extra}, places=PLACES)
    out = walk(rs, [(42, 5)], profile=Profile("s", attributes={"tier": "gold"}))
    d = out[0].decision
    assert d is not None and d.payload == {"title": "Hi gold at Spot", "body": "42 m"}


def test_variant_split_is_stable_and_within_3_points(make_rules: Callable[..., Ruleset]) -> None:
    extra = "variants:\n  - {name: a, weight: 70}\n  - {name: b, weight: 30, message: {title: B}}\n"
    rs = make_rules({"r.yaml": rule(extra=extra)}, places=PLACES)
    r = rs.rules[0]
    counts = Counter(rule_variant(f"sub-{i}", r).name for i in range(10_000))
    assert abs(counts["a"] / 10_000 - 0.70) < 0.03
    assert abs(counts["b"] / 10_000 - 0.30) < 0.03
    assert all(
        rule_variant(f"sub-{i}", r).name == rule_variant(f"sub-{i}", r).name for i in range(100)
    )
    out = walk(rs, [(10, 5)], profile=Profile("sub-1"))
    d = out[0].decision
    assert d is not None and d.variant == rule_variant("sub-1", r).name
    assert (d.payload["title"] == "B") == (d.variant == "b")
