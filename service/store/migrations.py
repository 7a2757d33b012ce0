"""Apply ``migrations/NNNN_name.sql`` in order, once each, safely from many processes."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from service.errors import MigrationError
from service.store.db import connect

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant shared by every momentcast process; "mcmg" in ASCII.
_ADVISORY_LOCK_KEY = 0x6D636D67
# The top-level migrations/ as the wheel carries it, inside this package.
PACKAGED_DIR = "migrations_sql"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migrations_dir() -> Path:
    """Where the migrations are: MOMENTCAST_MIGRATIONS_DIR, else those shipped in the package.

    An installed wheel carries the repository's top-level migrations/ as
    ``service/store/migrations_sql/`` (see pyproject.toml); a source checkout (the editable
    install of ``make``) reads the top-level migrations/ itself. The working directory is
    never searched.
    """
    override = os.environ.get("MOMENTCAST_MIGRATIONS_DIR")
    if override:
        if not (Path(override) / "0001_init.sql").is_file():
            raise MigrationError(
                f"MOMENTCAST_MIGRATIONS_DIR={override}: no 0001_init.sql in that folder"
            )
        return Path(override)
    packaged = resources.files("service.store") / PACKAGED_DIR
    candidates = [Path(str(packaged)), Path(__file__).resolve().parents[2] / "migrations"]
    for candidate in candidates:
        if (candidate / "0001_init.sql").is_file():
            return candidate
    raise MigrationError(
        "no migrations found: neither in the installed package "
        f"(service/store/{PACKAGED_DIR}/) nor in a source checkout (migrations/); "
        "set MOMENTCAST_MIGRATIONS_DIR to the folder holding 0001_init.sql"
    )


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migrations share a number")
    return found


async def migrate(dsn: str, directory: Path | None = None) -> list[Migration]:
    """Apply pending migrations; return those applied by this call (empty when up to date)."""
    pending = discover(directory)
    conn = await connect(dsn)
    applied_now: list[Migration] = []
    try:
        # A session-level advisory lock serialises concurrent runners: the second one waits,
        # then finds everything applied and does nothing.
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
        try:
            await conn.execute(_CREATE_TABLE)
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
            done = {r["version"]: r for r in rows}
            for migration in pending:
                if migration.version in done:
                    if done[migration.version]["checksum"] != migration.checksum:
                        log.warning(
                            "migration %s was edited after it was applied; "
                            "add a new migration instead",
                            migration.path.name,
                        )
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"{migration.path.name}: {exc}") from exc
                log.info("applied migration %s", migration.path.name)
                applied_now.append(migration)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    finally:
        await conn.close()
    return applied_now
