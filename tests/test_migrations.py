"""The migration runner: in order, once, safe under concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service.errors import MigrationError
from service.store import migrations
from tests.conftest import PgServer


@pytest.fixture
async def empty_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    dsn = await pg_server.create_database()
    yield dsn
    await pg_server.drop_database(dsn)


async def test_applies_once_then_noop(empty_dsn: str) -> None:
    applied = await migrations.migrate(empty_dsn)
    assert [m.version for m in applied] == [m.version for m in migrations.discover()]
    assert applied[0].path.name == "0001_init.sql"
    assert await migrations.migrate(empty_dsn) == []
    conn = await asyncpg.connect(empty_dsn)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    finally:
        await conn.close()
    assert [r["version"] for r in versions] == [m.version for m in applied]
    assert {"subscriptions", "signals", "presence", "deliveries", "events"} <= tables


async def test_concurrent_runners_apply_each_migration_once(empty_dsn: str) -> None:
    results = await asyncio.gather(*(migrations.migrate(empty_dsn) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migrations.discover())]


async def test_failed_migration_rolls_back_and_is_not_recorded(
    empty_dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t1 (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE t2 (x int); SELECT nonsense_column;")
    with pytest.raises(MigrationError, match=r"0002_bad\.sql"):
        await migrations.migrate(empty_dsn, tmp_path)
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 1
        assert await conn.fetchval("SELECT to_regclass('t2')") is None
        assert await conn.fetchval("SELECT to_regclass('t1')") == "t1"
    finally:
        await conn.close()


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        migrations.discover(tmp_path)
