"""An operator's first hour: the installed command, a start with no rules that is still ready
and says how to get some, `rules init` for a starter set, a liveness probe for workers."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from service.cli import rules as rules_cli
from service.reload import watch as reloader
from service.reload.holder import RulesHolder
from service.rules.engine import decide
from service.rules.signals import Profile, Signal
from tests.conftest import ADMIN_TOKEN
from tests.processes import REPO, ServiceProcess, http_get, start, wait_ready

README = REPO / "README.md"


def _env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    # No MOMENTCAST_RULES_DIR unless a test gives one: start() drops the caller's.
    return {
        "MOMENTCAST_DATABASE_URL": database_url,
        "MOMENTCAST_DATA_DIR": str(tmp_path / "data"),
        "MOMENTCAST_PORT": "0",
        "MOMENTCAST_PUSH_HOSTS": "http://127.0.0.1",
        # /metrics on the public port answers only to the admin token.
        "MOMENTCAST_ADMIN_TOKEN": ADMIN_TOKEN,
        **extra,
    }


def _serve_until_ready(
    env: dict[str, str], cwd: Path, then: Callable[[str], None] | None = None
) -> list[str]:
    """Start `serve`, wait for /readyz 200, run ``then(url)``, stop it; its log lines."""
    proc: ServiceProcess = start(["serve"], env, cwd=cwd)
    try:
        proc.wait_banner()
        assert proc.url is not None
        wait_ready(proc.url)
        if then is not None:
            then(proc.url)
    finally:
        assert proc.stop() == 0, proc.stderr()
    return proc.stderr().splitlines()


def _the_warning(lines: list[str]) -> str:
    found = [line for line in lines if "rules init" in line]
    assert len(found) == 1, "\n".join(lines)
    assert not any("previous set stays active" in line for line in lines), "\n".join(lines)
    return found[0]


@pytest.mark.slow
def test_serve_with_no_rules_folder_is_ready_and_says_how_to_get_rules(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    warning = _the_warning(_serve_until_ready(_env(tmp_path, database_url), cwd))
    assert "WARNING" in warning
    assert "empty rule set" in warning
    assert "MOMENTCAST_RULES_DIR" in warning
    assert "momentcast rules init rules" in warning


@pytest.mark.slow
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_configured_rules_dir_that_is_missing_or_empty_starts_empty_and_names_it(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool, state: str
) -> None:
    rules = tmp_path / "my-rules"
    if state == "empty":
        rules.mkdir()
    env = _env(tmp_path, database_url, MOMENTCAST_RULES_DIR=str(rules))

    def init_while_running(url: str) -> None:
        # What the warning says to do, with the service running: the poll loads the set.
        assert rules_cli.main(["init", str(rules)], io.StringIO(), io.StringIO()) == 0
        deadline = time.monotonic() + 60
        while "momentcast_rules_loaded 1.0" not in http_get(url + "/metrics", ADMIN_TOKEN)[1]:
            assert time.monotonic() < deadline, "the starter set was never loaded"
            time.sleep(0.2)

    lines = _serve_until_ready(env, tmp_path, init_while_running)
    warning = _the_warning(lines)
    assert f"MOMENTCAST_RULES_DIR: {rules} " in warning
    assert ("does not exist" if state == "missing" else "is empty") in warning
    assert f"momentcast rules init {rules}" in warning
    assert any("rules loaded: 1 rules" in line for line in lines), lines


def test_the_engine_decides_over_an_empty_rule_set(tmp_path: Path) -> None:
    # Signals keep coming while no rules are written yet: nothing fires, nothing fails.
    holder = RulesHolder(tmp_path / "none", load_now=False)
    assert holder.is_empty()
    holder.start_empty()
    assert holder.current is not None and holder.current.rules == []
    assert holder.poll() is None  # nothing changed: no reload, no error
    now = datetime.now(UTC)
    signals = [
        Signal("sub-1", 40.7243, -74.0011, now, accuracy_m=20),
        Signal("sub-1", None, None, now + timedelta(seconds=1)),
    ]
    outcomes = decide(holder.current, signals, {"sub-1": Profile("sub-1")}, {}, now=now)
    assert len(outcomes) == 2
    assert all(o.applied and o.decision is None and not o.fired for o in outcomes)


def test_rules_init_writes_a_starter_set_that_rules_check_accepts(tmp_path: Path) -> None:
    target = tmp_path / "shop" / "rules"  # parents are created too
    out, err = io.StringIO(), io.StringIO()
    assert rules_cli.main(["init", str(target)], out, err) == 0, err.getvalue()
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert "policy.yaml" in written
    assert any(re.fullmatch(r"places/[\w-]+\.geojson", name) for name in written), written
    rule_files = [n for n in written if "/" not in n and n != "policy.yaml"]
    assert len(rule_files) == 1, written
    assert f"momentcast rules check {target}" in out.getvalue()

    out, err = io.StringIO(), io.StringIO()
    assert rules_cli.main(["check", "--strict", str(target)], out, err) == 0, (
        out.getvalue() + err.getvalue()
    )
    # The example is a location rule with places to edit, not an empty shell.
    holder = RulesHolder(target)
    assert holder.current is not None
    assert len(holder.current.rules) == 1 and len(holder.current.places) >= 2
    assert not holder.current.rules[0].location_free


@pytest.mark.parametrize("what", ["a file inside", "a file in the way"])
def test_rules_init_refuses_what_it_would_overwrite(tmp_path: Path, what: str) -> None:
    target = tmp_path / "rules"
    if what == "a file inside":
        target.mkdir()
        (target / "policy.yaml").write_text("mine\n")
    else:
        target.write_text("not a folder\n")
    out, err = io.StringIO(), io.StringIO()
    code = rules_cli.main(["init", str(target)], out, err)
    assert code == 1
    assert out.getvalue() == ""
    [line] = err.getvalue().splitlines()
    assert str(target) in line
    if what == "a file inside":
        assert "not empty" in line
        assert (target / "policy.yaml").read_text() == "mine\n"  # untouched
    else:
        assert "not a folder" in line


async def test_a_rejected_first_load_does_not_speak_of_a_previous_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "policy.yaml").write_text("limits: [\n")
    holder = RulesHolder(rules, load_now=False)
    with caplog.at_level(logging.ERROR, logger="service.reload.watch"):
        assert await reloader.reload_rules(holder)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("previous set" in m for m in messages), messages
    assert any("no rule set is active" in m for m in messages), messages


def _setup_section(text: str) -> str:
    start = text.index("## Quickstart")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_says_how_to_run_the_installed_command() -> None:
    # `make run` installs `momentcast` into .venv/bin only; every doc's examples use it bare.
    setup = _setup_section(README.read_text(encoding="utf-8"))
    assert ". .venv/bin/activate" in setup
    assert ".venv/bin/momentcast" in setup
