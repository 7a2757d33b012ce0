"""The database of one benchmark run: a throwaway database on the PostgreSQL server that
MOMENTCAST_BENCH_DATABASE_URL (or MOMENTCAST_DATABASE_URL) names, dropped afterwards, or
without either an embedded PostgreSQL in the run's temporary directory."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.store.db import EmbeddedPostgres


@dataclass(frozen=True)
class BenchDatabase:
    dsn: str
    embedded: EmbeddedPostgres | None  # None: a database on a server of the environment's


@asynccontextmanager
async def bench_database(tmp: Path, prefix: str) -> AsyncIterator[BenchDatabase]:
    server = os.environ.get("MOMENTCAST_BENCH_DATABASE_URL") or os.environ.get(
        "MOMENTCAST_DATABASE_URL"
    )
    if not server:
        embedded = EmbeddedPostgres(tmp / "pg")
        dsn = embedded.start()
        try:
            yield BenchDatabase(dsn, embedded)
        finally:
            embedded.stop()
        return
    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(server)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield BenchDatabase(urlunsplit(urlsplit(server)._replace(path="/" + name)), None)
    finally:
        conn = await asyncpg.connect(server)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
