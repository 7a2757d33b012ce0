"""Fixtures of the fault suite: momentcast as real processes, a PostgreSQL we may stop, and a
strict push service on loopback."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from service.context import Keys
from service.settings import Settings
from service.store import migrations
from service.store.db import EmbeddedPostgres, create_pool
from service.testing import BrowserSubscription, PushService
from tests.api.conftest import push_subscription
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.processes import ServiceProcess, start
from tests.security.logscan import leaks, log_privacy
from tests.worker.conftest import write_rules
from tests.worker.test_processes import POLICY

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
    rules = write_rules(tmp / "rules", policy=POLICY)
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
        sid: uuid.UUID = await pool.fetchval(
            # As the API stores a device that consented to location use.
            "INSERT INTO subscriptions (endpoint, p256dh, auth, token_hash, consent_at)"
            " VALUES ($1, $2, $3, $4, now()) RETURNING id",
            sub.endpoint,
            sub.p256dh,
            sub.auth,
            secrets.token_bytes(32),
        )
        subs.append((sid, sub))
    return subs


def registration_body() -> dict[str, object]:
    return {"subscription": push_subscription(), "location_consent": True}
