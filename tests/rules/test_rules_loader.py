"""Every mistake a marketer can make is reported as file:line: message."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from service.rules import RuleLoadError, load_ruleset
from tests.rules.rulekit import DEFAULT_PLACES, POLICY, point, write_dir

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
description: ok
priority: 1
where:
  places: places/spots.geojson
  radius_m: 100
message:
  title: "Hi {place.name}"
"""


def errors_of(
    tmp_path: Path,
    rules: dict[str, str],
    policy: str = POLICY,
    places: dict[str, list[dict[str, object]]] | None = None,
) -> list[str]:
    root = write_dir(tmp_path / "rules", rules, policy, places)
    with pytest.raises(RuleLoadError) as exc:
        load_ruleset(root)
    return exc.value.errors


def test_example_rules_load_cleanly() -> None:
    rs = load_ruleset(REPO / "rules")
    assert {r.id for r in rs.rules} == {
        "lunch-nearby",
        "know-landmark",
        "go-station",
        "do-diy",
        "buy-store",
        "know-hiking",
    }
    assert rs.rule_by_id["know-hiking"].location_free
    assert rs.warnings == []
    assert len(rs.places) >= 30


def test_unknown_daypart(tmp_path: Path) -> None:
    rule = GOOD + "when:\n  dayparts: [lunch, brunch]\n"
    errs = errors_of(tmp_path, {"r.yaml": rule})
    assert errs == [
        f"{tmp_path}/rules/r.yaml:9: when.dayparts[1]: unknown daypart 'brunch' "
        "(policy.yaml defines: breakfast, lunch, morning)"
    ]


def test_bad_duration(tmp_path: Path) -> None:
    rule = GOOD + "  ttl: 20 minutes\n"
    errs = errors_of(tmp_path, {"r.yaml": rule})
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path}/rules/r.yaml:8: message.ttl: bad duration '20 minutes'")


@pytest.mark.parametrize(
    ("ttl", "message"),
    [
        ("30", "duration must be text such as 30s, 20m, 2h or 7d, not 30"),
        ("'30'", "bad duration '30': use a number and a unit s, m, h, d or w"),
        ("0s", "duration '0s' must be longer than zero"),
        ("1.5h", "bad duration '1.5h'"),
    ],
)
def test_rule_durations_need_a_unit_and_more_than_zero(
    tmp_path: Path, ttl: str, message: str
) -> None:
    errs = errors_of(tmp_path, {"r.yaml": GOOD + f"  ttl: {ttl}\n"})
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path}/rules/r.yaml:8: message.ttl: {message}")


def test_rule_durations_take_every_unit(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "rules", {"r.yaml": GOOD + "  ttl: 2w\n"})
    rule = load_ruleset(root).rules[0].model.message
    assert rule.ttl == timedelta(weeks=2)


def test_bad_limit(tmp_path: Path) -> None:
    rule = GOOD + "limits:\n  per_place: 1/fortnight\n"
    errs = errors_of(tmp_path, {"r.yaml": rule})
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path}/rules/r.yaml:9: limits.per_place: bad limit")


def test_bad_time_window_in_rule_and_policy(tmp_path: Path) -> None:
    rule = GOOD + 'when:\n  between: "11:30-25:00"\n'
    policy = POLICY + 'quiet_hours: "9pm-8am"\n'
    errs = errors_of(tmp_path, {"r.yaml": rule}, policy=policy)
    assert (
        f"{tmp_path}/rules/policy.yaml:5: quiet_hours: bad time window '9pm-8am': "
        "write HH:MM-HH:MM, e.g. 11:30-14:00" in errs
    )
    assert any(
        e.startswith(f"{tmp_path}/rules/r.yaml:9: when.between: bad time window '11:30-25:00'")
        for e in errs
    )


def test_filter_matching_no_place(tmp_path: Path) -> None:
    rule = GOOD.replace("  radius_m: 100\n", "  filter: {category: restaurant}\n  radius_m: 100\n")
    errs = errors_of(tmp_path, {"r.yaml": rule})
    assert len(errs) == 1
    assert errs[0] == (
        f"{tmp_path}/rules/r.yaml:5: where.filter {{'category': 'restaurant'}} "
        "matches none of the 5 places (values present: cafe, square)"
    )


def test_unknown_template_field(tmp_path: Path) -> None:
    rule = GOOD + '  body: "Only {price} today"\n'
    errs = errors_of(tmp_path, {"r.yaml": rule})
    assert errs == [
        f"{tmp_path}/rules/r.yaml:8: message.body: unknown template field {{price}}; "
        "use {place.<property>}, {distance_m}, {rule.id}, {attributes.<name>} or "
        "{context.<name>}"
    ]


