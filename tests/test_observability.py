"""What an operator reads and scrapes: JSON logs, the version, /metrics off the public port."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from service import __version__
from service.logs import JsonFormatter
from tests.processes import REPO, ServiceProcess, start

_METRICS = re.compile(r"metrics on (http://\S+/metrics)")


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "service.push.sender", logging.WARNING, "/src/service/push/sender.py", 42,
        "origin %s paused for %ss", ("https://fcm.googleapis.com", 30), None,
    )  # fmt: skip
    record.__dict__.update(extra)
    return record


def test_json_logs_are_one_object_a_line_with_extra_fields() -> None:
    line = JsonFormatter().format(_record(origin="https://fcm.googleapis.com", pause_s=30))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry == {
        "time": entry["time"],
        "level": "WARNING",
        "logger": "service.push.sender",
        "message": "origin https://fcm.googleapis.com paused for 30s",
        "origin": "https://fcm.googleapis.com",
        "pause_s": 30,
    }
    assert entry["time"].endswith("Z")
    datetime.fromisoformat(entry["time"])  # RFC 3339, UTC


def test_json_logs_never_carry_locations_and_keep_tracebacks_on_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(lat=52.52191, lon=13.41321, accuracy_m=5, where=object())
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert "lat" not in entry and "lon" not in entry and "52.5219" not in line
    assert "pathname" not in entry and "lineno" not in entry  # no source locations either
    assert entry["accuracy_m"] == 5
    assert isinstance(entry["where"], str)  # what json cannot encode is written as text
    assert entry["exc"].startswith("Traceback") and "RuntimeError: boom" in entry["exc"]


def test_version_flag_prints_the_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"momentcast {__version__}\n"


def _env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "MOMENTCAST_DATABASE_URL": database_url,
        "MOMENTCAST_DATA_DIR": str(tmp_path / "data"),
        "MOMENTCAST_RULES_DIR": str(REPO / "rules"),
        "MOMENTCAST_PORT": "0",
        "MOMENTCAST_PUSH_HOSTS": "http://127.0.0.1",
        **extra,
    }


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metrics_url(proc: ServiceProcess) -> str:
    found = [m.group(1) for line in proc.stdout_lines if (m := _METRICS.search(line))]
    assert len(found) == 1, proc.stdout_lines
    return found[0]


@pytest.mark.slow
def test_json_log_format_of_a_real_process(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    proc = start(["worker"], _env(tmp_path, database_url, MOMENTCAST_LOG_FORMAT="json"))
    try:
        proc.wait_banner()
    finally:
        assert proc.stop() == 0
    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries), entries
    [started] = [e for e in entries if " started: " in e["message"]]
    assert started["version"] == __version__
    assert started["components"] == ["fanout", "rules-watch", "sender", "worker"]
    assert started["database"] == "external"
    [stopping] = [e for e in entries if e["message"].startswith("momentcast stopping")]
    assert stopping["reason"] == "SIGTERM"


@pytest.mark.slow
def test_metrics_port_takes_metrics_off_the_public_port(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    proc = start(["serve"], _env(tmp_path, database_url, MOMENTCAST_METRICS_PORT="0"))
    try:
        proc.wait_banner()
        assert proc.url is not None
        metrics = _metrics_url(proc)
        assert metrics.startswith("http://127.0.0.1:")
        assert not metrics.startswith(proc.url)
        status, body = _get(proc.url + "/metrics")
        assert status == 404, body
        assert json.loads(body)["error"]["code"] == "not_found"
        assert _get(proc.url + "/healthz")[0] == 200
        status, body = _get(metrics)
        assert status == 200
        assert 'momentcast_http_requests_total{method="GET",route="/healthz",status="200"}' in body
        # The metrics port serves metrics and liveness only.
        assert _get(metrics.removesuffix("/metrics") + "/healthz")[0] == 200
        assert _get(metrics.removesuffix("/metrics") + "/readyz")[0] == 404
    finally:
        assert proc.stop() == 0, proc.stderr()


@pytest.mark.slow
def test_a_worker_serves_its_metrics_on_the_metrics_port(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    proc = start(["worker"], _env(tmp_path, database_url, MOMENTCAST_METRICS_PORT="0"))
    try:
        proc.wait_banner()
        assert proc.url is None  # no API
        status, body = _get(_metrics_url(proc))
        assert status == 200
        assert "momentcast_signals_processed_total" in body
        # A worker has no API: its liveness probe is on the metrics port.
        status, body = _get(_metrics_url(proc).removesuffix("/metrics") + "/healthz")
        assert status == 200, body
        assert json.loads(body) == {"status": "ok", "version": __version__}
    finally:
        assert proc.stop() == 0, proc.stderr()
