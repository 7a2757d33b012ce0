"""The base of the data-access class: named queries run on a pool or on one connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

import asyncpg

from service.errors import DatabaseError
from service.store.db import connect, q

# What a database outage or a lost connection raises; loops that must survive one catch these
# (the store is the only module that knows asyncpg's exceptions). A connection the server
# closed (a restart, a failover, pg_terminate_backend, idle_session_timeout) surfaces as one
# of several, depending on what the connection was doing when the server's FATAL arrived:
# - a PostgresError: AdminShutdownError (57P01) mid-statement, ConnectionDoesNotExistError
#   (08003, "connection was closed in the middle of operation");
# - an InterfaceError: "connection is closed";
# - an InternalClientError: "cannot switch to state 12; another operation (2) is in
#   progress". A FATAL that arrives while the connection is idle leaves asyncpg's protocol
#   waiting for a ReadyForQuery that never comes; a statement started before the socket's
#   close is seen raises this (MagicStack/asyncpg#1069). Also InternalClientErrors:
#   OutdatedSchemaCacheError, and TargetServerAttributeNotMatched (a host list with no
#   primary yet, mid-failover);
# - an OSError: refused, reset, broken pipe, and TimeoutError (DB_TIMEOUT ran out).
# (A dedicated connection that cannot be opened raises DatabaseError; its one user, the
# listener, retries on it too.)
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Server errors after which the server has closed (or is closing) the session: connection
# exceptions (class 08), and the operator interventions and timeouts that end a session.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})

# Statements whose work grows with the audience or the table rather than with a batch (one
# tick of a campaign of millions is one statement): bounded by this instead of DB_TIMEOUT.
LONG_STATEMENTS = frozenset(
    {"campaign_fan_out", "campaign_zones", "purge_signals", "purge_shadow_sends_older"}
)
LONG_STATEMENT_TIMEOUT_S = 600.0

Pool = asyncpg.Pool
Connection = asyncpg.Connection


def connection_broken(exc: BaseException) -> bool:
    """Whether the connection a statement raised ``exc`` on must not be used again.

    Anything but an answer of the server (or asyncpg refusing an argument before sending
    it) leaves the connection's protocol state unknown: a dead connection, a timed-out or
    cancelled statement whose cancellation would need yet another round trip. Such a
    connection is terminated; handed back to the pool it would fail its next user too."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state.startswith("08") or state in _SESSION_ENDED
    if isinstance(exc, ValueError):  # asyncpg refused an argument before sending anything
        return False
    return isinstance(
        exc,
        OSError | asyncpg.InterfaceError | asyncpg.InternalClientError | asyncio.CancelledError,
    )


# Server answers that mean "unavailable for now, try again": the session ended (above), a
# connection exception (class 08), too many connections or out of resources (class 53),
# a system error (58), a server in recovery or shutting down (57P0x), a serialization
# failure or deadlock (40001, 40P01). Any other SQLSTATE is a bug in a query or a broken
# invariant, which must show as a 500 with its traceback, not hide behind a 503.
_TRANSIENT_CLASSES = ("08", "53", "58")
_TRANSIENT_STATES = _SESSION_ENDED | {"57P04", "40001", "40P01"}


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (one of DATABASE_ERRORS) means the database is unreachable or
    unavailable for now (a 503 to retry), rather than a fault of the statement itself."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES
    return isinstance(exc, DATABASE_ERRORS)


class Row:
    """Base of the row dataclasses whose fields are their query's columns, named alike: one
    ``from_row`` for them all. Rows that convert a column (a UUID to text, NULL to "") keep
    their own."""

    # Empty, so that the subclasses' slots=True still gives instances no __dict__.
    __slots__ = ()

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(**dict(row))


