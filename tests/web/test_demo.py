"""`momentcast demo` end to end: a real process, a real database, real pushes decrypted."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.store import migrations
from tests.conftest import PgServer


async def _rows_per_table(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return {
            t["tablename"]: await conn.fetchval(f'SELECT count(*) FROM "{t["tablename"]}"')
            for t in tables
        }
    finally:
        await conn.close()


async def _databases(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "configured", ["database-url", "no-createdb", "embedded"], ids=lambda c: str(c)
)
async def test_demo_summary_matches_what_the_receiver_got(
    pg_server: PgServer, tmp_path: Path, configured: str
) -> None:
    # The configured database stands for a server's real data: the demo must not touch it.
    dsn = await pg_server.create_database()
    await migrations.migrate(dsn)
    before = await _rows_per_table(dsn)
    out = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTCAST_")}
    role = "momentcast_demo_test_" + secrets.token_hex(4)
    if configured == "database-url":
        env["MOMENTCAST_DATABASE_URL"] = dsn
    elif configured == "no-createdb":
        # A role that may not create databases: the demo falls back to the embedded server.
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
        finally:
            await conn.close()
        env["MOMENTCAST_DATABASE_URL"] = urlunsplit(
            urlsplit(dsn)._replace(netloc=f"{role}@{urlsplit(dsn).netloc.split('@')[-1]}")
        )
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "service", "demo", "--", "--summary-json", str(out)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        after = await _rows_per_table(dsn)
        databases = await _databases(dsn)
    finally:
        await pg_server.drop_database(dsn)
        if configured == "no-createdb":
            conn = await asyncpg.connect(pg_server.admin_dsn)
            try:
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
            finally:
                await conn.close()
    assert after == before, "the demo wrote into MOMENTCAST_DATABASE_URL"
    throwaway = re.search(r"throwaway database (momentcast_demo_\w+) on", result.stdout)
    if configured == "database-url":
        # Its own database on the configured server, gone afterwards.
        assert throwaway, result.stdout
        assert throwaway.group(1) not in databases
    else:
        assert throwaway is None
        assert "Starting PostgreSQL (embedded, temporary)" in result.stdout
    if configured == "no-createdb":
        assert "permission denied to create database" in result.stdout
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60
    printed = [line for line in result.stdout.splitlines() if line.startswith("  push to ")]
    report = json.loads(out.read_text())
    summary, received = report["summary"], report["received"]

    # What the push service decrypted is what was printed, and what the stats call "sent".
    assert len(printed) == len(received) == summary["delivered"] == summary["sent"]
    for line, message in zip(printed, received, strict=True):
        assert message["subscriber"] in line and repr(message["title"]) in line
        assert f"[{message['data']['rule']}/{message['data']['variant']}]" in line
        # Declarative pushes: the notification's link counts the click where no worker runs.
        delivery_id = message["data"]["delivery_id"]
        assert f"/c/{delivery_id}/open?t={message['data']['event_token']}" in message["navigate"]
    # Every decision has one outcome; Emil's browser is gone (410).
    assert (
        summary["decisions"]
        == summary["sent"] + summary["gone"] + summary["failed"] + summary["expired"]
    )
    assert summary["gone"] == 1
    assert "Emil" not in {m["subscriber"] for m in received}
    # The rule mix the routes are built for: lunch, a landmark story, a store promotion.
    assert {m["data"]["rule"] for m in received} >= {"lunch-nearby", "know-landmark", "buy-store"}
    # Later matches on the same walk fall under the policy's one-hour min_gap.
    assert summary["suppressed"].get("min_gap", 0) >= 1
    # A match is decided, suppressed, or outranked by another rule's match on the same fix.
    assert summary["matched"] >= summary["decisions"] + sum(summary["suppressed"].values())
    assert summary["signals"] == summary["accepted"]
    # The browser side reported every push shown, through the event token in the payload.
    assert summary["shown"] == summary["delivered"]
    assert f"pushes delivered    {summary['delivered']}" in result.stdout
