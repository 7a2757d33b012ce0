"""`pip install .` gives a complete product: every package, the migrations, the demo's rules and
the strict test push service are in the wheel, and its commands work outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.errors import MigrationError
from service.store import migrations
from tests.conftest import PgServer
from tests.processes import REPO, ServiceProcess


def _setuptools() -> dict[str, Any]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    section: dict[str, Any] = config["tool"]["setuptools"]
    return section


def test_every_package_under_service_is_in_the_wheel() -> None:
    # pyproject.toml lists the packages (automatic discovery cannot map migrations/ into the
    # package), so a new subpackage must be added there or the wheel would lack it.
    packages = set(_setuptools()["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "service").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= packages, f"add {sorted(found - packages)} to [tool.setuptools] packages"


def test_the_wheel_maps_the_top_level_migrations_into_the_package() -> None:
    setuptools = _setuptools()
    mapped = f"service.store.{migrations.PACKAGED_DIR}"
    assert setuptools["package-dir"] == {mapped: "migrations"}
    assert "*.sql" in setuptools["package-data"][mapped]


def test_a_checkout_reads_its_top_level_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOMENTCAST_MIGRATIONS_DIR", raising=False)
    assert migrations.migrations_dir() == REPO / "migrations"


def test_migrations_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("SELECT 1;")
    monkeypatch.setenv("MOMENTCAST_MIGRATIONS_DIR", str(tmp_path))
    assert migrations.migrations_dir() == tmp_path
    # An override that holds no migrations is a mistake, not a reason to look elsewhere.
    monkeypatch.setenv("MOMENTCAST_MIGRATIONS_DIR", str(tmp_path / "missing"))
    with pytest.raises(MigrationError, match="MOMENTCAST_MIGRATIONS_DIR"):
        migrations.migrations_dir()


# The installed wheel, from a folder outside the repository, with a clean environment.

SOURCES = ("pyproject.toml", "README.md", "service", "migrations")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` builds, from a fresh copy of the sources (no stale build/)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO / name, src / name, ignore=skip)
        else:
            shutil.copy(REPO / name, src / name)
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)])
    (built,) = dist.glob("momentcast-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Path:
    """The bin/ of a fresh virtual environment (no system site-packages) holding the wheel."""
    env_dir = wheel.parent / "venv"
    venv.create(env_dir, with_pip=True)
    bindir = env_dir / "bin"
    # --no-compile: byte-compiling numpy, shapely and the rest is much of the install time.
    _run([str(bindir / "python"), "-m", "pip", "install", "-q", "--no-compile", str(wheel)])
    return bindir


def _clean_env(**extra: str) -> dict[str, str]:
    # Nothing may lead the installed package back to the source tree.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MOMENTCAST_", "PYTHON")) and k != "VIRTUAL_ENV"
    }
    env.update(extra)
    return env


def _run(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=env if env is not None else _clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_the_wheel_holds_migrations_demo_rules_and_the_test_push_service(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        names = set(infos)
        for sql in (REPO / "migrations").glob("*.sql"):
            packaged = f"service/store/{migrations.PACKAGED_DIR}/{sql.name}"
            assert packaged in names
            assert zf.read(packaged) == sql.read_bytes()
        for rule in (REPO / "service" / "demo_rules").rglob("*"):
            if rule.is_file():
                assert rule.relative_to(REPO).as_posix() in names
    assert {"service/testing/__init__.py", "service/testing/pushservice.py"} <= names
    assert not any(name.startswith(("tests/", "migrations/")) for name in names)
    # Real files, no symlinks (a zip entry's mode is in the top 16 bits of external_attr).
    assert not any(stat.S_ISLNK(info.external_attr >> 16) for info in infos.values())


@pytest.mark.slow
async def test_installed_commands_work_outside_the_repository(
    installed: Path, pg_server: PgServer, tmp_path: Path
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    python, momentcast = str(installed / "python"), str(installed / "momentcast")
    where = _run(
        [python, "-c", "import service.demo as d; print(d.__file__); print(d.DEMO_RULES)"],
        cwd=cwd,
    ).stdout.splitlines()
    assert all(Path(p).is_relative_to(installed.parent) for p in where), where
    demo_rules = Path(where[1])

    dsn = await pg_server.create_database()
    try:
        env = _clean_env(MOMENTCAST_DATABASE_URL=dsn, MOMENTCAST_DATA_DIR=str(cwd / "data"))
        applied = _run([momentcast, "migrate"], cwd=cwd, env=env).stdout
        assert "applied 0001_init.sql" in applied
        assert "database is up to date" in _run([momentcast, "migrate"], cwd=cwd, env=env).stdout

        checked = _run([momentcast, "rules", "check", str(demo_rules)], cwd=cwd, env=env).stdout
        assert "lunch-nearby:" in checked

        summary_file = cwd / "summary.json"
        demo = [momentcast, "demo", "--", "--summary-json", str(summary_file)]
        _run(demo, cwd=cwd, env=env)
        summary = json.loads(summary_file.read_text())["summary"]
        assert summary["delivered"] == summary["sent"] >= 1

        shutil.copytree(demo_rules, cwd / "rules")
        serve_env = {**env, "MOMENTCAST_PORT": "0", "MOMENTCAST_RULES_DIR": str(cwd / "rules")}
        serve = ServiceProcess(
            subprocess.Popen(
                [momentcast, "serve"],
                cwd=cwd,
                env=serve_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        try:
            serve.wait_banner()
            async with aiohttp.ClientSession() as http:
                for probe in ("/healthz", "/readyz"):
                    async with http.get(f"{serve.url}{probe}") as r:
                        assert r.status == 200, await r.text()
        finally:
            assert serve.stop() == 0, serve.stderr()
    finally:
        await pg_server.drop_database(dsn)

    sink = subprocess.Popen(
        [momentcast, "testing", "push-service", "--port", "0"],
        cwd=cwd,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().startswith("test push service listening on http://")
    finally:
        sink.send_signal(signal.SIGINT)
        assert sink.wait(15) == 0


@pytest.mark.slow
async def test_the_installed_wheel_serves_with_no_rules_and_inits_a_starter_set(
    installed: Path, pg_server: PgServer, tmp_path: Path
) -> None:
    # A first start from an empty folder: no rules ship with the package, yet serve is ready,
    # with one warning that names the command writing a starter set.
    from tests.processes import wait_ready

    cwd = tmp_path / "fresh"
    cwd.mkdir()
    momentcast = str(installed / "momentcast")
    dsn = await pg_server.create_database()
    try:
        env = _clean_env(
            MOMENTCAST_DATABASE_URL=dsn,
            MOMENTCAST_DATA_DIR=str(cwd / "data"),
            MOMENTCAST_PORT="0",
            MOMENTCAST_ADMIN_TOKEN="a-first-hour-admin-token",
        )
        serve = ServiceProcess(
            subprocess.Popen(
                [momentcast, "serve"],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        try:
            serve.wait_banner()
            assert serve.url is not None
            wait_ready(serve.url)
        finally:
            assert serve.stop() == 0, serve.stderr()
        log = serve.stderr().splitlines()
        warnings = [line for line in log if "momentcast rules init rules" in line]
        assert len(warnings) == 1, log
        assert not any("previous set" in line for line in log), log
    finally:
        await pg_server.drop_database(dsn)

    made = _run([momentcast, "rules", "init", "rules"], cwd=cwd, env=_clean_env())
    assert "momentcast rules check rules" in made.stdout
    checked = _run([momentcast, "rules", "check", "--strict", "rules"], cwd=cwd, env=_clean_env())
    assert "error" not in checked.stdout
    again = subprocess.run(
        [momentcast, "rules", "init", "rules"],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 1
    assert len(again.stderr.splitlines()) == 1 and "not empty" in again.stderr
