"""Why not: the first failed condition of every rule within reach, per signal and counted over a
batch with numpy; the two agree, and agree with the simulator's reasons."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.cli.rules import main
from service.rules import Profile, Ruleset, Signal, SignalBatch, evaluate, simulate
from service.rules.engine import SubscriberState, decide
from service.rules.replay import replay
from service.rules.whynot import not_matched_counts, why_not
from tests.rules.rulekit import BERLIN, DEFAULT_PLACES, north_of, write_dir

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # Monday 07:00 in Berlin

RULES = {
    "lunch.yaml": """\
priority: 5
where: {places: places/spots.geojson, radius_m: 100}
when: {dayparts: [lunch]}
who: {topics: [food], max_accuracy_m: 50}
message: {title: "Lunch at {place.name}"}
""",
    "tier.yaml": """\
priority: 3
trigger: inside
where: {places: places/spots.geojson, filter: {category: cafe}, radius_m: 60}
who:
  attributes: {tier: {in: [gold]}}
  moments: [go, buy]
  max_speed_mps: 3
  context: {weather: {in: [rain]}}
message: {title: "Soup at {place.name}"}
""",
    "free.yaml": """\
priority: 1
who: {moments: [know], context: {page: {exists: true}}}
message: {title: "Read on"}
""",
}


def random_batch(seed: int, n: int = 400) -> tuple[list[Signal], dict[str, Profile]]:
    rnd = random.Random(seed)
    profiles = {
        f"s{k}": Profile(
            f"s{k}",
            timezone="Europe/Berlin",
            topics=frozenset(rnd.sample(["food", "news", "sport"], rnd.randint(0, 2))),
            attributes={"tier": rnd.choice(["gold", "silver"])} if rnd.random() < 0.8 else {},
        )
        for k in range(40)
    }
    signals = []
    for _ in range(n):
        at = T0 + timedelta(minutes=rnd.randint(0, 12 * 60))
        context: dict[str, str | int | float | bool] = {}
        if rnd.random() < 0.5:
            context["weather"] = rnd.choice(["rain", "sun"])
        if rnd.random() < 0.3:
            context["page"] = "boots"
        moment = rnd.choice([None, "know", "go", "buy"])
        sub = f"s{rnd.randrange(40)}"
        if rnd.random() < 0.15:  # a context signal, without a location
            signals.append(Signal(sub, None, None, at, moment=moment, context=context))
            continue
        lat = north_of(BERLIN[0], rnd.uniform(-180, 240))
        signals.append(
            Signal(
                sub,
                lat,
                BERLIN[1] + rnd.uniform(-0.001, 0.001),
                at,
                accuracy_m=rnd.choice([None, 5.0, 30.0, 80.0, 200.0]),
                speed_mps=rnd.choice([None, 1.0, 5.0]),
                moment=moment,
                context=context,
            )
        )
    return signals, profiles


@pytest.mark.parametrize("seed", range(6))
def test_the_batch_counts_are_the_sum_of_the_per_signal_reasons(
    make_rules: Callable[..., Ruleset], seed: int
) -> None:
    rs = make_rules(RULES)
    signals, profiles = random_batch(seed)
    ev = evaluate(rs, SignalBatch.build(signals, profiles))
    expected: Counter[tuple[str, str]] = Counter()
    for i in range(len(signals)):
        for rule, reason in why_not(ev, i).items():
            expected[(rule, reason)] += 1
    counted = not_matched_counts(ev)
    assert counted == expected
    # The random batch reaches every kind of reason.
    assert {r for _, r in counted} >= {
        "no_place",
        "accuracy",
        "daypart",
        "topics",
        "attributes.tier",
        "moment",
        "speed",
        "context.weather",
        "context.page",
    }
    # decide() counts the same when asked to.
    tally: Counter[tuple[str, str]] = Counter()
    states: dict[str, SubscriberState] = {}
    decide(rs, signals, profiles, states, arrival_order=True, not_matched=tally)
    assert tally == counted


def test_why_not_names_the_rules_within_reach_as_the_simulator_does(
    make_rules: Callable[..., Ruleset],
) -> None:
    rs = make_rules(RULES)
    signals, profiles = random_batch(99, n=150)
    ev = evaluate(rs, SignalBatch.build(signals, profiles))
    for i, sig in enumerate(signals):
        verdicts = {
            r["rule"]: r["reason"]
            for r in simulate(rs, sig, profiles[sig.subscription_id], sig.at)["rules"]
            if not r["matched"]
        }
        mine = why_not(ev, i)
        # The same reasons, for the rules within reach; the others are far or need a place.
        assert all(verdicts[rule] == reason for rule, reason in mine.items()), (i, mine)
        assert all(
            verdicts[rule] in ("no_place", "no_location") for rule in set(verdicts) - set(mine)
        )
    # A signal far from every place names only the location-free rule.
    far = Signal("s0", BERLIN[0] + 1, BERLIN[1], T0, moment="go")
    ev = evaluate(rs, SignalBatch.build([far], profiles))
    assert why_not(ev, 0) == {"free": "moment"}
    assert not_matched_counts(ev) == Counter({("free", "moment"): 1})


def test_replay_names_the_first_failed_condition_in_text_and_json(
    make_rules: Callable[..., Ruleset], tmp_path: Path
) -> None:
    rules = write_dir(tmp_path / "rules", RULES, places={"spots": DEFAULT_PLACES})
    trace = tmp_path / "walk.csv"
    east = BERLIN[1]
    trace.write_text(
        "lat,lon,time,accuracy_m,speed_mps,moment\n"
        f"{BERLIN[0]},{east},2026-03-02T09:00:00Z,10,1,go\n"  # 10:00 Berlin: not lunch
        f"{north_of(BERLIN[0], 500)},{east},2026-03-02T10:40:00Z,10,1,go\n"  # out of reach
        f"{BERLIN[0]},{east},2026-03-02T10:45:00Z,80,5,go\n"  # an 80 m fix, 5 m/s
        f"{north_of(BERLIN[0], -120)},{east},2026-03-02T10:50:00Z,10,1,go\n"  # 120 m south
        f"{BERLIN[0]},{east},2026-03-02T10:55:00Z,10,1,\n"  # lunch sends; no moment
    )
    profile = tmp_path / "me.yaml"
    profile.write_text("timezone: Europe/Berlin\ntopics: [food]\nattributes: {tier: gold}\n")
    report = replay(str(rules), str(trace), str(profile))
    why = [{x["rule"]: x["reason"] for x in r["not_matched"]} for r in report["rows"]]
    # Location-free rules are never named: they have no places to be within reach of.
    assert why == [
        {"lunch": "daypart", "tier": "context.weather"},
        {},
        {"lunch": "accuracy", "tier": "speed"},  # a failed condition comes before accuracy
        {"lunch": "no_place"},  # within radius + hysteresis of the lunch place only
        {"tier": "moment"},
    ]
    assert report["rows"][4]["decision"]["rule"] == "lunch"
    assert report["summary"]["not_matched"] == {
        "lunch": {"accuracy": 1, "daypart": 1, "no_place": 1},
        "tier": {"context.weather": 1, "moment": 1, "speed": 1},
    }
    out = io.StringIO()
    assert (
        main(["replay", str(trace), "--rules", str(rules), "--profile", str(profile)], out=out) == 0
    )
    lines = out.getvalue().splitlines()
    assert "  -  [not matched lunch: daypart; tier: context.weather]  +lunch@berlin" in lines[0]
    assert "[not matched" not in lines[1]
    assert "  -  [not matched lunch: accuracy; tier: speed]" in lines[2]
    assert "SEND lunch @ berlin" in lines[4] and "[not matched tier: moment]" in lines[4]
    out = io.StringIO()
    assert main(["replay", str(trace), "--rules", str(rules), "--json"], out=out) == 0
    doc = json.loads(out.getvalue())
    assert doc["rows"][0]["not_matched"][0] == {"rule": "lunch", "reason": "daypart"}
