"""A rule set of location-free rules only, with no places at all: every pure step of the
engine (evaluation, presence, decisions, the simulator, why-not, preview, replay) works
on empty place arrays, for signals with and without a location."""

from __future__ import annotations

import io
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.cli.rules import main
from service.rules import Profile, Ruleset, Signal, load_ruleset
from service.rules.backtest import Backtest
from service.rules.core import evaluate
from service.rules.engine import SubscriberState, decide, simulate
from service.rules.preview import render_for
from service.rules.signals import SignalBatch
from service.rules.whynot import not_matched_counts, why_not
from tests.rules.rulekit import BERLIN, NEW_YORK, POLICY

T0 = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # a Monday

ANYWHERE = """\
description: Fires for every signal, wherever it comes from
priority: 1
trigger: signal
message:
  title: "Hello"
  body: "From {rule.id}"
  ttl: 10m
"""

EVENINGS = """\
priority: 2
trigger: signal
when: {between: "18:00-23:00"}
who:
  context: {page: {eq: boots}}
message: {title: "Boots?", ttl: 10m}
"""


def no_places_dir(root: Path, rules: dict[str, str]) -> Path:
    """policy.yaml and the rule files; no places/ folder at all."""
    root.mkdir(parents=True)
    (root / "policy.yaml").write_text(POLICY)
    for name, text in rules.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def rs(tmp_path: Path) -> Ruleset:
    ruleset = load_ruleset(
        no_places_dir(tmp_path / "rules", {"anywhere.yaml": ANYWHERE, "evenings.yaml": EVENINGS})
    )
    assert ruleset.places == [] and ruleset.warnings == []
    return ruleset


PROFILES = {
    "located": Profile("located", timezone="Europe/Berlin"),
    "nowhere": Profile("nowhere", timezone="America/New_York"),
}


def signals() -> list[Signal]:
    return [
        Signal("located", *BERLIN, T0, accuracy_m=10.0),
        Signal("nowhere", None, None, T0 + timedelta(seconds=1)),
    ]


def test_evaluate_pairs_every_signal_with_the_free_rules(rs: Ruleset) -> None:
    batch = SignalBatch.build(signals(), PROFILES)
    ev = evaluate(rs, batch)
    assert len(ev.sig) == 4  # two signals x two rules, no place pairs
    assert ev.reasons(0) == {"anywhere": None, "evenings": "daypart"}
    assert ev.reasons(1) == {"anywhere": None, "evenings": "daypart"}
    # Local time: the zone at the located signal; the subscriber's zone for the other.
    assert sorted(set(ev.local_offset.tolist())) == [-5 * 3600.0, 3600.0]
    assert why_not(ev, 0)["evenings"] == "daypart"
    assert not_matched_counts(ev) == Counter({("evenings", "daypart"): 2})


def test_located_and_unlocated_signals_decide_a_push(rs: Ruleset) -> None:
    states: dict[str, SubscriberState] = {}
    outcomes = decide(rs, signals(), PROFILES, states, T0 + timedelta(seconds=1))
    decided = [(o.decision.rule_id, o.decision.place_id) for o in outcomes if o.decision]
    assert decided == [("anywhere", ""), ("anywhere", "")]
    # A located signal in a far zone (New York, 06:00) still takes the free rule.
    far = Signal("located", *NEW_YORK, T0 + timedelta(minutes=5), accuracy_m=10.0)
    [again] = decide(rs, [far], PROFILES, {}, far.at)
    assert again.decision is not None and again.decision.payload["body"] == "From anywhere"


def test_simulate_and_preview_and_replay_without_places(rs: Ruleset) -> None:
    for signal in signals():
        result = simulate(rs, signal, PROFILES[signal.subscription_id], signal.at)
        assert result["decision"] is not None and result["decision"]["place"] is None
        assert {r["rule"]: r["reason"] for r in result["rules"]}["evenings"] == "daypart"
    rendered = render_for(rs, rs.rule_by_id["anywhere"], Profile("p"))
    assert rendered.payload["title"] == "Hello"
    backtest = Backtest(rs)
    backtest.add(signals(), PROFILES)
    report = backtest.report(since=T0, until=T0 + timedelta(hours=1), live=[])
    assert {r["rule"]: r["would_send"] for r in report["rules"]} == {"anywhere": 2, "evenings": 0}


def test_a_rule_set_without_rules_or_places_evaluates_to_nothing(tmp_path: Path) -> None:
    empty = load_ruleset(no_places_dir(tmp_path / "rules", {}))
    assert empty.rules == [] and empty.places == []
    ev = evaluate(empty, SignalBatch.build(signals(), PROFILES))
    assert len(ev.sig) == 0 and ev.reasons(0) == {} and ev.reasons(1) == {}
    outcomes = decide(empty, signals(), PROFILES, {}, T0 + timedelta(seconds=1))
    assert [o.decision for o in outcomes] == [None, None]
    assert simulate(empty, signals()[0], PROFILES["located"], T0)["decision"] is None


def test_the_rules_cli_checks_previews_and_replays_without_places(tmp_path: Path) -> None:
    root = no_places_dir(tmp_path / "rules", {"anywhere.yaml": ANYWHERE})
    trace = tmp_path / "walk.csv"
    trace.write_text("lat,lon,time\n52.52,13.405,2026-03-02T11:00:00Z\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(root)], out=out, err=err) == 0, err.getvalue()
    assert "anywhere: priority 1, signal, no places" in out.getvalue()
    out = io.StringIO()
    assert main(["preview", "anywhere", "--rules", str(root)], out=out, err=err) == 0
    assert "title:   Hello" in out.getvalue()
    out = io.StringIO()
    assert main(["replay", str(trace), "--rules", str(root)], out=out, err=err) == 0
    assert "SEND anywhere (variant default, ttl 600s): Hello" in out.getvalue()


def test_a_place_rule_over_an_empty_places_file_leaves_the_free_rules_working(
    tmp_path: Path,
) -> None:
    near = (
        "trigger: enter\nwhere: {places: places/none.geojson, radius_m: 50}\nmessage: {title: Hi}\n"
    )
    root = no_places_dir(tmp_path / "rules", {"anywhere.yaml": ANYWHERE, "near.yaml": near})
    (root / "places").mkdir()
    (root / "places" / "none.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    rs = load_ruleset(root)
    assert rs.places == [] and rs.warnings == [
        f"{root}/places/none.geojson:1: warning: no features"
    ]
    outcomes = decide(rs, signals(), PROFILES, {}, T0 + timedelta(seconds=1))
    assert [o.decision.rule_id for o in outcomes if o.decision] == ["anywhere", "anywhere"]
    ev = evaluate(rs, SignalBatch.build(signals(), PROFILES))
    assert ev.reasons(0)["near"] == "no_place" and ev.reasons(1)["near"] == "no_location"
