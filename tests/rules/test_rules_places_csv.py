"""Places from a spreadsheet: `places/*.csv` with `id,name,lat,lon`, stable ids, and every
bad row reported as `file:line: message`; GeoJSON also as `.json`; and no rule error that
points at errors "above" that are not there."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.reload.holder import RulesHolder
from service.rules import RuleLoadError, Ruleset, load_ruleset
from service.rules.places_csv import parse_places_csv
from tests.processes import start
from tests.rules.rulekit import POLICY, point

# Six coffee shops of a New York chain, as a marketer keeps them in a spreadsheet.
SHOPS = """\
id,name,lat,lon,radius_m,neighborhood,floor
soho,Soho Roasters,40.7233,-74.0030,60,SoHo,1
chelsea,Chelsea Beans,40.7465,-74.0014,,Chelsea,
williamsburg,Williamsburg Brew,40.7081,-73.9571,80,Williamsburg,2
midtown,Midtown Espresso,40.7549,-73.9840,,Midtown,1
les,Lower East Side Café,40.7150,-73.9843,,LES,
harlem,Harlem Drip,40.8116,-73.9465,50,Harlem,02
"""

RULE = """\
description: coffee nearby
priority: 1
where:
  places: places/shops.csv
  radius_m: 100
message:
  title: "Coffee at {place.name}"
