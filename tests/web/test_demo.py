"""`momentcast demo` end to end: a real process, a real database, real pushes decrypted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

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


async def test_demo_summary_matches_what_the_receiver_got(
    pg_server: PgServer, tmp_path: Path
) -> None:
    # The configured database stands for a server's real data: the demo must not touch it.
    dsn = await pg_server.create_database()
    await migrations.migrate(dsn)
    before = await _rows_per_table(dsn)
    out = tmp_path / "summary.json"
    env = {**os.environ, "MOMENTCAST_DATABASE_URL": dsn}
    env.pop("MOMENTCAST_ADMIN_TOKEN", None)
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
    finally:
        await pg_server.drop_database(dsn)
    assert after == before, "the demo wrote into MOMENTCAST_DATABASE_URL"
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