def test_place_property_missing_on_some_places(tmp_path: Path) -> None:
    rule = GOOD + '  body: "{place.cuisine}"\n'
    errs = errors_of(tmp_path, {"r.yaml": rule})
    assert errs == [
        f"{tmp_path}/rules/r.yaml:8: message.body: template field {{place.cuisine}} "
        "is missing on 5 of 5 places (e.g. 'berlin')"
    ]


def test_self_intersecting_polygon_names_feature(tmp_path: Path) -> None:
    bowtie: dict[str, object] = {
        "type": "Feature",
        "properties": {"id": "bow"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[13.0, 52.0], [13.01, 52.01], [13.01, 52.0], [13.0, 52.01], [13.0, 52.0]]
            ],
        },
    }
    places = {"spots": [*DEFAULT_PLACES, bowtie]}
    errs = errors_of(tmp_path, {"r.yaml": GOOD}, places=places)
    # The places file has one feature per line after the opening line.
    assert len(errs) == 1
    assert errs[0].startswith(
        f"{tmp_path}/rules/places/spots.geojson:7: feature 5 (id 'bow'): "
        "invalid polygon: Self-intersection"
    )


def test_oversized_payload(tmp_path: Path) -> None:
    long_name = "Ü" * 1200  # 2 bytes each in UTF-8
    places = {"spots": [point("long", 52.5, 13.4, name=long_name), *DEFAULT_PLACES]}
    rule = GOOD + '  body: "{place.name} and again {place.name}"\n'
    errs = errors_of(tmp_path, {"r.yaml": rule}, places=places)
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path}/rules/r.yaml:6: message: the push payload can reach ")
    assert "(limit 3993)" in errs[0]


def test_payload_just_under_the_limit_is_accepted(tmp_path: Path) -> None:
    places = {"spots": [point("long", 52.5, 13.4, name="a" * 1000), *DEFAULT_PLACES]}
    write_dir(tmp_path / "rules", {"r.yaml": GOOD + '  body: "{place.name}"\n'}, places=places)
    assert load_ruleset(tmp_path / "rules").rules[0].id == "r"


def test_duplicate_rule_ids(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"a.yaml": GOOD, "b.yaml": "id: a\n" + GOOD})
    assert errs == [
        f"{tmp_path}/rules/b.yaml:1: duplicate rule id 'a' (also {tmp_path}/rules/a.yaml)"
    ]


def test_priority_tie_is_a_warning(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "rules", {"a.yaml": GOOD, "b.yaml": GOOD})
    rs = load_ruleset(root)
    assert rs.warnings == [
        f"{root}/b.yaml:2: warning: rule 'b' ties with 'a' at priority 1 on 5 "
        "shared places; the nearer place, then the rule id decides - give "
        "them different priorities"
    ]


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"r.yaml": GOOD + "when:\n  dayparst: [lunch]\n"})
    assert errs == [
        f"{tmp_path}/rules/r.yaml:9: when: unknown key 'dayparst' (did you mean 'dayparts'?)"
    ]


def test_yaml_syntax_error_line(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"r.yaml": GOOD + "who: [unclosed\n"})
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path}/rules/r.yaml:9: not valid YAML")


def test_all_errors_of_a_load_are_reported(tmp_path: Path) -> None:
    errs = errors_of(
        tmp_path,
        {
            "a.yaml": GOOD + "  urgency: asap\n",
            "b.yaml": GOOD + "trigger: dwell\n",
            "c.yaml": GOOD.replace("places/spots.geojson", "places/nope.geojson"),
        },
    )
    assert [e.split(":")[0].rsplit("/", 1)[1] + ":" + e.split(":")[1] for e in errs] == [
        "a.yaml:8",
        "b.yaml:1",
        "c.yaml:4",
    ]
    assert "not found under" in errs[2]
    assert "trigger: dwell needs a dwell time" in errs[1]


def test_point_without_radius_is_an_error(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"r.yaml": GOOD.replace("  radius_m: 100\n", "")})
    assert errs[0].startswith(f"{tmp_path}/rules/r.yaml:3: where: 4 point places have no radius_m")


def test_json_schema_is_checked_in_and_current() -> None:
    from service.rules.models import json_schema, policy_json_schema

    assert json.loads((REPO / "docs/rule.schema.json").read_text()) == json_schema()
    assert json.loads((REPO / "docs/policy.schema.json").read_text()) == policy_json_schema()
