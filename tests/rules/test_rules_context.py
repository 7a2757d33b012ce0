"""Context-aware rules in the pure engine: conditions with operators, location-free rules,
context signals, per-locale messages and action buttons."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.errors import RuleLoadError
from service.rules import Profile, Ruleset, Signal, load_ruleset
from service.rules.engine import SubscriberState, decide, simulate
from tests.rules.rulekit import BERLIN, write_dir

T0 = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # Monday 12:00 in Berlin

KNOW = """\
priority: 5
when: {between: "18:00-23:00"}
who:
  moments: [know]
  context: {page_category: {eq: boots}}
message:
  title: "Boots for {context.trail}?"
  body: "Our guide to {context.page_category}"
  url: "https://shop.example.com/guides/boots"
  locales:
    de: {title: "Stiefel für {context.trail}?"}
  actions:
    - {action: read, title: "Read the guide"}
    - {action: shop, title: "Shop boots", url: "https://shop.example.com/boots"}
"""

RAINY_GOLD = """\
priority: 3
trigger: enter
where: {places: places/spots.geojson, filter: {category: cafe}, radius_m: 100}
who:
  attributes: {tier: {in: [gold, silver]}, visits: {gte: 3}}
  context: {weather: {in: [rain, snow]}, battery_pct: {gt: 20}}
