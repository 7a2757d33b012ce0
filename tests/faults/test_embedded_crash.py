"""The embedded PostgreSQL after crashes: a SIGKILLed momentcast leaves no server behind once
it is restarted and stopped, and a server that dies under a running momentcast stops it with
an error (so a supervisor restarts both) instead of leaving it degraded."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.processes import REPO, ServiceProcess, start

pytestmark = pytest.mark.slow

# The data directories are under short_tmp, not pytest's tmp_path: as root the embedded
# server runs as a user of its own, which must traverse every parent, and each pytest
# session that starts (another one on the same machine) resets /tmp/pytest-of-root to 0700,
# so initdb or pg_ctl failed with "Permission denied" now and then.


def _serve(data: Path) -> ServiceProcess:
    proc = start(
        ["serve"],
        {
            "MOMENTCAST_DATA_DIR": str(data),
            "MOMENTCAST_PORT": "0",
            "MOMENTCAST_RULES_DIR": str(REPO / "rules"),
        },
    )
    proc.wait_banner()
    return proc


def _postmaster(data: Path) -> int:
    return int((data / "pg" / "postmaster.pid").read_text().split()[0])


def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie":
            return True
        time.sleep(0.1)
    return False


def test_kill_9_then_restart_and_clean_stop_leaves_no_postgres(short_tmp: Path) -> None:
    data = short_tmp / "data"
    first = _serve(data)
    first.proc.kill()
    first.proc.wait(10)
    second = _serve(data)
    postmaster = _postmaster(data)
    assert second.stop(signal.SIGTERM) == 0, second.stderr()
    assert _gone(postmaster), "the embedded PostgreSQL outlived a clean stop"


def test_embedded_postgres_dying_stops_momentcast_with_an_error(short_tmp: Path) -> None:
    data = short_tmp / "data"
    serve = _serve(data)
    try:
        psutil.Process(_postmaster(data)).kill()
        code = serve.proc.wait(30)
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait(10)
    err = serve.stderr()
    assert code == 1, err
    assert "component embedded-postgres" in err
