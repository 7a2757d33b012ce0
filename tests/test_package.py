"""`pip install .` gives a complete product: every package and the migrations are in the wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from service.errors import MigrationError
from service.store import migrations
from tests.processes import REPO


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
