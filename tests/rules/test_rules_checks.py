"""`rules check` warnings and errors for rules that load but cannot do what was meant:
windows against quiet hours, over-long windows, ended campaigns, stray places, and the
CLI's --strict, --json and single-file forms."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pytest

from service.cli.rules import main
from service.rules import RuleLoadError, load_ruleset
from service.rules.checks import check_ruleset, far_places
from service.rules.source import load_located
from tests.rules.rulekit import (
    BERLIN,
    DEFAULT_PLACES,
    NEW_YORK,
    POLICY,
    north_of,
    point,
    write_dir,
)

REPO = Path(__file__).resolve().parents[2]
QUIET = POLICY + 'quiet_hours: "21:00-08:00"\n'

# Line 3 of every rule below is `when:`, line 4 its first key.
RULE = """\
description: a test rule
priority: 1
when:
{when}
where:
  places: places/spots.geojson
  radius_m: 100
message:
  title: "Hi {{place.name}}"
"""


def rule(when: str) -> str:
    return RULE.format(when=when)


def load_warnings(
    tmp_path: Path,
    rules: dict[str, str],
    policy: str = POLICY,
    places: dict[str, list[dict[str, object]]] | None = None,
) -> list[str]:
    return load_ruleset(write_dir(tmp_path / "rules", rules, policy, places)).warnings


def load_errors(
    tmp_path: Path,
    rules: dict[str, str],
    policy: str = POLICY,
    places: dict[str, list[dict[str, object]]] | None = None,
) -> list[str]:
    with pytest.raises(RuleLoadError) as exc:
        load_ruleset(write_dir(tmp_path / "rules", rules, policy, places))
    return exc.value.errors


def test_a_window_overlapping_quiet_hours_warns_at_its_line(tmp_path: Path) -> None:
    warnings = load_warnings(tmp_path, {"r.yaml": rule('  between: "06:30-10:00"')}, policy=QUIET)
    assert warnings == [
        f"{tmp_path}/rules/r.yaml:4: warning: when.between: 06:30-10:00 overlaps the quiet "
        "hours 21:00-08:00 (policy.yaml) during 06:30-08:00, when nothing is sent; it can "
        "send only 08:00-10:00"
    ]


def test_a_daypart_overlapping_quiet_hours_warns_at_the_rule(tmp_path: Path) -> None:
    warnings = load_warnings(
        tmp_path, {"r.yaml": rule("  dayparts:\n    - lunch\n    - breakfast")}, policy=QUIET
    )
    assert warnings == [
        f"{tmp_path}/rules/r.yaml:6: warning: when.dayparts[1]: daypart 'breakfast' "
        "(06:30-10:00) overlaps the quiet hours 21:00-08:00 (policy.yaml) during "
        "06:30-08:00, when nothing is sent; it can send only 08:00-10:00"
    ]


def test_overlap_across_midnight_is_shown_as_one_window(tmp_path: Path) -> None:
    warnings = load_warnings(
        tmp_path,
        {"r.yaml": rule('  between:\n    - "11:00-12:00"\n    - "20:00-09:00"')},
        policy=QUIET,
    )
    assert warnings == [
        f"{tmp_path}/rules/r.yaml:6: warning: when.between[1]: 20:00-09:00 overlaps the "
        "quiet hours 21:00-08:00 (policy.yaml) during 21:00-08:00, when nothing is sent; "
        "it can send only 20:00-21:00 and 08:00-09:00"
    ]


def test_a_window_wholly_inside_quiet_hours_is_an_error(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"r.yaml": rule('  between: "22:00-06:00"')}, policy=QUIET)
    assert errors == [
        f"{tmp_path}/rules/r.yaml:4: when.between: 22:00-06:00 lies wholly inside the quiet "
        "hours 21:00-08:00 (policy.yaml): the rule can never send"
    ]


def test_one_dead_window_among_others_is_an_error_too(tmp_path: Path) -> None:
    policy = QUIET.replace('morning: "08:00-09:00"', 'morning: "06:00-07:30"')
    errors = load_errors(tmp_path, {"r.yaml": rule("  dayparts: [lunch, morning]")}, policy=policy)
    assert errors == [
        f"{tmp_path}/rules/r.yaml:4: when.dayparts[1]: daypart 'morning' (06:00-07:30) lies "
        "wholly inside the quiet hours 21:00-08:00 (policy.yaml): nothing is ever sent in "
        "this window"
    ]


def test_windows_that_touch_quiet_hours_are_fine(tmp_path: Path) -> None:
    # Half-open windows: 17:30-21:00 ends as the quiet hours begin, 08:00 starts as they end.
    when = '  between: ["17:30-21:00", "08:00-11:00"]\n  days: [mon]'
    assert load_warnings(tmp_path, {"r.yaml": rule(when)}, policy=QUIET) == []


def test_a_rule_without_windows_fires_any_time_without_a_warning(tmp_path: Path) -> None:
    assert load_warnings(tmp_path, {"r.yaml": rule("  days: [sat, sun]")}, policy=QUIET) == []


def test_a_swapped_window_over_16_hours_warns(tmp_path: Path) -> None:
    # No quiet hours in this policy: the length alone is the finding.
    warnings = load_warnings(tmp_path, {"r.yaml": rule('  between: "10:30-07:00"')})
    assert warnings == [
        f"{tmp_path}/rules/r.yaml:4: warning: when.between: 10:30-07:00 is 20 h 30 min long "
        "(more than 16 h): it runs from 10:30 to 07:00 the next day; did you mean "
        "07:00-10:30?"
    ]


def test_a_long_window_with_quiet_hours_gets_both_warnings(tmp_path: Path) -> None:
    warnings = load_warnings(tmp_path, {"r.yaml": rule('  between: "05:00-23:00"')}, policy=QUIET)
    assert [w.split(": ", 2)[2][:40] for w in warnings] == [
        "when.between: 05:00-23:00 is 18 h long (",
        "when.between: 05:00-23:00 overlaps the q",
    ]
    assert all(w.startswith(f"{tmp_path}/rules/r.yaml:4: warning: ") for w in warnings)


def test_an_ended_campaign_warns_at_its_end(tmp_path: Path) -> None:
    text = rule("  days: [mon]") + "campaign:\n  start: 2020-01-01\n  end: 2020-01-31\n"
    warnings = load_warnings(tmp_path, {"r.yaml": text})
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"{tmp_path}/rules/r.yaml:12: warning: campaign.end: the campaign ended on 2020-01-31 "
        "(today is "
    )
    assert warnings[0].endswith("the rule never fires again; move the dates or remove the file")


def test_the_campaign_date_is_compared_with_the_given_today(tmp_path: Path) -> None:
    text = rule("  days: [mon]") + "campaign: {start: 2026-11-01, end: 2026-12-31}\n"
    root = write_dir(tmp_path / "rules", {"r.yaml": text})
    rs = load_ruleset(root)
    sources = {f"{root}/r.yaml": load_located((root / "r.yaml").read_text())}
    assert check_ruleset(rs, sources, today=date(2026, 12, 31)).warnings == []
    found = check_ruleset(rs, sources, today=date(2027, 1, 1))
    assert found.errors == []
    assert found.warnings == [
        f"{root}/r.yaml:10: warning: campaign.end: the campaign ended on 2026-12-31 (today is "
        "2027-01-01): the rule never fires again; move the dates or remove the file"
    ]


def _cafes(n: int) -> list[dict[str, object]]:
    return [
        point(f"cafe-{i}", north_of(BERLIN[0], 120 * i), BERLIN[1], category="cafe")
        for i in range(n)
    ]


def test_a_place_with_lat_and_lon_swapped_warns_at_its_coordinates(tmp_path: Path) -> None:
    # The marketer's café in Yemen: [52.52, 13.405] written as [lat, lon].
    swapped = point("cafe-x", BERLIN[1], BERLIN[0], category="cafe")
    places = {"spots": [*_cafes(6), swapped]}
    warnings = load_warnings(tmp_path, {"r.yaml": rule("  days: [mon]")}, places=places)
    # One feature per line after the opening line: feature 6 is on line 8.
    assert warnings == [
        f"{tmp_path}/rules/places/spots.geojson:8: warning: feature 6 ('cafe-x') is 5,556 km "
        "from the median point of the 7 places in this file (52.5222, 13.4050), far from the "
        "rest; with latitude and longitude swapped it would be 0 km from it - GeoJSON "
        "coordinates are [longitude, latitude]"
    ]


def test_a_place_far_away_for_another_reason_says_so(tmp_path: Path) -> None:
    # New York cafés, one with the minus of its longitude lost: it lands in Kyrgyzstan.
    cafes = [point(f"ny-{i}", north_of(NEW_YORK[0], 150 * i), NEW_YORK[1]) for i in range(3)]
    stray = point("ny-x", NEW_YORK[0], -NEW_YORK[1])
    places = {"spots": [*cafes, stray]}
    warnings = load_warnings(tmp_path, {"r.yaml": rule("  days: [mon]")}, places=places)
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"{tmp_path}/rules/places/spots.geojson:5: warning: feature 3 ('ny-x') is "
    )
    assert warnings[0].endswith(
        "are its coordinates right (GeoJSON order is [longitude, latitude])?"
    )


def test_files_spread_over_cities_on_purpose_do_not_warn() -> None:
    # Three Berlin places, New York and Tokyo: two of five far away is a choice, not a typo.
    from service.rules.places import make_place

    places = [make_place("spots", i, f, "spots") for i, f in enumerate(DEFAULT_PLACES)]
    assert far_places(places) == []
    assert far_places(places[:2]) == []  # two places: no "rest" to compare with
    # A chain with one shop in Leipzig, 150 km away: not over 500 km.
    chain = [make_place("c", i, f, "c") for i, f in enumerate(_cafes(5))]
    chain.append(make_place("c", 5, point("leipzig", 51.34, 12.37), "c"))
    assert far_places(chain) == []


def test_places_around_the_antimeridian_are_one_cluster() -> None:
    from service.rules.places import make_place

    fiji = [(-17.8, 179.9), (-17.7, -179.95), (-17.9, 179.95), (-17.75, -179.9)]
    places = [
        make_place("f", i, point(f"p{i}", lat, lon), "f") for i, (lat, lon) in enumerate(fiji)
    ]
    assert far_places(places) == []
    stray = make_place("f", 4, point("stray", 17.8, 179.9), "f")  # the sign of lat lost
    assert [p.id for p, _, _ in far_places([*places, stray])] == ["stray"]


def test_a_filter_that_leaves_no_places_stays_an_error_at_its_line(tmp_path: Path) -> None:
    text = rule("  days: [mon]").replace("  radius_m: 100\n", "  filter: {category: bar}\n")
    errors = load_errors(tmp_path, {"r.yaml": text})
    assert errors == [
        f"{tmp_path}/rules/r.yaml:7: where.filter {{'category': 'bar'}} matches none of the "
        "5 places (values present: cafe, square)"
    ]


def test_a_rule_without_places_is_checked_too(tmp_path: Path) -> None:
    # Location-free rules (`where` absent) have no places: the window checks still apply.
    root = write_dir(tmp_path / "rules", {"r.yaml": rule('  between: "06:30-10:00"')}, QUIET)
    rs = load_ruleset(root)
    rule_ = rs.rules[0]
    rule_.model = rule_.model.model_copy(update={"where": None})
    rule_.place_idx = []
    found = check_ruleset(rs, {}, today=date(2026, 1, 1))
    assert found.errors == []
    assert [w.split(": warning: ")[1][:40] for w in found.warnings] == [
        "when.between: 06:30-10:00 overlaps the q"
    ]
    assert found.warnings[0].startswith(f"{root}/r.yaml:1: ")  # no source given: line 1


def check(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_shipped_rules_check_clean_even_with_strict() -> None:
    code, out, err = check([str(REPO / "rules"), "--strict"])
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "6 rules OK, 0 warnings"
    assert "    Lunch offer when a subscriber walks near a partner restaurant" in out


def test_strict_makes_warnings_errors(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "rules", {"r.yaml": rule('  between: "06:30-10:00"')}, QUIET)
    code, out, err = check([str(root)])
    assert code == 0
    assert err.startswith(f"{root}/r.yaml:4: warning: when.between: 06:30-10:00 overlaps")
    assert out.splitlines() == [
        "r: priority 1, enter, 5 places (point+polygon), 06:30-10:00, variants default",
        "    a test rule",
        "1 rule OK, 1 warning",
    ]
    code, out, err = check([str(root), "--strict"])
    assert code == 1
    assert err.splitlines()[-1] == "1 rule, 1 warning; --strict makes warnings errors"
    code, out, _ = check([str(root), "--strict", "--json"])
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["strict"] is True and doc["errors"] == []
    assert doc["warnings"] == [
        {
            "file": f"{root}/r.yaml",
            "line": 4,
            "message": "when.between: 06:30-10:00 overlaps the quiet hours 21:00-08:00 "
            "(policy.yaml) during 06:30-08:00, when nothing is sent; it can send only "
            "08:00-10:00",
        }
    ]
    assert doc["rules"][0]["description"] == "a test rule"
    code, out, _ = check([str(root), "--json"])
    assert code == 0 and json.loads(out)["ok"] is True


def test_the_error_fails_the_check_with_its_line(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "rules", {"r.yaml": rule('  between: "22:00-06:00"')}, QUIET)
    code, out, err = check([str(root)])
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{root}/r.yaml:4: when.between: 22:00-06:00 lies wholly inside the quiet hours "
        "21:00-08:00 (policy.yaml): the rule can never send",
        "1 error(s), 0 warnings; nothing was changed",
    ]


def test_a_file_argument_checks_its_folder_and_reports_that_file(tmp_path: Path) -> None:
    root = write_dir(
        tmp_path / "rules",
        {
            "a.yaml": rule('  between: "06:30-10:00"'),
            "b.yaml": rule('  between: "12:00-13:00"').replace("priority: 1", "priority: 2"),
        },
        QUIET,
    )
    code, out, err = check([str(root / "b.yaml")])
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "b: priority 2, enter, 5 places (point+polygon), 12:00-13:00, variants default",
        "    a test rule",
        "1 rule OK, 0 warnings",
    ]
    code, out, err = check([str(root / "a.yaml"), "--strict"])
    assert code == 1 and err.startswith(f"{root}/a.yaml:4: warning: ")
    # A places file reports its own findings; the folder above places/ is loaded.
    code, out, err = check([str(root / "places" / "spots.geojson")])
    assert (code, err) == (0, "")
    assert out == f"{root}/places/spots.geojson OK, 0 warnings\n"
    # An error in another file: this one is clean, but the folder does not load.
    (root / "c.yaml").write_text("priority: [\n")
    code, out, err = check([str(root / "b.yaml"), "--json"])
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    assert doc["errors"] == [] and doc["errors_in_other_files"] == 1
    code, out, err = check([str(root / "b.yaml")])
    assert code == 1
    assert err.splitlines() == [
        f"1 error in other files of {root} (momentcast rules check {root} lists them)",
        f"0 error(s), 0 warnings in {root}/b.yaml; nothing was changed",
    ]