"""


def write(root: Path, files: dict[str, str], policy: str = POLICY) -> Path:
    (root / "places").mkdir(parents=True, exist_ok=True)
    (root / "policy.yaml").write_text(policy)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    return root


def errors_of(root: Path) -> list[str]:
    with pytest.raises(RuleLoadError) as exc:
        load_ruleset(root)
    return exc.value.errors


def by_id(rs: Ruleset) -> dict[str, tuple[str, float, float, float | None, dict[str, Any]]]:
    return {p.id: (p.name, p.lat, p.lon, p.radius_m, p.properties) for p in rs.places}


def test_a_csv_of_shops_loads_with_its_own_ids_and_columns_as_properties(tmp_path: Path) -> None:
    rs = load_ruleset(write(tmp_path / "rules", {"places/shops.csv": SHOPS, "near.yaml": RULE}))
    assert rs.warnings == []
    places = by_id(rs)
    assert list(places) == ["soho", "chelsea", "williamsburg", "midtown", "les", "harlem"]
    assert places["soho"] == (
        "Soho Roasters",
        40.7233,
        -74.0030,
        60.0,
        {
            "id": "soho",
            "name": "Soho Roasters",
            "radius_m": 60.0,
            "neighborhood": "SoHo",
            "floor": "1",
        },
    )
    # Empty cells are absent properties; numbers in other columns stay text ("02" keeps
    # its zero, as a zip code or a phone number must).
    assert places["chelsea"][3] is None
    assert places["chelsea"][4] == {
        "id": "chelsea",
        "name": "Chelsea Beans",
        "neighborhood": "Chelsea",
    }
    assert places["harlem"][4]["floor"] == "02"
    assert places["les"][0] == "Lower East Side Café"
    [rule] = rs.rules
    assert len(rule.place_idx) == 6


def test_re_sorting_the_sheet_keeps_every_id(tmp_path: Path) -> None:
    root = write(tmp_path / "rules", {"places/shops.csv": SHOPS, "near.yaml": RULE})
    before = by_id(load_ruleset(root))
    header, *rows = SHOPS.splitlines()
    # Sorted by name, descending, and the columns in another order: the same shops.
    cells = [row.split(",") for row in [header, *sorted(rows, key=lambda r: r.split(",")[1])[::-1]]]
    order = [6, 3, 1, 5, 0, 2, 4]
    (root / "places" / "shops.csv").write_text(
        "\n".join(",".join(c[i] for i in order) for c in cells) + "\n"
    )
    after = load_ruleset(root)
    assert [p.id for p in after.places] == [
        "williamsburg",
        "soho",
        "midtown",
        "les",
        "harlem",
        "chelsea",
    ]
    assert by_id(after) == before


def test_every_bad_row_is_reported_at_its_line(tmp_path: Path) -> None:
    shops = textwrap.dedent(
        """\
        id,name,lat,lon,radius_m,note
        soho,Soho Roasters,40.7233,-74.0030,60,
        ,No Id,40.7465,-74.0014,,
        chelsea,Chelsea Beans,forty,-74.0014,,
        midtown,Midtown Espresso,40.7549,,,
        les,"Lower East Side
        Café",95.1,-73.9843,,"a note
        over two lines"
        harlem,Harlem Drip,40.8116,-200,,
        soho,Soho Again,40.7234,-74.0031,,
        dumbo,Dumbo Coffee,40.7033,-73.9881,-5,
        bushwick,Bushwick Beans,40.6944,-73.9213,wide,
        astoria,Astoria Cup,"40,7644",-73.9235,,
        greenpoint,,40.7304,-73.9515,,
        queens,Queens Cup,40.74,-73.79,,,extra
        ok,Fine Coffee,40.7000,-74.0100,,
        """
    )
    root = write(tmp_path / "rules", {"places/shops.csv": shops})
    f = f"{root}/places/shops.csv"
    assert errors_of(root) == [
        f"{f}:3: id is empty",
        f"{f}:4: lat 'forty' is not a number",
        f"{f}:5: lon is empty",
        f"{f}:6: lat 95.1 is outside -90..90",
        f"{f}:9: lon -200 is outside -180..180",
        f"{f}:10: duplicate id 'soho' (also line 2)",
        f"{f}:11: radius_m -5 must be a positive number of metres",
        f"{f}:12: radius_m 'wide' must be a positive number of metres",
        f"{f}:13: lat '40,7644' is not a number (write decimals with a dot: 40.7644)",
        f"{f}:14: name is empty",
        f"{f}:15: the row has 7 cells, the header 6",
    ]


def test_a_stray_quote_is_an_error_at_its_row_not_a_cell_that_swallows_the_rest(
    tmp_path: Path,
) -> None:
    shops = (
        "id,name,lat,lon\n"
        'joes,"Joe\'s" Coffee,40.7300,-73.9900\n'
        "soho,Soho Roasters,40.7233,-74.0030\n"
        'chelsea,"Chelsea Beans,40.7465,-74.0014\n'
        "midtown,Midtown Espresso,40.7549,-73.9840\n"
    )
    root = write(tmp_path / "rules", {"places/shops.csv": shops})
    f = f"{root}/places/shops.csv"
    assert errors_of(root) == [
        f"{f}:2: not valid CSV: ',' expected after '\"' (a quoted cell must end with its \"; "
        'write "" for a " in it)',
        f'{f}:4: a cell opened with " is never closed',
    ]


def test_a_lat_beyond_the_supported_85_degrees_is_an_error(tmp_path: Path) -> None:
    root = write(tmp_path / "rules", {"places/p.csv": "id,name,lat,lon\nnorth,Alert,86.5,-62.3\n"})
    assert errors_of(root) == [
        f"{root}/places/p.csv:2: lat 86.5 is beyond the supported +-85 degrees"
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("id,name,lon", "the header has no column 'lat' (it has: id, name, lon)"),
        (
            "ID,Name,Latitude,Longitude",
            "the header has no column 'lat', 'lon' (it has: ID, Name, Latitude, Longitude; "
            "rename 'Latitude' to lat, 'Longitude' to lon)",
        ),
        (
            "id;name;lat;lon",
            "the header is one column 'id;name;lat;lon': columns must be "
            "separated by commas, not ';' (save as \"CSV UTF-8 (Comma delimited)\")",
        ),
        ("id,name,lat,lon,name", "the header has the column 'name' twice"),
    ],
)
def test_a_bad_header_is_one_error_at_line_1(tmp_path: Path, header: str, message: str) -> None:
    root = write(tmp_path / "rules", {"places/p.csv": header + "\nx,X,40.7,-74.0,y\n"})
    assert errors_of(root) == [f"{root}/places/p.csv:1: {message}"]


def test_an_empty_csv_is_an_error_and_a_header_alone_a_warning(tmp_path: Path) -> None:
    root = write(tmp_path / "rules", {"places/p.csv": ""})
    assert errors_of(root) == [
        f"{root}/places/p.csv:1: the file is empty; the first line must be the header "
        "id,name,lat,lon"
    ]
    (root / "places" / "p.csv").write_text("id,name,lat,lon\n")
    assert load_ruleset(root).warnings == [
        f"{root}/places/p.csv:1: warning: no places",
        f"{root}:1: warning: no rule files (*.yaml) found",
    ]


def test_excel_csv_utf8_with_bom_and_crlf_is_accepted(tmp_path: Path) -> None:
    excel = "\ufeff" + SHOPS.replace("\n", "\r\n")
    # Excel's trailing rows of empty cells are not places.
    excel += ",,,,,,\r\n,,,,,,\r\n"
    rs = load_ruleset(write(tmp_path / "rules", {"places/shops.csv": excel, "near.yaml": RULE}))
    assert by_id(rs)["soho"][4]["id"] == "soho"
    assert len(rs.places) == 6
    assert rs.warnings == []


def test_a_sheet_saved_in_excels_older_csv_encoding_says_how_to_save_it(tmp_path: Path) -> None:
    root = write(tmp_path / "rules", {"near.yaml": RULE})
    # Excel's "CSV (Comma delimited)" writes Windows-1252, not UTF-8.
    (root / "places" / "shops.csv").write_bytes(SHOPS.encode("cp1252"))
    f = f"{root}/places/shops.csv"
    error = f'{f}:6: not UTF-8 text (in Excel: save as "CSV UTF-8 (Comma delimited)")'
    assert errors_of(root) == [
        error,
        f"{root}/near.yaml:4: where.places: 'places/shops.csv' has 1 error: {error}",
    ]


def test_an_id_in_a_csv_and_a_geojson_file_is_a_duplicate(tmp_path: Path) -> None:
    geo = {"type": "FeatureCollection", "features": [point("soho", 40.72, -74.0)]}
    root = write(
        tmp_path / "rules", {"places/a.geojson": json.dumps(geo), "places/shops.csv": SHOPS}
    )
    assert errors_of(root) == [
        f"{root}/places/shops.csv:2: duplicate id 'soho' (also {root}/places/a.geojson feature 0)"
    ]


def test_filters_match_csv_text_as_numbers_and_booleans_too(tmp_path: Path) -> None:
    shops = "id,name,lat,lon,floor,open_late\n" + "\n".join(
        f"s{i},Shop {i},40.7{i},-74.0{i},{floor},{late}"
        for i, (floor, late) in enumerate([("1", "TRUE"), ("2", "false"), ("02", "yes"), ("", "")])
    )
    rule = RULE.replace("places/shops.csv", "places/shops.csv\n  filter: {floor: 2}")
    late = RULE.replace("places/shops.csv", "places/shops.csv\n  filter: {open_late: true}")
    root = write(
        tmp_path / "rules", {"places/shops.csv": shops, "floor.yaml": rule, "late.yaml": late}
    )
    rs = load_ruleset(root)
    ids = {r.id: sorted(rs.places[i].id for i in r.place_idx) for r in rs.rules}
    assert ids == {"floor": ["s1", "s2"], "late": ["s0", "s2"]}


def test_a_row_with_lat_and_lon_swapped_warns_at_its_line(tmp_path: Path) -> None:
    swapped = SHOPS + "queens,Queens Cup,-73.9235,40.7644,,Astoria,\n"
    rs = load_ruleset(write(tmp_path / "rules", {"places/shops.csv": swapped, "near.yaml": RULE}))
    assert rs.warnings == [
        f"{tmp_path}/rules/places/shops.csv:8: warning: place 'queens' is 15,081 km from the "
        "median point of the 7 places in this file (40.7233, -73.9840), far from the rest; "
        "with lat and lon swapped it would be 7 km from it - are the lat and lon columns "
        "swapped?"
    ]


def test_geojson_in_a_json_file_is_a_places_file(tmp_path: Path) -> None:
    geo = {"type": "FeatureCollection", "features": [point("soho", 40.7233, -74.0030)]}
    rule = RULE.replace("shops.csv", "shops.json")
    root = write(tmp_path / "rules", {"places/shops.json": json.dumps(geo), "near.yaml": rule})
    rs = load_ruleset(root)
    assert [p.id for p in rs.places] == ["soho"]
    assert len(rs.rules[0].place_idx) == 1
    # Referenced from outside places/ too.
    (root / "places" / "shops.json").rename(root / "shops.json")
    (root / "near.yaml").write_text(RULE.replace("places/shops.csv", "shops.json"))
    assert [p.id for p in load_ruleset(root).places] == ["soho"]


def _without_unbacked_see_above(errors: list[str]) -> None:
    """No error may send the reader to errors "above" that are not there."""
    for i, e in enumerate(errors):
        assert "see above" not in e or any("places/" in earlier for earlier in errors[:i]), errors


@pytest.mark.parametrize("name", ["shops.csv", "shops.json"])
def test_a_rule_on_a_broken_places_file_names_that_files_error(tmp_path: Path, name: str) -> None:
    broken = "id;name;lat;lon\nsoho;Soho;40.7;-74.0\n" if name.endswith(".csv") else "{]"
    rule = RULE.replace("shops.csv", name)
    root = write(tmp_path / "rules", {f"places/{name}": broken, "near.yaml": rule})
    errors = errors_of(root)
    _without_unbacked_see_above(errors)
    first = errors[0]
    assert first.startswith(f"{root}/places/{name}:1: "), errors
    assert errors[1:] == [f"{root}/near.yaml:4: where.places: 'places/{name}' has 1 error: {first}"]


def test_a_rule_on_a_file_that_is_no_places_file_says_which_are(tmp_path: Path) -> None:
    rule = RULE.replace("shops.csv", "shops.xlsx")
    root = write(tmp_path / "rules", {"places/shops.xlsx": "PK...", "near.yaml": rule})
    assert errors_of(root) == [
        f"{root}/near.yaml:4: where.places: 'places/shops.xlsx' is not a places file; "
        "use .csv (id,name,lat,lon) or GeoJSON (.geojson or .json)"
    ]


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def _check(cwd: Path, *args: str) -> Done:
    """`momentcast rules check` as a real process, the way a marketer runs it."""
    proc = start(["rules", "check", *args], {}, cwd=cwd)
    out, err = proc.proc.communicate(timeout=120)
    return Done(proc.proc.returncode, out, err)


def test_rules_check_reports_a_bad_row_at_file_line(tmp_path: Path) -> None:
    bad = SHOPS.replace("40.7465,-74.0014", "40.7465,74.0014O")
    root = write(tmp_path / "rules", {"places/shops.csv": bad, "near.yaml": RULE})
    done = _check(tmp_path, str(root))
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == [
        f"{root}/places/shops.csv:3: lon '74.0014O' is not a number",
        "1 error(s), 0 warnings; nothing was changed",
    ]
    # Checking the rule file alone: the places error is in another file, and the rule's own
    # error names it instead of pointing "above" at nothing - in --json too.
    (root / "places" / "shops.csv").write_text("id;name;lat;lon\n")
    done = _check(tmp_path, str(root / "near.yaml"), "--json")
    assert done.returncode == 1, done
    doc = json.loads(done.stdout)
    [error] = doc["errors"]
    assert "see above" not in error["message"], error
    assert error == {
        "file": f"{root}/near.yaml",
        "line": 4,
        "message": f"where.places: 'places/shops.csv' has 1 error: {root}/places/shops.csv:1: "
        "the header is one column 'id;name;lat;lon': columns must be separated by commas, "
        "not ';' (save as \"CSV UTF-8 (Comma delimited)\")",
    }
    # And a good sheet checks clean.
    (root / "places" / "shops.csv").write_text(SHOPS)
    done = _check(tmp_path, str(root), "--strict")
    assert done.returncode == 0, done
    assert done.stdout.splitlines()[-1] == "1 rule OK, 0 warnings"


def test_an_edited_csv_is_noticed_by_the_hot_reload(tmp_path: Path) -> None:
    root = write(tmp_path / "rules", {"places/shops.csv": SHOPS, "near.yaml": RULE})
    holder = RulesHolder(root)
    assert holder.current is not None and len(holder.current.places) == 6
    assert holder.poll() is None
    (root / "places" / "shops.csv").write_text(SHOPS + "dumbo,Dumbo Coffee,40.7033,-73.9881,,,\n")
    assert holder.poll() == []
    assert len(holder.current.places) == 7


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list('id,name,lat,lon,radius_m\n\r";\t 0123456789.-eEx\x00\ufeff'))
    )
)
def test_any_text_gives_places_or_errors_at_lines_of_the_file(body: str) -> None:
    for text in (body, "id,name,lat,lon,radius_m\n" + body):
        found = parse_places_csv(text, "f.csv")
        last = len(text.splitlines()) + 1
        assert all(1 <= line <= last for line, _ in [*found.errors, *found.warnings]), found
        assert all(p.line is not None and 1 < p.line <= last for p in found.places)
