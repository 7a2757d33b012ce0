"""The backtest on a real PostgreSQL: stored signals through a rule set from fresh presence,
equal to a replay of the same signals, beside the live sends, writing no row; the command
line (a real process) and GET /v1/backtest."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from service.context import Context
from service.reports.backtest import run_backtest
from service.rules import load_ruleset
from service.rules.replay import replay
from service.rules.trace import read_trace
from tests.api.conftest import serve, write_rules
from tests.conftest import LiveApi
from tests.factories import insert_delivery, insert_subscription
from tests.processes import start

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
TABLES = ("subscriptions", "signals", "presence", "deliveries", "rule_counters", "shadow_sends")


async def add_subscriber(pool: asyncpg.Pool, profile: dict[str, Any]) -> uuid.UUID:
    return await insert_subscription(
        pool,
        timezone=profile.get("timezone"),
        topics=profile.get("topics", []),
        attributes=profile.get("attributes", {}),
    )


async def add_trace(pool: asyncpg.Pool, sid: uuid.UUID, trace: Path, shift: timedelta) -> None:
    await pool.executemany(
        # received when taken: the backtest calls a signal received late stale
        "INSERT INTO signals (subscription_id, at, received_at, lat, lon, accuracy_m,"
        " speed_mps, moment) VALUES ($1, $2, $2, $3, $4, $5, $6, $7)",
        [
            (sid, s.at + shift, s.lat, s.lon, s.accuracy_m, s.speed_mps, s.moment)
            for s in read_trace(str(trace), "x")
        ],
    )


async def add_delivery(
    pool: asyncpg.Pool, sid: uuid.UUID, rule: str, at: datetime, status: str, test: bool = False
) -> None:
    await insert_delivery(
        pool,
        sid,
        rule_id=rule,
        dedupe_key=uuid.uuid4().hex,
        payload={},
        ttl_s=60,
        topic=None,
        expires_at=at + timedelta(hours=1),
        decided_at=at,
        status=status,
        test=test,
    )


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[Any]]:
    return {
        t: [tuple(r) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in TABLES
    }


def replay_counts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per rule what a replay report sent, suppressed and did not match."""
    out: dict[str, dict[str, Any]] = {}

    def of(rule: str) -> dict[str, Any]:
        return out.setdefault(
            rule, {"would_send": 0, "suppressed": Counter(), "not_matched": Counter()}
        )

    for row in report["rows"]:
        if row["decision"]:
            of(row["decision"]["rule"])["would_send"] += 1
        for x in row["suppressed"]:
            of(x["rule"])["suppressed"][x["reason"]] += 1
        for x in row["not_matched"]:
            of(x["rule"])["not_matched"][x["reason"]] += 1
    return out


async def test_backtest_equals_a_replay_of_the_stored_signals_and_writes_nothing(
    ctx: Context,
) -> None:
    pool = ctx.pool
    profile = yaml.safe_load((DATA / "replay-profile.yaml").read_text())
    walker = await add_subscriber(pool, profile)
    await add_trace(pool, walker, DATA / "replay-berlin.csv", timedelta(0))
    # A second walker, the same walk a week later: each starts from fresh presence and caps.
    other = await add_subscriber(pool, profile)
    await add_trace(pool, other, DATA / "replay-berlin.csv", timedelta(days=7))
    # What the live rules did in the period; a test push and an older push do not count.
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    await add_delivery(pool, walker, "lunch-nearby", t0 + timedelta(hours=1), "sent")
    await add_delivery(pool, walker, "lunch-nearby", t0 + timedelta(hours=2), "failed")
    await add_delivery(pool, walker, "lunch-nearby", t0 + timedelta(hours=3), "sent", test=True)
    await add_delivery(pool, walker, "gone-rule", t0 + timedelta(hours=4), "sent")
    await add_delivery(pool, walker, "lunch-nearby", t0 - timedelta(days=2), "sent")
    before = await snapshot(pool)

    rs = load_ruleset(REPO / "rules")
    until = datetime(2026, 3, 16, tzinfo=UTC)
    report = await run_backtest(ctx.store, rs, timedelta(days=14), until=until, chunk=1)

    assert await snapshot(pool) == before  # not one row written
    assert report["signals"] == 34 and report["subscribers"] == 2
    assert report["since"] == "2026-03-02T00:00:00+00:00"
    # One replay of the walk, twice over.
    walk = replay_counts(
        replay(
            str(REPO / "rules"), str(DATA / "replay-berlin.csv"), str(DATA / "replay-profile.yaml")
        )
    )
    rules = {r["rule"]: r for r in report["rules"]}
    assert set(rules) == {r.id for r in rs.rules}
    for rule in rs.rules:
        got, want = rules[rule.id], walk.get(rule.id)
        assert got["would_send"] == 2 * (want["would_send"] if want else 0), rule.id
        assert got["suppressed"] == {
            k: 2 * v for k, v in (want or {}).get("suppressed", {}).items()
        }
        if not rule.location_free:  # replay names only rules with places within reach
            assert got["not_matched"] == {
                k: 2 * v for k, v in (want or {}).get("not_matched", {}).items()
            }
    assert report["totals"]["would_send"] == 8
    # Beside them, the live sends of the same period.
    assert rules["lunch-nearby"]["live"] == {"decided": 2, "sent": 1}
    assert rules["buy-store"]["live"] == {"decided": 0, "sent": 0}
    assert report["live_only"] == [{"rule": "gone-rule", "decided": 1, "sent": 1}]
    assert report["totals"]["live_decided"] == 3


