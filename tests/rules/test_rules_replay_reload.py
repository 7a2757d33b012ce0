"""Replay of the checked-in trace, the CLI, and hot reload keeping the old set."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from service.cli.rules import main
from service.reload.holder import RulesHolder
from service.rules.replay import replay
from tests.rules.rulekit import POLICY, write_dir

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def test_replay_matches_the_checked_in_report() -> None:
    report = replay(
        str(REPO / "rules"), str(DATA / "replay-berlin.csv"), str(DATA / "replay-profile.yaml")
    )
    expected = json.loads((DATA / "replay-berlin.expected.json").read_text())
    # The digest changes with any byte of rules/ (comments too); the rows are the contract.
    report.pop("rules_version")
    expected.pop("rules_version")
    assert report == expected
    sent = [r["decision"]["rule"] for r in report["rows"] if r["decision"]]
    assert sent == ["lunch-nearby", "buy-store", "go-station", "do-diy"]
    assert report["rows"][-1]["note"] == "out_of_order"


def test_replay_cli_text_and_formats(tmp_path: Path) -> None:
    out = io.StringIO()
    code = main(
        [
            "replay",
            str(DATA / "replay-berlin.csv"),
            "--profile",
            str(DATA / "replay-profile.yaml"),
            "--rules",
            str(REPO / "rules"),
        ],
        out=out,
    )
    text = out.getvalue()
    assert code == 0
    assert "SEND lunch-nearby @ rest-02" in text
    assert text.rstrip().endswith(
        "17 signals, 4 pushes, suppressed: global_cap 2, min_gap 2, quiet_hours 1; "
        "matched but silent: not_triggered 2"
    )
    assert "[matched, lunch-nearby@rest-02: not_triggered]" in text
    # The same walk as GeoJSON points and as GPX gives the same decisions.
    rows = [
        line.split(",")
        for line in (DATA / "replay-berlin.csv").read_text().splitlines()
        if line and line[0].isdigit()
    ]
    feats = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [float(r[1]), float(r[0])]},
            "properties": {
                "time": r[2],
                "accuracy_m": r[3],
                "speed_mps": r[4],
                "moment": r[5] or None,
            },
        }
        for r in rows
    ]
    gj = tmp_path / "walk.geojson"
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    a = replay(str(REPO / "rules"), str(gj), str(DATA / "replay-profile.yaml"))
    b = replay(
        str(REPO / "rules"), str(DATA / "replay-berlin.csv"), str(DATA / "replay-profile.yaml")
    )
    assert a["rows"] == b["rows"]
    gpx = tmp_path / "walk.gpx"
    pts = "".join(f'<trkpt lat="{r[0]}" lon="{r[1]}"><time>{r[2]}</time></trkpt>' for r in rows[:2])
    gpx.write_text(
        '<?xml version="1.0"?><gpx version="1.1" creator="t" '
        'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        f"{pts}</trkseg></trk></gpx>"
    )
    g = replay(str(REPO / "rules"), str(gpx), str(DATA / "replay-profile.yaml"))
    assert [r["decision"]["rule"] if r["decision"] else None for r in g["rows"]] == [
        None,
        "lunch-nearby",
    ]


def test_check_cli_exit_codes(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(REPO / "rules")], out=out, err=err) == 0
    lines = out.getvalue().splitlines()
    # Each rule's summary and description, then the count.
    assert len(lines) == 13 and lines[-1] == "6 rules OK, 0 warnings"
    bad = write_dir(
        tmp_path / "bad",
        {"r.yaml": "where: {places: places/spots.geojson}\nmessage: {title: x, ttl: soon}\n"},
    )
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(bad), "--json"], out=out, err=err) == 1
    doc = json.loads(out.getvalue())
    assert doc["ok"] is False
    assert {
        "file": f"{bad}/r.yaml",
        "line": 2,
        "message": "message.ttl: bad duration 'soon': use a number and a unit s, m, h, d "
        "or w (30s, 20m, 2h, 7d)",
    } in doc["errors"]


def test_schema_cli() -> None:
    out = io.StringIO()
    assert main(["schema"], out=out) == 0
    schema = json.loads(out.getvalue())
    assert "where" in schema["properties"] and schema["additionalProperties"] is False


def test_reload_with_a_broken_file_keeps_the_old_set(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    shutil.copytree(REPO / "rules", root)
    holder = RulesHolder(root)
    first = holder.current
    assert first is not None and holder.last_errors == []
    assert holder.poll() is None  # nothing changed
    (root / "lunch-nearby.yaml").write_text("priority: [\n")
    errors = holder.reload()
    assert len(errors) == 1 and errors[0].startswith(f"{root}/lunch-nearby.yaml:2: not valid YAML")
    assert holder.current is first and holder.last_errors == errors
    (root / "lunch-nearby.yaml").unlink()
    assert holder.poll() == []
    assert holder.current is not first and holder.last_errors == []
    assert "lunch-nearby" not in {r.id for r in holder.current.rules}


def test_policy_is_required(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "r", {}, policy=POLICY)
    (root / "policy.yaml").unlink()
    holder = RulesHolder(root)
    assert holder.current is None
    assert holder.last_errors == [
        f"{root}/policy.yaml:1: policy.yaml is missing (dayparts, quiet_hours, limits)"
    ]


@pytest.mark.parametrize("bad", ["lat,lon\n", "52.5,13.4,yesterday\n"])
def test_bad_trace_is_reported(tmp_path: Path, bad: str) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(bad)
    err = io.StringIO()
    assert main(["replay", str(trace), "--rules", str(REPO / "rules")], err=err) == 1
    assert str(trace) in err.getvalue()