class StoreBase:
    """Bound to the pool (each call takes a connection) or, inside :meth:`transaction`, to the
    one connection of that transaction. Area modules add their queries as methods that take
    named, typed arguments and return row dataclasses (model: procrastinate's manager).

    ``timeout`` (DB_TIMEOUT in long-running processes) bounds the wait for a pooled
    connection and the opening of dedicated ones; the pool's own statement timeout is set
    where it is created (``create_pool``)."""

    def __init__(
        self,
        db: asyncpg.Pool | asyncpg.Connection,
        *,
        dsn: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._db: Any = db
        # Where to open connections of its own (LISTEN must not hold one of the pool's).
        self.dsn = dsn
        self.timeout = timeout

    async def connect(self) -> asyncpg.Connection:
        """A dedicated connection outside the pool, with the pool's codecs."""
        if self.dsn is None:
            raise DatabaseError("this store was made without a DSN; it cannot open connections")
        return await connect(self.dsn, db_timeout=self.timeout)

    async def ping(self) -> None:
        """Raises one of ``DATABASE_ERRORS`` unless the database answers."""
        await self._fetchval("ping")

    async def connection_room(self) -> int:
        """How many connections the server allows (max_connections less the reserved ones)."""
        room: int = await self._fetchval("connection_room")
        return room

    async def check_connection(self, conn: asyncpg.Connection, *, within: float) -> None:
        """One round trip on a dedicated connection; raises one of DATABASE_ERRORS unless the
        server answers within ``within`` seconds (a half-open connection never does)."""
        await conn.fetchval(q("ping"), timeout=within)

    @property
    def pool(self) -> asyncpg.Pool:
        if not isinstance(self._db, asyncpg.Pool):
            raise TypeError("this store is bound to one transaction's connection")
        return self._db

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A connection of the pool, terminated instead of released when it broke.

        asyncpg's pool takes back a connection as it is: one whose protocol a FATAL left
        stuck (InternalClientError above) would be handed to the next caller, and fail it.
        A statement that ran out of time also drops every other idle connection of the pool:
        a half-open connection rarely comes alone (one network path, one dead host)."""
        pool: asyncpg.Pool = self._db
        async with pool.acquire(timeout=self.timeout) as conn:
            try:
                yield conn
            except BaseException as exc:
                if connection_broken(exc):
                    # A connection asyncpg saw close is back with the pool already, and this
                    # proxy of it refuses every call: nothing left to terminate.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                    if isinstance(exc, TimeoutError):
                        await pool.expire_connections()
                raise

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str | None = None, readonly: bool = False
    ) -> AsyncIterator[Self]:
        """A store whose calls all run in one transaction, committed when the block ends."""
        if isinstance(self._db, asyncpg.Pool):
            async with self._connection() as conn:
                tx = conn.transaction(isolation=isolation, readonly=readonly)
                await tx.start()
                try:
                    yield type(self)(conn, dsn=self.dsn, timeout=self.timeout)
                except BaseException as exc:
                    # On a broken connection a ROLLBACK would only wait for DB_TIMEOUT again;
                    # the connection is terminated and the server rolls back by itself.
                    if not connection_broken(exc):
                        await tx.rollback()
                    raise
                await tx.commit()
        else:
            async with self._db.transaction(isolation=isolation, readonly=readonly):
                yield self

    async def close(self) -> None:
        if isinstance(self._db, asyncpg.Pool):
            await self._db.close()

    # The four ways of running a named query; area methods call these, never asyncpg.
    async def _run(self, method: str, name: str, args: tuple[object, ...]) -> Any:
        timeout = LONG_STATEMENT_TIMEOUT_S if name in LONG_STATEMENTS else None
        if isinstance(self._db, asyncpg.Pool):
            async with self._connection() as conn:
                return await getattr(conn, method)(q(name), *args, timeout=timeout)
        return await getattr(self._db, method)(q(name), *args, timeout=timeout)

    async def _fetch(self, name: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run("fetch", name, args)
        return rows

    async def _fetchrow(self, name: str, *args: object) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run("fetchrow", name, args)
        return row

    async def _fetchval(self, name: str, *args: object) -> Any:
        return await self._run("fetchval", name, args)

    async def _execute(self, name: str, *args: object) -> str:
        status: str = await self._run("execute", name, args)
        return status
