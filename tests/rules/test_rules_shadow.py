"""Shadow rules (mode: shadow) in the pure engine: evaluated and counted, never sent, never
counted toward the live rules' caps, paced by their own limits."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from service.cli.rules import main
from service.rules import Profile, Ruleset, Signal, simulate
from service.rules.engine import SubscriberState
from service.rules.replay import replay
from tests.rules.rulekit import LAT, LON, PLACES, POLICY, T0, north_of, rule, walk, write_dir

HOUR = timedelta(hours=1)
SHADOW = "mode: shadow\n"


def shadowed(out: list) -> list[list[str]]:  # type: ignore[type-arg]
    return [[m.rule.id for m in o.shadow] for o in out]


def decided(out: list) -> list[str | None]:  # type: ignore[type-arg]
    return [o.decision.rule_id if o.decision else None for o in out]


def test_a_shadow_rule_is_counted_and_never_sent(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"s.yaml": rule(extra=SHADOW)}, places=PLACES)
    state: dict[str, SubscriberState] = {}
    # In, out, in again: two visits, two would-be sends, nothing decided.
    out = walk(rs, [(10, 5), (500, 5), (10, 5)], state=state)
    assert decided(out) == [None, None, None]
    assert shadowed(out) == [["s"], [], ["s"]]
    assert state["s"].history == []  # the live caps' history never sees it
    # Its own would-be sends (as far back as limits look: here no limit, so the last one).
    assert [h.rule_id for h in state["s"].shadow_history] == ["s"]
    # Presence is kept as for a live rule, so enter fires once per visit.
    assert [o.entered for o in out] == [[("s", "spot")], [], [("s", "spot")]]


def test_a_shadow_rule_does_not_stop_a_live_rule(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules(
        {
            "shadow.yaml": rule(priority=10, extra=SHADOW),
            "live.yaml": rule(priority=1),
        },
        places=PLACES,
    )
    out = walk(rs, [(10, 5)])
    assert decided(out) == ["live"] and shadowed(out) == [["shadow"]]
    # A shadow rule ranked below the live winner would have been outranked: not counted.
    rs = make_rules(
        {
            "shadow.yaml": rule(priority=1, extra=SHADOW),
            "live.yaml": rule(priority=10),
        },
        places=PLACES,
    )
    out = walk(rs, [(10, 5)])
    assert decided(out) == ["live"] and shadowed(out) == [[]]


def test_shadow_sends_never_count_toward_caps(make_rules: Callable[..., Ruleset]) -> None:
    policy = POLICY.replace("limits: {}", "limits: {per_subscriber: 1/day}")
    rs = make_rules(
        {
            "shadow.yaml": rule("inside", priority=10, extra=SHADOW),
            "live.yaml": rule(priority=1),
        },
        policy=policy,
        places=PLACES,
    )
    state: dict[str, SubscriberState] = {}
    # In at 11:00 Berlin: the shadow rule would send, and the live one still sends the day's
    # one push (the shadow's would-be send is no push of the day).
    out = walk(rs, [(10, 5), (10, 5)], gap=timedelta(minutes=30), state=state)
    assert decided(out) == ["live", None]
    assert shadowed(out) == [["shadow"], []]
    # At 11:30 the shadow rule is capped, as it would be if it were live.
    assert [(s.rule_id, s.reason) for s in out[1].suppressed] == [("shadow", "global_cap")]
    assert [h.rule_id for h in state["s"].history] == ["live"]


def test_a_shadow_rule_sees_the_live_rules_caps(make_rules: Callable[..., Ruleset]) -> None:
    policy = POLICY.replace("limits: {}", "limits: {per_subscriber: 1/day}")
    rs = make_rules(
        {
            "shadow.yaml": rule(
                "inside", priority=10, extra=SHADOW + "when: {between: '12:00-13:00'}\n"
            ),
            "live.yaml": rule(priority=1),
        },
        policy=policy,
        places=PLACES,
    )
    # 11:00: the live rule sends; 12:10, the shadow rule's window: the day's push is gone.
    out = walk(rs, [(10, 5), (10, 5)], gap=timedelta(minutes=70))
    assert decided(out) == ["live", None]
    assert shadowed(out) == [[], []]
    assert [(s.rule_id, s.reason) for s in out[1].suppressed] == [("shadow", "global_cap")]


def test_a_shadow_rule_is_paced_by_its_own_limits(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules(
        {"s.yaml": rule("inside", extra=SHADOW + "limits: {per_subscriber: 2/day}\n")},
        places=PLACES,
    )
    out = walk(rs, [(10, 5)] * 4, gap=HOUR)
    assert shadowed(out) == [["s"], ["s"], [], []]
    assert [s.reason for o in out for s in o.suppressed] == ["rule_cap", "rule_cap"]


def test_simulate_names_a_shadow_rule_that_would_have_sent(
    make_rules: Callable[..., Ruleset],
) -> None:
    rs = make_rules(
        {"shadow.yaml": rule(priority=10, extra=SHADOW), "live.yaml": rule(priority=1)},
        places=PLACES,
    )
    sig = Signal("s", north_of(LAT, 10), LON, T0, accuracy_m=5)
    result = simulate(rs, sig, Profile("s"), T0)
    assert result["decision"]["rule"] == "live"
    assert result["rules"] == [
        {"rule": "live", "matched": True, "reason": None},
        {"rule": "shadow", "matched": True, "reason": "shadow"},
    ]


def test_replay_shows_what_a_shadow_rule_would_have_sent(tmp_path: Path) -> None:
    rules = write_dir(
        tmp_path / "rules",
        {"shadow.yaml": rule(priority=10, extra=SHADOW), "live.yaml": rule(priority=1)},
        places=PLACES,
    )
    trace = tmp_path / "walk.csv"
    trace.write_text(
        "lat,lon,time,accuracy_m\n"
        f"{north_of(LAT, 500)},{LON},2026-03-02T10:00:00Z,5\n"
        f"{north_of(LAT, 10)},{LON},2026-03-02T10:01:00Z,5\n"
    )
    report = replay(str(rules), str(trace), None)
    assert [r["shadow"] for r in report["rows"]] == [[], [{"rule": "shadow", "place": "spot"}]]
    assert report["summary"]["shadow_sent"] == 1 and report["summary"]["sent"] == 1
    out = io.StringIO()
    assert main(["replay", str(trace), "--rules", str(rules)], out=out) == 0
    lines = out.getvalue().splitlines()
    assert "SEND live @ spot" in lines[1] and "[shadow shadow@spot]" in lines[1]
    assert lines[-1] == "2 signals, 1 pushes, 1 shadow (not sent), suppressed: none"
