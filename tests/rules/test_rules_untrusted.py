"""Rule files are untrusted text: whatever bytes a file holds, loading it ends in a rule set
or in RuleLoadError with `file:line: message`, quickly and in little memory. No other
exception type leaves the loader (a RecursionError or an IndexError would take the hot
reloader, the admin endpoint and the start-up down)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import SourceError
from service.rules import RuleLoadError, load_ruleset
from service.rules.source import MAX_SOURCE_BYTES, load_located
from tests.rules.rulekit import POLICY, point, write_dir

RULE = """\
priority: 1
trigger: signal
message: {title: Hi, ttl: 10m}
"""

# Each level refers nine times to the one before: 9^9 (387 million) leaves from a file of
# a few hundred bytes.
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join(['*' + before] * 9)}]\n"
    for before, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def load_errors(root: Path) -> list[str]:
    started = time.monotonic()
    with pytest.raises(RuleLoadError) as exc:
        load_ruleset(root)
    assert time.monotonic() - started < 60
    return exc.value.errors


def rule_errors(tmp_path: Path, text: str | bytes, name: str = "bad.yaml") -> list[str]:
    root = write_dir(tmp_path / "rules", {"good.yaml": RULE})
    target = root / name
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text)
    return load_errors(root)


def test_a_recursive_alias_is_refused_at_its_line(tmp_path: Path) -> None:
    errors = rule_errors(tmp_path, RULE + "extra: &a [*a]\n")
    assert errors == [
        f"{tmp_path}/rules/bad.yaml:4: YAML anchors (&a) are not allowed; write the value out"
    ]


def test_nested_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    assert len(LAUGHS) < 400
    [error] = rule_errors(tmp_path, LAUGHS)
    assert error.startswith(f"{tmp_path}/rules/bad.yaml:1: YAML anchors (&a) are not allowed")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("priority: 1\nwho: *who\n", 2, "YAML aliases (*who) are not allowed"),
        ("priority: &p 1\n", 1, "YAML anchors (&p) are not allowed"),
        (
            "priority: 1\nmessage:\n  <<: {title: Hi}\n  ttl: 10m\n",
            3,
            "YAML merge keys (<<) are not allowed",
        ),
        ("message: !!python/object:os.system {}\n", 1, "not allowed"),
    ],
)
def test_anchors_aliases_merge_keys_and_tags_are_refused(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    [error] = rule_errors(tmp_path, text)
    assert error.startswith(f"{tmp_path}/rules/bad.yaml:{line}: "), error
    assert message in error


def test_policy_yaml_is_untrusted_too(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "rules", {"good.yaml": RULE})
    (root / "policy.yaml").write_text(POLICY + "quiet_hours: &q {start: '22:00', end: '07:00'}\n")
    [error] = load_errors(root)
    assert error.startswith(f"{root}/policy.yaml:5: YAML anchors (&q) are not allowed")


def test_a_file_over_one_mebibyte_is_refused_before_parsing(tmp_path: Path) -> None:
    # Parsed, the nesting would be an error of its own: the size alone refuses the file.
    body = RULE + "x: " + "[" * MAX_SOURCE_BYTES + "\n"
    errors = rule_errors(tmp_path, body)
    assert errors == [
        f"{tmp_path}/rules/bad.yaml:1: the file has {len(body.encode())} bytes; "
        f"a rules file may have at most {MAX_SOURCE_BYTES} (1 MiB)"
    ]
    assert MAX_SOURCE_BYTES == 1 << 20


def test_a_file_of_exactly_one_mebibyte_is_read(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "rules", {"good.yaml": RULE})
    padding = "#" * (MAX_SOURCE_BYTES - len(RULE) - 1)
    (root / "good.yaml").write_text(RULE + padding + "\n")
    assert (root / "good.yaml").stat().st_size == MAX_SOURCE_BYTES
    assert [r.id for r in load_ruleset(root).rules] == ["good"]


def test_the_largest_file_parses_in_bounded_time(tmp_path: Path) -> None:
    # About 350k values in one list just under the limit: seconds with libyaml's parser
    # (PyYAML's own took over half a minute on a loaded machine). Generous: no tight timing.
    items = "a, " * ((MAX_SOURCE_BYTES - len(RULE) - 20) // 3)
    started = time.monotonic()
    [error] = rule_errors(tmp_path, RULE + f"tags: [{items}a]\n")
    assert time.monotonic() - started < 60
    assert "unknown key 'tags'" in error


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("x: " + "[" * 100_000, 1, "nest"),
        ("x: " + "{a: " * 50_000, 1, "nested more than"),
        ("x:\n" + "".join(" " * i + "- \n" for i in range(0, 2000, 2)), 65, "nested more than"),
        (b"priority: 1\n\xff\xfe junk\n", 2, "not UTF-8 text"),
        (bytes(range(256)), 2, "not UTF-8 text"),
        ("- a\n- b\n", 1, "the file must be a mapping"),
        ("just a sentence\n", 1, "the file must be a mapping"),
        ("priority: 1" + "0" * 5000 + "\n", 1, "bad value '1000"),
        ("priority: 1" + "0" * 30 + "\n", 1, "priority: Input should be less than or equal to"),
        ("priority: 1\nmessage: {title: Hi, ttl: " + "9" * 400 + "d}\n", 2, "ttl"),
        ("? [a, b]\n: 1\n", 1, "mapping keys must be plain"),
        ("priority: 1\npriority: 2\n", 2, "duplicate key"),
        ("\x00\x01\x02", 1, ""),
        ("\ufeffpriority: 1\n", 1, "missing required key"),
    ],
)
def test_malformed_rule_files_give_file_line_errors(
    tmp_path: Path, text: str | bytes, line: int, message: str
) -> None:
    errors = rule_errors(tmp_path, text)
    assert errors, "a broken file must be an error"
    assert errors[0].startswith(f"{tmp_path}/rules/bad.yaml:{line}: "), errors
    assert message in errors[0]


def test_malformed_places_files_are_errors_too(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "rules", {"good.yaml": RULE}, places={"spots": [point("a", 1, 2)]})
    deep = '{"type": "FeatureCollection", "features": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (root / "places" / "deep.geojson").write_text(deep)
    (root / "places" / "junk.geojson").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "places" / "bad.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [{"geometry": [[[[]]]]}]})
    )
    errors = load_errors(root)
    files = sorted(e.split(":", 1)[0].rsplit("/", 1)[1] for e in errors)
    assert files == ["bad.geojson", "deep.geojson", "junk.geojson"], errors


# --- fuzzing -----------------------------------------------------------------------------

# Pieces of YAML's syntax, so random text reaches the parser's corners rather than
# failing on its first character.
PIECES = [
    *"\n\n  -:,[]{}&*!|>'\"#?%@`\\\t",
    "<<: ",
    "&a ",
    "*a",
    "!!python/object:os.system ",
    "!!binary ",
    "!!set ",
    "!!timestamp ",
    "!!int ",
    "!!float ",
    "!!map ",
    "!!omap ",
    "--- ",
    "...",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "priority: ",
    "trigger: signal\n",
    "message: {title: Hi, ttl: 10m}\n",
    "where: {places: places/spots.geojson, radius_m: 50}\n",
    "who: ",
    "when: ",
    "between: ",
    "dayparts: [lunch]\n",
    "9" * 30,
    "1e400",
    ".nan",
    "2026-13-45",
    "\ud800",
    "\x85",
    "\u2028",
    "\ufeff",
]

yamlish = st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=60).map("".join)
FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(st.binary(max_size=300) | yamlish.map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_no_bytes_in_a_rule_file_raise_anything_but_a_load_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dir(Path(tmp) / "rules", {"good.yaml": RULE})
        (root / "fuzz.yaml").write_bytes(content)
        try:
            load_ruleset(root)
        except RuleLoadError as exc:
            assert all(e.startswith(f"{root}/") for e in exc.errors), exc.errors
        shutil.rmtree(root)


@FUZZ
@given(yamlish)
def test_no_text_makes_the_source_parser_raise_anything_but_source_error(text: str) -> None:
    try:
        load_located(text)
    except SourceError as exc:
        assert exc.line >= 1


@FUZZ
@given(yamlish)
def test_no_text_in_policy_yaml_raises_anything_but_a_load_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dir(Path(tmp) / "rules", {"good.yaml": RULE})
        (root / "policy.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            load_ruleset(root)
        except RuleLoadError as exc:
            assert all(e.startswith(f"{root}/") for e in exc.errors), exc.errors