async def test_backtest_command_on_the_database(
    ctx: Context, tmp_path: Path, database_url: str
) -> None:
    pool = ctx.pool
    rules = write_rules(tmp_path / "rules", "limits: {per_subscriber: 1/day}\n")
    sid = await add_subscriber(pool, {"timezone": "Europe/Berlin", "attributes": {"tier": "gold"}})
    now = datetime.now(UTC)
    cafe = (52.5219, 13.4132)
    await pool.executemany(
        "INSERT INTO signals (subscription_id, at, received_at, lat, lon, accuracy_m)"
        " VALUES ($1, $2, $2, $3, $4, 10)",
        [
            (sid, now - timedelta(hours=3), cafe[0], cafe[1] - 0.01),  # far
            (sid, now - timedelta(hours=2), *cafe),  # enters café A: the push
            (sid, now - timedelta(hours=1), cafe[0], cafe[1] - 0.01),
            (sid, now - timedelta(minutes=30), *cafe),  # again: the day's push is gone
            (sid, now - timedelta(hours=30), *cafe),  # before the period
        ],
    )
    await add_delivery(pool, sid, "promo", now - timedelta(hours=2), "sent")
    env = {
        "MOMENTCAST_DATABASE_URL": database_url,
        "MOMENTCAST_DATA_DIR": str(tmp_path / "data"),
        "MOMENTCAST_RULES_DIR": str(rules),
    }
    proc = start(["rules", "backtest", "--since", "24h", "--json"], env, cwd=tmp_path)
    out, err = proc.proc.communicate(timeout=120)
    assert proc.proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["rules_dir"] == str(rules) and doc["signals"] == 4
    promo = {r["rule"]: r for r in doc["rules"]}["promo"]
    assert promo["would_send"] == 1 and promo["suppressed"] == {"global_cap": 1}
    assert promo["live"] == {"decided": 1, "sent": 1}
    assert promo["not_matched"] == {}
    # The location-free rule: every signal is within its reach, none has the page context.
    assert {r["rule"]: r for r in doc["rules"]}["free"]["not_matched"] == {"context.page": 4}
    proc = start(["rules", "backtest", str(rules), "--since", "2d"], env, cwd=tmp_path)
    out, err = proc.proc.communicate(timeout=120)
    assert proc.proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"backtest of {rules} on 5 stored signals of 1 subscriber,")
    # Over two days the walk 30 hours ago sends too, and the day's cap lets the next one by.
    assert "promo: would send 2 (live: 1 decided, 1 sent); matched 3" in lines
    assert lines[lines.index("promo: would send 2 (live: 1 decided, 1 sent); matched 3") + 1] == (
        "    suppressed: global_cap 1"
    )
    assert lines[-1] == "5 signals: 2 pushes would be sent; the live rules decided 1 and sent 1"
    proc = start(["rules", "backtest", "--since", "soon"], env, cwd=tmp_path)
    _, err = proc.proc.communicate(timeout=120)
    assert proc.proc.returncode == 2 and "--since: bad duration 'soon'" in err


async def test_backtest_route(ctx: Context, tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules", "limits: {}\n")
    async with serve(ctx, rules) as api:
        sid = await add_subscriber(ctx.pool, {})
        now = datetime.now(UTC)
        await ctx.pool.execute(
            "INSERT INTO signals (subscription_id, at, received_at, lat, lon, accuracy_m)"
            " VALUES ($1, $2, $2, 52.5219, 13.4132, 10)",
            sid,
            now - timedelta(hours=1),
        )
        report = await get(api, "/v1/backtest?since=6h", 200)
        promo = {r["rule"]: r for r in report["rules"]}["promo"]
        assert (report["signals"], promo["would_send"]) == (1, 1)
        assert (await get(api, "/v1/backtest", 200))["signals"] == 1  # 24h by default
        error = await get(api, "/v1/backtest?since=forever", 422)
        assert error["error"]["details"][0]["field"] == "since"
        assert (await get(api, "/v1/backtest?since=60d", 422))["error"]["code"] == "invalid"
        await get(api, "/v1/backtest", 401, headers={})


async def get(api: LiveApi, path: str, status: int, headers: dict[str, str] | None = None) -> Any:
    async with api.http.get(
        api.url + path, headers=api.admin() if headers is None else headers
    ) as r:
        assert r.status == status, await r.text()
        return await r.json()
