"""Start-up as an operator meets it: a bad setting is one line on stderr and exit 2, warnings
name what to fix, and every command reads `.env`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.processes import REPO, start


def _run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = start(args, env, cwd=cwd)
    out, err = proc.proc.communicate(timeout=120)
    return proc.proc.returncode, out, err


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "MOMENTCAST_DATABASE_URL": database_url,
        "MOMENTCAST_DATA_DIR": str(tmp_path / "data"),
        "MOMENTCAST_RULES_DIR": str(REPO / "rules"),
        **extra,
    }


def test_a_port_in_use_is_one_line_and_exit_2(
    tmp_path: Path, database_url: str, busy_port: int
) -> None:
    env = _env(tmp_path, database_url, MOMENTCAST_PORT=str(busy_port))
    code, _, err = _run(["api"], env, tmp_path)
    assert code == 2, err
    line = _one_error_line(err)
    assert line == (
        f"momentcast: configuration error: MOMENTCAST_PORT: cannot listen on "
        f"127.0.0.1:{busy_port}: the address is in use (another process listens there)"
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("no-such-host.invalid", "MOMENTCAST_HOST: cannot resolve 'no-such-host.invalid'"),
        ("192.0.2.1", "MOMENTCAST_HOST: cannot listen on 192.0.2.1:"),
    ],
)
def test_a_bad_host_is_one_line_and_exit_2(
    tmp_path: Path, database_url: str, host: str, expected: str
) -> None:
    env = _env(tmp_path, database_url, MOMENTCAST_HOST=host, MOMENTCAST_PORT="0")
    code, _, err = _run(["serve"], env, tmp_path)
    assert code == 2, err
    line = _one_error_line(err)
    assert line.startswith("momentcast: configuration error: " + expected), line


def test_pool_min_above_max_is_one_line_and_exit_2(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url, MOMENTCAST_DB_POOL_MIN="5", MOMENTCAST_DB_POOL_MAX="2")
    code, _, err = _run(["worker"], env, tmp_path)
    assert code == 2, err
    assert _one_error_line(err) == (
        "momentcast: configuration error: "
        "MOMENTCAST_DB_POOL_MAX: must be at least MOMENTCAST_DB_POOL_MIN (5)"
    )


def test_a_shutdown_grace_shorter_than_a_send_is_one_line_and_exit_2(
    tmp_path: Path, database_url: str
) -> None:
    # 10 s was the old default: shorter than one send (5 s connect + 15 s read), so a stop cut
    # POSTs in flight and a restart sent them again.
    env = _env(tmp_path, database_url, MOMENTCAST_SHUTDOWN_GRACE="10", MOMENTCAST_PORT="0")
    proc = start(["serve"], env, cwd=tmp_path)
    try:
        _, err = proc.proc.communicate(timeout=60)
    finally:
        if proc.proc.poll() is None:  # it started: the grace was not refused
            proc.stop()
    assert proc.proc.returncode == 2, err
    assert _one_error_line(err) == (
        "momentcast: configuration error: MOMENTCAST_SHUTDOWN_GRACE: 10s is shorter than one "
        "push send and its outcome's write (MOMENTCAST_PUSH_CONNECT_TIMEOUT 5s + "
        "MOMENTCAST_PUSH_READ_TIMEOUT 15s + 5s), so a stop could cut a push in flight and "
        "send it twice; set at least 25s"
    )


def test_migrate_reads_dotenv_and_warns_about_unknown_names_once(
    tmp_path: Path, database_url: str
) -> None:
    (tmp_path / ".env").write_text(
        f"MOMENTCAST_DATABASE_URL={database_url}\nMOMENTCAST_DATA_DIR={tmp_path / 'data'}\n"
        "MOMENTCAST_SECRETKEY=not-a-setting-name\n"
    )
    code, out, err = _run(["migrate"], {"MOMENTCAST_WORKER_LEASES": "5s"}, tmp_path)
    assert code == 0, err
    assert out.strip() == "database is up to date"
    warnings = [line for line in err.splitlines() if "is not a setting" in line]
    assert len(warnings) == 2, err
    assert "WARNING" in warnings[0]
    assert warnings[0].endswith(
        "MOMENTCAST_WORKER_LEASES is not a setting; did you mean MOMENTCAST_WORKER_LEASE?"
    )
    assert warnings[1].endswith(
        "MOMENTCAST_SECRETKEY (in .env) is not a setting; did you mean MOMENTCAST_SECRET_KEY?"
    )
    assert "not-a-setting-name" not in err  # names, never values


def test_rules_check_reads_dotenv(tmp_path: Path) -> None:
    rules = tmp_path / "marketing-rules"
    rules.mkdir()
    (rules / "policy.yaml").write_text("limits: {per_subscriber: 3/day}\n")
    (rules / "broken.yaml").write_text("trigger: sometimes\nmessage: {title: x, ttl: 1m}\n")
    (tmp_path / ".env").write_text(f"MOMENTCAST_RULES_DIR={rules}\n")
    code, _, err = _run(["rules", "check"], {}, tmp_path)
    assert code == 1, err
    assert "broken.yaml:1:" in err, err


def test_rules_check_refuses_a_bad_dotenv_like_every_command(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MOMENTCAST_PORT=eighty\n")
    code, _, err = _run(["rules", "check"], {}, tmp_path)
    assert code == 2, err
    assert _one_error_line(err).startswith("momentcast: configuration error: MOMENTCAST_PORT:")


@pytest.mark.slow
def test_the_example_vapid_subject_is_warned_about_at_start(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    proc = start(["worker"], _env(tmp_path, database_url), cwd=tmp_path)
    try:
        proc.wait_banner()
    finally:
        assert proc.stop() == 0
    err = proc.stderr()
    [warning] = [line for line in err.splitlines() if "MOMENTCAST_VAPID_SUBJECT" in line]
    assert "WARNING" in warning and "Apple" in warning, err


@pytest.mark.parametrize("command", ["worker", "vapid"])
def test_a_data_dir_that_cannot_be_created_is_one_line_and_exit_2(
    tmp_path: Path, database_url: str, command: str
) -> None:
    (tmp_path / "a-file").write_text("")
    env = _env(tmp_path, database_url, MOMENTCAST_DATA_DIR=str(tmp_path / "a-file" / "data"))
    code, _, err = _run([command], env, tmp_path)
    assert code == 2, err
    assert _one_error_line(err) == (
        "momentcast: configuration error: MOMENTCAST_DATA_DIR: cannot create "
        f"{tmp_path / 'a-file' / 'data'}: Not a directory"
    )


def test_a_configuration_error_also_names_the_unknown_settings(tmp_path: Path) -> None:
    # The typo is the likely cause of the error: MOMENTCAST_PROT was meant to set the port.
    (tmp_path / ".env").write_text("MOMENTCAST_SECRETKEY=not-a-setting-name\n")
    env = {"MOMENTCAST_PROT": "8080", "MOMENTCAST_DB_POOL_MAX": "many"}
    code, _, err = _run(["serve"], env, tmp_path)
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        "momentcast: warning: MOMENTCAST_PROT is not a setting; did you mean MOMENTCAST_PORT?",
        "momentcast: warning: MOMENTCAST_SECRETKEY (in .env) is not a setting; "
        "did you mean MOMENTCAST_SECRET_KEY?",
        "momentcast: configuration error: MOMENTCAST_DB_POOL_MAX: "
        "Input should be a valid integer, unable to parse string as an integer",
    ], err
