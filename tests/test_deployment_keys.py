"""One deployment, one VAPID key pair and one SECRET_KEY: the database remembers their
fingerprints, and a process started with other keys stops with one line naming the setting."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service import fingerprints
from service.webpush import vapid
from tests.conftest import PgServer
from tests.processes import REPO, start


@pytest.fixture
async def deployment_db(pg_server: PgServer) -> AsyncIterator[str]:
    """A database of its own: the processes below record their keys in it."""
    dsn = await pg_server.create_database()
    yield dsn
    await pg_server.drop_database(dsn)


def _env(data_dir: Path, dsn: str, **keys: str) -> dict[str, str]:
    return {
        "MOMENTCAST_DATABASE_URL": dsn,
        "MOMENTCAST_DATA_DIR": str(data_dir),
        "MOMENTCAST_RULES_DIR": str(REPO / "rules"),
        "MOMENTCAST_PORT": "0",
        **{f"MOMENTCAST_{name.upper()}": value for name, value in keys.items()},
    }


def _starts(command: str, env: dict[str, str]) -> list[str]:
    """Start ``command``, wait until it serves, stop it; its banner lines."""
    proc = start([command], env)
    try:
        proc.wait_banner()
    finally:
        assert proc.stop() == 0, proc.stderr()
    return proc.stdout_lines


def _refused(command: str, env: dict[str, str]) -> str:
    """Start ``command``, expect exit 2; the one error line on stderr."""
    proc = start([command], env)
    out, err = proc.proc.communicate(timeout=120)
    assert proc.proc.returncode == 2, out + err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "configuration error" in line]
    assert len(errors) == 1, err
    assert "admin token:" not in out  # it never came up
    return errors[0]


async def _recorded(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT name, fingerprint FROM deployment_keys")
    finally:
        await conn.close()
    return {row["name"]: row["fingerprint"] for row in rows}


async def test_a_process_with_other_keys_stops_with_one_line(
    tmp_path: Path, deployment_db: str
) -> None:
    key_a = vapid.private_key_to_b64url(vapid.generate_private_key())
    key_b = vapid.private_key_to_b64url(vapid.generate_private_key())
    secret_a, secret_b = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    # Host 1 starts first and records the deployment's keys.
    _starts(
        "serve", _env(tmp_path / "h1", deployment_db, vapid_private_key=key_a, secret_key=secret_a)
    )
    recorded = await _recorded(deployment_db)
    public_a = vapid.public_key_b64url(vapid.parse_private_key(key_a))
    assert recorded == {
        "vapid_public_key": fingerprints.vapid_fingerprint(public_a),
        "secret_key": fingerprints.secret_fingerprint(secret_a.encode()),
    }
    assert secret_a not in str(recorded) and key_a not in str(recorded)

    # Host 2 with another VAPID key, then with another SECRET_KEY: both stop at start-up.
    other_vapid = _env(tmp_path / "h2", deployment_db, vapid_private_key=key_b, secret_key=secret_a)
    line = _refused("serve", other_vapid)
    assert line.startswith(
        "momentcast: configuration error: MOMENTCAST_VAPID_PRIVATE_KEY: this process's VAPID "
        "key pair differs from the one the other processes of this deployment use"
    ), line
    other_secret = _env(
        tmp_path / "h2", deployment_db, vapid_private_key=key_a, secret_key=secret_b
    )
    line = _refused("api", other_secret)
    assert line.startswith(
        "momentcast: configuration error: MOMENTCAST_SECRET_KEY: this process's key differs"
    ), line
    # A key generated into a host's own DATA_DIR is another key too.
    assert "MOMENTCAST_VAPID_PRIVATE_KEY" in _refused(
        "worker", _env(tmp_path / "h3", deployment_db)
    )

    # The same keys on another host start; nothing recorded changed.
    _starts(
        "api", _env(tmp_path / "h4", deployment_db, vapid_private_key=key_a, secret_key=secret_a)
    )
    assert await _recorded(deployment_db) == recorded


async def test_vapid_generate_is_a_deliberate_rotation(tmp_path: Path, deployment_db: str) -> None:
    env = _env(tmp_path / "data", deployment_db)
    first = _starts("serve", env)
    rotated = start(["vapid", "--generate"], env)
    out, err = rotated.proc.communicate(timeout=120)
    assert rotated.proc.returncode == 0, err
    new_public = out.strip()
    assert f"VAPID public key: {new_public}" not in first
    # The next start takes the new key: the rotation updated the recorded fingerprint.
    assert f"VAPID public key: {new_public}" in _starts("serve", env)
    recorded = await _recorded(deployment_db)
    assert recorded["vapid_public_key"] == fingerprints.vapid_fingerprint(new_public)


def test_vapid_generate_keeps_the_old_key_when_the_database_is_unreachable(
    tmp_path: Path,
) -> None:
    # A new key the database never heard of would stop every process at its next start.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = _env(tmp_path / "data", f"postgresql://postgres@127.0.0.1:{port}/momentcast")
    before = start(["vapid"], env)
    old_public, _ = before.proc.communicate(timeout=60)
    rotated = start(["vapid", "--generate"], env)
    _, err = rotated.proc.communicate(timeout=60)
    assert rotated.proc.returncode == 1, err
    assert "cannot connect to PostgreSQL" in err, err
    after = start(["vapid"], env)
    assert after.proc.communicate(timeout=60)[0] == old_public