message: {title: "Soup at {place.name}", body: "{attributes.tier} members: soup is on us"}
"""


def ctx_signal(sub: str, at: datetime, **context: Any) -> Signal:
    return Signal(sub, None, None, at, moment="know", context=context)


def run(rs: Ruleset, signals: list[Signal], profiles: dict[str, Profile]) -> list[Any]:
    states: dict[str, SubscriberState] = {}
    return decide(rs, signals, profiles, states, max(s.at for s in signals))


def test_a_context_signal_fires_a_location_free_rule_with_context_rendered(
    make_rules: Callable[..., Ruleset],
) -> None:
    rs = make_rules({"boots.yaml": KNOW})
    evening = T0 + timedelta(hours=8)  # 20:00 Berlin
    profiles = {"a": Profile("a", timezone="Europe/Berlin")}
    [out] = run(rs, [ctx_signal("a", evening, page_category="boots", trail="GR20")], profiles)
    d = out.decision
    assert d is not None and d.rule_id == "boots" and d.place_id == "" and d.distance_m is None
    assert d.payload["title"] == "Boots for GR20?"
    assert d.payload["body"] == "Our guide to boots"
    assert d.payload["actions"] == [
        {
            "action": "read",
            "title": "Read the guide",
            "url": "https://shop.example.com/guides/boots",
        },
        {"action": "shop", "title": "Shop boots", "url": "https://shop.example.com/boots"},
    ]
    # The rule's local time is the subscriber's: at noon in Berlin the window is closed.
    [noon] = run(rs, [ctx_signal("a", T0, page_category="boots")], profiles)
    assert noon.decision is None
    # Each matching signal is a decision of its own (caps decide): distinct dedupe keys.
    two = run(
        rs,
        [
            ctx_signal("a", evening, page_category="boots"),
            ctx_signal("a", evening + timedelta(minutes=5), page_category="boots"),
        ],
        profiles,
    )
    keys = {o.decision.dedupe_key for o in two if o.decision is not None}
    assert len(keys) == 2
    # An absent context field renders empty.
    [bare] = run(rs, [ctx_signal("a", evening, page_category="boots")], profiles)
    assert bare.decision is not None and bare.decision.payload["title"] == "Boots for ?"


@pytest.mark.parametrize(
    ("locale", "title"),
    [
        ("de", "Stiefel für X?"),
        ("de-AT", "Stiefel für X?"),
        ("fr", "Boots for X?"),
        (None, "Boots for X?"),
    ],
)
def test_locale_exact_then_language_then_default(
    make_rules: Callable[..., Ruleset], locale: str | None, title: str
) -> None:
    rs = make_rules({"boots.yaml": KNOW})
    evening = T0 + timedelta(hours=8)
    profiles = {"a": Profile("a", timezone="Europe/Berlin", locale=locale)}
    [out] = run(rs, [ctx_signal("a", evening, page_category="boots", trail="X")], profiles)
    assert out.decision is not None and out.decision.payload["title"] == title
    assert out.decision.payload.get("lang", "") == ("de" if title.startswith("Stiefel") else "")
    # The body has no German text: it falls back to the default per field.
    assert out.decision.payload["body"] == "Our guide to boots"


def test_conditions_with_operators_and_first_failed_reason(
    make_rules: Callable[..., Ruleset],
) -> None:
    rs = make_rules({"soup.yaml": RAINY_GOLD})
    gold = Profile("a", attributes={"tier": "gold", "visits": 4})

    def reason(profile: Profile, **context: Any) -> str | None:
        sig = Signal("a", BERLIN[0], BERLIN[1], at=T0, accuracy_m=5, context=context)
        verdicts = {r["rule"]: r for r in simulate(rs, sig, profile, T0)["rules"]}
        return verdicts["soup"]["reason"]

    assert reason(gold, weather="rain", battery_pct=50) is None
    assert reason(gold, weather="sun", battery_pct=50) == "context.weather"
    assert reason(gold, weather="rain", battery_pct="full") == "context.battery_pct"
    assert reason(gold, weather="rain") == "context.battery_pct"  # missing: no match
    bronze = Profile("a", attributes={"tier": "bronze", "visits": 9})
    assert reason(bronze, weather="rain", battery_pct=50) == "attributes.tier"
    new = Profile("a", attributes={"tier": "gold", "visits": 1})
    assert reason(new, weather="rain", battery_pct=50) == "attributes.visits"
    # A context signal meets a rule with places: it has no location to match.
    verdicts = simulate(rs, ctx_signal("a", T0, weather="rain"), gold, T0)["rules"]
    assert verdicts == [{"rule": "soup", "matched": False, "reason": "no_location"}]


def test_a_context_signal_leaves_presence_alone(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"soup.yaml": RAINY_GOLD})
    profiles = {"a": Profile("a", attributes={"tier": "gold", "visits": 4})}
    states: dict[str, SubscriberState] = {}
    at_cafe = Signal("a", *BERLIN, T0, accuracy_m=5, context={"weather": "rain", "battery_pct": 80})
    [entered] = decide(rs, [at_cafe], profiles, states, T0)
    assert entered.decision is not None and states["a"].presence
    later = T0 + timedelta(minutes=1)
    [page] = decide(rs, [ctx_signal("a", later, weather="rain")], profiles, states, later)
    assert page.left == [] and states["a"].presence  # still inside: no new "enter" later
    again = Signal(
        "a",
        *BERLIN,
        later + timedelta(minutes=1),
        accuracy_m=5,
        context={"weather": "rain", "battery_pct": 80},
    )
    [back] = decide(rs, [again], profiles, states, again.at)
    assert back.entered == [] and back.decision is None


def test_priority_decides_between_a_location_free_and_a_geofenced_rule(
    make_rules: Callable[..., Ruleset],
) -> None:
    anywhere = (
        'priority: {p}\nwho: {{context: {{weather: rain}}}}\nmessage: {{title: "Rainy day deal"}}\n'
    )
    here = (
        "priority: 5\nwhere: {places: places/spots.geojson, radius_m: 100}\n"
        'message: {title: "At {place.name}"}\n'
    )
    sig = Signal("a", *BERLIN, T0, accuracy_m=5, context={"weather": "rain"})
    for p, winner in ((9, "anywhere"), (1, "here")):
        rs = make_rules({"anywhere.yaml": anywhere.format(p=p), "here.yaml": here})
        [out] = run(rs, [sig], {"a": Profile("a")})
        assert out.decision is not None and out.decision.rule_id == winner


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "who: {context: {battery_pct: {gt: high}}}\nmessage: {title: x}\n",
            "r.yaml:1: who.context.battery_pct: this condition can never hold: gt compares "
            "numbers; 'high' is not a number",
        ),
        (
            'message: {title: "Near {place.name}"}\n',
            "r.yaml:1: message.title: template field {place.name} needs where (places); this "
            "rule has none",
        ),
        (
            "trigger: enter\nmessage: {title: x}\n",
            "r.yaml:1: trigger: enter needs where (places); a rule without places uses "
            "trigger: signal",
        ),
        (
            "who: {context: {weather: {in: [rain], eq: snow}}}\nmessage: {title: x}\n",
            "who.context.weather",
        ),
        (
            "message:\n  title: x\n  actions: [{action: a, title: A}, {action: b, title: B},"
            " {action: c, title: C}]\n",
            "message.actions",
        ),
    ],
)
def test_rule_errors_name_file_and_line(tmp_path: Path, rule: str, message: str) -> None:
    root = write_dir(tmp_path / "rules", {"r.yaml": rule})
    with pytest.raises(RuleLoadError) as exc:
        load_ruleset(root)
    assert any(message in e for e in exc.value.errors), exc.value.errors
