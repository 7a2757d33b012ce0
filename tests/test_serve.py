"""`momentcast serve` as `make run` starts it: embedded database, keys, banner, clean stop."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import asyncpg
import psutil
import pytest

from service import __version__
from tests.processes import REPO, start


def _get(url: str) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


@pytest.mark.slow
def test_serve_with_embedded_database_keeps_data_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "MOMENTCAST_DATA_DIR": str(data),
        "MOMENTCAST_PORT": "0",
        "MOMENTCAST_RULES_DIR": str(REPO / "rules"),
    }
    first = start(["serve"], env)
    try:
        first.wait_banner()
        assert first.url is not None
        status, body = _get(first.url + "/healthz")
        assert (status, body) == (200, {"status": "ok", "version": __version__})
        _, key = _get(first.url + "/v1/vapid-public-key")
        banner = "\n".join(first.stdout_lines)
        assert f"VAPID public key: {key['public_key']}" in banner
        assert f"admin token: in {(data / 'admin_token').resolve()}" in banner
        assert (data / "admin_token").stat().st_mode & 0o777 == 0o600
        postmaster = int((data / "pg" / "postmaster.pid").read_text().split()[0])
    finally:
        code = first.stop(signal.SIGINT)
    assert code == 0, first.stderr()
    assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == "zombie"
    assert not (data / "pg" / "postmaster.pid").exists()

    second = start(["serve"], env)
    try:
        second.wait_banner()
        assert second.url is not None
        _, again = _get(second.url + "/v1/vapid-public-key")
        assert again == key
    finally:
        assert second.stop() == 0, second.stderr()


@pytest.mark.slow
def test_worker_starts_connects_and_stops_on_sigterm(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    env = {
        "MOMENTCAST_DATA_DIR": str(tmp_path / "d"),
        "MOMENTCAST_DATABASE_URL": database_url,
        "MOMENTCAST_RULES_DIR": str(REPO / "rules"),
    }
    worker = start(["worker"], env)
    worker.wait_banner()
    assert not any("listening" in line for line in worker.stdout_lines)
    assert worker.stop(signal.SIGTERM) == 0, worker.stderr()


def test_migrate_command_is_idempotent(tmp_path: Path, database_url: str) -> None:
    env = {"MOMENTCAST_DATA_DIR": str(tmp_path / "d"), "MOMENTCAST_DATABASE_URL": database_url}
    proc = start(["migrate"], env)
    out, err = proc.proc.communicate(timeout=60)
    assert proc.proc.returncode == 0, err
    assert out.strip() == "database is up to date"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--processes", "0"],
            {},
            "--processes: must be a whole number from 1 to 1024 or auto, not '0'",
        ),
        (
            ["--processes", "lots"],
            {},
            "--processes: must be a whole number from 1 to 1024 or auto, not 'lots'",
        ),
        (
            [],
            {"MOMENTCAST_PROCESSES": "-3"},
            "MOMENTCAST_PROCESSES: must be a whole number from 1 to 1024 or auto, not '-3'",
        ),
    ],
)
def test_a_bad_processes_value_stops_with_one_line_naming_it(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    proc = start(["serve", *args], {"MOMENTCAST_DATA_DIR": str(tmp_path / "d"), **env})
    out, err = proc.proc.communicate(timeout=60)
    assert proc.proc.returncode == 2, err
    assert err.splitlines() == [f"momentcast: configuration error: {message}"], err
    assert out == ""
