"""Database down: every route that needs it answers 503 database_unavailable with Retry-After.

A real outage: the API runs on a PostgreSQL of this test's own, which is stopped after the
data the paths name has been made. Then every route of the app's router is called with
valid credentials; a route the table below does not classify fails the test, so a new
route cannot ship without saying what it does while the database is down.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from service.api import create_app
from service.context import Context, Keys
from service.runtime import load_rules
from service.store import DATABASE_ERRORS, Store, database_unavailable, migrations
from service.store.db import EmbeddedPostgres, create_pool
from tests.api.conftest import RealIds, later, push_subscription, real_ids
from tests.conftest import LiveApi, make_settings, start_app

DOWN = 503  # the route needs the database: 503 database_unavailable with Retry-After


@dataclass(frozen=True)
class Call:
    expect: int
    auth: str | None = None  # "admin", "device" or None
    body: str | None = None  # a key of _bodies()


# (method, route template) -> what a valid request gets while the database is down.
# HEAD routes (aiohttp adds one per GET) expect what their GET does.
ROUTES: dict[tuple[str, str], Call] = {
    ("GET", "/healthz"): Call(200),
    ("GET", "/readyz"): Call(503),  # its own answer: {"status": "not ready", ...}
    ("GET", "/metrics"): Call(200, "admin"),
    ("GET", "/openapi.json"): Call(200),
    ("GET", "/v1/vapid-public-key"): Call(200),
    ("GET", "/"): Call(200),
    ("GET", "/dashboard"): Call(200),
    ("GET", "/momentcast.js"): Call(200),
    ("GET", "/sw.js"): Call(200),
    ("GET", "/static/{name}"): Call(200),
    ("GET", "/static/vendor/leaflet/{path}"): Call(200),
    ("GET", "/v1/rules"): Call(200, "admin"),
    ("POST", "/v1/rules/reload"): Call(200, "admin"),
    ("POST", "/v1/simulate"): Call(200, "admin", "simulate"),
    ("POST", "/v1/rules/{id}/test"): Call(DOWN, "admin", "test_push"),
    ("GET", "/v1/backtest"): Call(DOWN, "admin"),
    ("POST", "/v1/subscriptions"): Call(DOWN, None, "subscription"),
    ("GET", "/v1/subscriptions/{id}"): Call(DOWN, "device"),
    ("PATCH", "/v1/subscriptions/{id}"): Call(DOWN, "device", "patch"),
    ("DELETE", "/v1/subscriptions/{id}"): Call(DOWN, "device"),
    ("GET", "/v1/subscriptions/{id}/export"): Call(DOWN, "admin"),
    ("GET", "/v1/subscriptions"): Call(DOWN, "admin"),
    ("POST", "/v1/signals"): Call(DOWN, "device", "signal"),
    ("POST", "/v1/events"): Call(DOWN, None, "event"),
    ("GET", "/c/{delivery_id}/{action}"): Call(DOWN),
    ("GET", "/v1/stats"): Call(DOWN, "admin"),
    ("GET", "/v1/dashboard"): Call(DOWN, "admin"),
    ("GET", "/v1/stats/places"): Call(DOWN, "admin"),
    ("GET", "/v1/stats.csv"): Call(DOWN, "admin"),
    ("POST", "/v1/campaigns"): Call(DOWN, "admin", "campaign"),
    ("GET", "/v1/campaigns"): Call(DOWN, "admin"),
    ("GET", "/v1/campaigns/{id}"): Call(DOWN, "admin"),
    ("DELETE", "/v1/campaigns/{id}"): Call(DOWN, "admin"),
}


def _bodies(ids: RealIds) -> dict[str, Any]:
    """Valid bodies, so that each request gets past validation to the database."""
    return {
        "simulate": {"signal": {"lat": 52.52, "lon": 13.405, "accuracy_m": 10}},
        "test_push": {"subscription_id": ids.device.id},
        "subscription": {"subscription": push_subscription(), "topics": ["food"]},
        "patch": {"topics": ["coffee"]},
        "signal": {"lat": 52.52, "lon": 13.405, "accuracy_m": 10},
        "event": {"delivery_id": ids.delivery_id, "token": ids.event_token, "type": "shown"},
        "campaign": {
            "id": "during-outage",
            "audience": {"topics": ["food"]},
            "message": {"title": "Lunch", "body": "2-for-1"},
            "send_at": later(),
        },
    }


def _path(template: str, ids: RealIds) -> str:
    if template.startswith("/v1/campaigns/"):
        return template.replace("{id}", ids.campaign_id)
    if template.startswith("/v1/rules/"):
        return template.replace("{id}", ids.rule_id)
    if template.startswith("/c/"):
        return f"/c/{ids.delivery_id}/open?t={ids.event_token}"
    return (
        template.replace("{id}", ids.device.id)
        .replace("{name}", "momentcast.css")
        .replace("{path}", "leaflet.js")
    )


@dataclass
class StoppableDatabase:
    embedded: EmbeddedPostgres
    dsn: str


@pytest.fixture
async def stoppable_database() -> AsyncIterator[StoppableDatabase]:
    """A PostgreSQL of this test's own: the session's server must not go down."""
    # A short directory: the server's Unix socket path is limited to ~107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="mcdown-"))
    embedded = EmbeddedPostgres(tmp / "pg")
    admin = embedded.start()
    try:
        name = "mc_down_" + secrets.token_hex(3)
        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        dsn = admin.replace("/postgres?", f"/{name}?")
        await migrations.migrate(dsn)
        yield StoppableDatabase(embedded, dsn)
    finally:
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
async def test_every_route_answers_503_or_works_while_the_database_is_down(
    stoppable_database: StoppableDatabase, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = stoppable_database.dsn
    pool = await create_pool(dsn, min_size=1, max_size=4)
    settings = make_settings(data_dir, dsn)
    ctx = Context(settings=settings, store=Store(pool, dsn=dsn), keys=Keys.load(settings))
    await load_rules(ctx)
    app = create_app(ctx)
    runner, url = await start_app(app)
    try:
        async with aiohttp.ClientSession() as http:
            api = LiveApi(url, http, ctx)
            ids = await real_ids(api)
            routes = [(r.method, r.resource.canonical) for r in app.router.routes()]  # type: ignore[union-attr]
            unclassified = {
                (m, p) for m, p in routes if (("GET" if m == "HEAD" else m), p) not in ROUTES
            }
            assert not unclassified, f"classify these routes in ROUTES: {sorted(unclassified)}"

            # The contract says so too: each route that needs the database documents its 503.
            async with http.get(url + "/openapi.json") as resp:
                spec = (await resp.json())["paths"]
            undocumented = [
                key
                for key, call in ROUTES.items()
                if call.expect == DOWN and "503" not in spec[key[1]][key[0].lower()]["responses"]
            ]
            assert not undocumented, undocumented

            # The outage: the server stops; its connections close, new ones are refused.
            await asyncio.to_thread(stoppable_database.embedded.stop)

            caplog.clear()
            bodies = _bodies(ids)
            auth = {"admin": api.admin(), "device": ids.device.auth(), None: {}}
            wrong = []
            for method, template in sorted(routes, key=lambda r: (r[1], r[0])):
                call = ROUTES[("GET" if method == "HEAD" else method, template)]
                body = bodies[call.body] if call.body else None
                async with http.request(
                    method,
                    url + _path(template, ids),
                    json=body,
                    headers=auth[call.auth],
                    allow_redirects=False,
                ) as resp:
                    text = await resp.text()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
                seen = f"{method} {template}: {status} Retry-After={retry_after} {text[:200]}"
                code = "database_unavailable"
                problems = []
                if status != call.expect:
                    problems.append(f"expected {call.expect}")
                elif status == DOWN and template != "/readyz":  # /readyz: its own body
                    if not (retry_after and retry_after.isdigit()):
                        problems.append("no Retry-After")
                    if method != "HEAD" and f'"code": "{code}"' not in text:
                        problems.append(f"code is not {code}")
                if problems:
                    wrong.append(f"{seen} ({', '.join(problems)})")
            assert not wrong, "\n".join(wrong)
            # An outage is routine: no traceback in the log for it (asyncpg's pool logs its
            # own failed reconnects in the background; that is not an answer to a request).
            tracebacks = [
                f"{r.name}: {r.getMessage()}"
                for r in caplog.records
                if r.exc_info and not r.name.startswith("asyncpg")
            ]
            assert not tracebacks, tracebacks
    finally:
        await runner.cleanup()
        pool.terminate()


async def test_a_statement_the_server_refuses_is_no_outage(pool: asyncpg.Pool) -> None:
    """Only an unreachable or unavailable database is a 503: a query the server refuses for
    what it is (a bug) stays a 500 with its traceback, so it is seen and fixed."""
    with pytest.raises(asyncpg.PostgresError) as refused:
        await pool.execute("SELECT 1 / 0")
    assert isinstance(refused.value, DATABASE_ERRORS)
    assert not database_unavailable(refused.value)

    async with pool.acquire() as victim:
        pid = await victim.fetchval("SELECT pg_backend_pid()")
        await pool.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(DATABASE_ERRORS) as gone:
            for _ in range(50):  # the FATAL may arrive a moment after the terminate returns
                await victim.execute("SELECT 1")
                await asyncio.sleep(0.05)
        assert database_unavailable(gone.value)
    assert database_unavailable(ConnectionRefusedError())
