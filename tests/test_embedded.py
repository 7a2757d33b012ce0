"""The zero-setup database: the embedded PostgreSQL starts, keeps data and stops."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import psutil

from service.store.db import EmbeddedPostgres


def _postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


async def test_starts_keeps_data_across_restart_and_stops(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    first = EmbeddedPostgres(pgdata)
    dsn = first.start()
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
    await conn.close()
    pid = _postmaster_pid(pgdata)
    first.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    second = EmbeddedPostgres(pgdata)
    dsn = second.start()
    try:
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT v FROM kept") == "still here"
        assert (await conn.fetchval("SHOW server_version")).startswith("18")
        await conn.close()
    finally:
        second.stop()
    assert not (pgdata / "postmaster.pid").exists()
