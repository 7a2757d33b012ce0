"""The base of the data-access class: named queries run on a pool or on one connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

import asyncpg

from service.errors import DatabaseError
from service.store.db import connect, q

# What a database outage or a lost connection raises; loops that must survive one catch these
# (the store is the only module that knows asyncpg's exceptions).
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OutdatedSchemaCacheError,
)

Pool = asyncpg.Pool
Connection = asyncpg.Connection


class StoreBase:
    """Bound to the pool (each call takes a connection) or, inside :meth:`transaction`, to the
    one connection of that transaction. Area modules add their queries as methods that take
    named, typed arguments and return row dataclasses (model: procrastinate's manager)."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, *, dsn: str | None = None) -> None:
        self._db: Any = db
        # Where to open connections of its own (LISTEN must not hold one of the pool's).
        self.dsn = dsn

    async def connect(self) -> asyncpg.Connection:
        """A dedicated connection outside the pool, with the pool's codecs."""
        if self.dsn is None:
            raise DatabaseError("this store was made without a DSN; it cannot open connections")
        return await connect(self.dsn)

    @property
    def pool(self) -> asyncpg.Pool:
        if not isinstance(self._db, asyncpg.Pool):
            raise TypeError("this store is bound to one transaction's connection")
        return self._db

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str | None = None, readonly: bool = False
    ) -> AsyncIterator[Self]:
        """A store whose calls all run in one transaction, committed when the block ends."""
        if isinstance(self._db, asyncpg.Pool):
            async with (
                self._db.acquire() as conn,
                conn.transaction(isolation=isolation, readonly=readonly),
            ):
                yield type(self)(conn, dsn=self.dsn)
        else:
            async with self._db.transaction(isolation=isolation, readonly=readonly):
                yield self

    async def close(self) -> None:
        if isinstance(self._db, asyncpg.Pool):
            await self._db.close()

    # The four ways of running a named query; area methods call these, never asyncpg.
    async def _fetch(self, name: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._db.fetch(q(name), *args)
        return rows

    async def _fetchrow(self, name: str, *args: object) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(q(name), *args)
        return row

    async def _fetchval(self, name: str, *args: object) -> Any:
        return await self._db.fetchval(q(name), *args)

    async def _execute(self, name: str, *args: object) -> str:
        status: str = await self._db.execute(q(name), *args)
        return status
