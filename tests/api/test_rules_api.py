"""Admin rules endpoints over HTTP: status, reload (keeping the old set on errors), simulate."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from service.api import create_app
from service.context import Context
from service.reload.watch import load
from service.store import Store
from tests.conftest import LiveApi, make_settings, start_app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def rules_api(ctx: Context, tmp_path: Path):  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    settings = make_settings(ctx.settings.data_dir, ctx.settings.database_url, rules_dir=rules)
    context = Context(settings=settings, store=Store(ctx.pool), keys=ctx.keys)
    load(context)
    runner, url = await start_app(create_app(context))
    import aiohttp

    async with aiohttp.ClientSession() as http:
        yield LiveApi(url, http, context), rules
    await runner.cleanup()


async def test_rules_need_the_admin_token(rules_api) -> None:  # type: ignore[no-untyped-def]
    api, _ = rules_api
    async with api.http.get(api.url + "/v1/rules") as resp:
        assert resp.status == 401
    async with api.http.get(
        api.url + "/v1/rules", headers={"Authorization": "Bearer wrong-token-wrong"}
    ) as resp:
        assert resp.status == 401


async def test_rules_status_lists_loaded_rules(rules_api) -> None:  # type: ignore[no-untyped-def]
    api, _ = rules_api
    async with api.http.get(api.url + "/v1/rules", headers=api.admin()) as resp:
        assert resp.status == 200
        body = await resp.json()
    ids = {r["id"] for r in body["rules"]}
    assert "lunch-nearby" in ids
    assert body["status"] == "ok" and body["errors"] == []


async def test_broken_reload_keeps_old_set_and_reports_file_line(rules_api) -> None:  # type: ignore[no-untyped-def]
    api, rules = rules_api
    lunch = rules / "lunch-nearby.yaml"
    lunch.write_text(lunch.read_text().replace("dayparts: [lunch]", "dayparts: [brunch]"))
    async with api.http.post(api.url + "/v1/rules/reload", headers=api.admin()) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert any(
        d.startswith(str(lunch)) or "lunch-nearby.yaml:" in d for d in body["error"]["details"]
    ), body
    assert any("brunch" in d for d in body["error"]["details"])
    async with api.http.get(api.url + "/v1/rules", headers=api.admin()) as resp:
        status = await resp.json()
    assert status["status"] == "errors"
    assert "lunch-nearby" in {r["id"] for r in status["rules"]}
    # The old set still decides.
    sim: dict[str, Any] = {
        "signal": {"lat": 52.52035, "lon": 13.4071, "at": "2026-11-24T12:30:00+01:00"},
        "profile": {"topics": ["food"]},
    }
    async with api.http.post(api.url + "/v1/simulate", json=sim, headers=api.admin()) as resp:
        assert resp.status == 200
        result = await resp.json()
    assert result["decision"]["rule"] == "lunch-nearby"


async def test_simulate_explains_each_rule(rules_api) -> None:  # type: ignore[no-untyped-def]
    api, _ = rules_api
    # Trattoria Spreeblick at 12:30 Berlin time on a Tuesday, for a subscriber into food.
    sim: dict[str, Any] = {
        "signal": {
            "lat": 52.52035,
            "lon": 13.4071,
            "at": "2026-11-24T12:30:00+01:00",
            "accuracy_m": 10,
        },
        "profile": {"topics": ["food"]},
    }
    async with api.http.post(api.url + "/v1/simulate", json=sim, headers=api.admin()) as resp:
        assert resp.status == 200
        result = await resp.json()
    decision = result["decision"]
    assert decision["rule"] == "lunch-nearby" and decision["place"] == "rest-01"
    assert decision["distance_m"] < 1 and decision["variant"] in ("a", "b")
    verdicts = {r["rule"]: r for r in result["rules"]}
    assert verdicts["lunch-nearby"]["matched"] is True
    assert all(v["reason"] for k, v in verdicts.items() if not v["matched"])
    # Same place at 20:00: not lunchtime, and the reason says so.
    sim["signal"]["at"] = "2026-11-24T20:00:00+01:00"
    async with api.http.post(api.url + "/v1/simulate", json=sim, headers=api.admin()) as resp:
        result = await resp.json()
    assert result["decision"] is None
    lunch = next(r for r in result["rules"] if r["rule"] == "lunch-nearby")
    assert lunch["matched"] is False and lunch["reason"]


async def test_simulate_rejects_bad_input(rules_api) -> None:  # type: ignore[no-untyped-def]
    api, _ = rules_api
    bad = {"signal": {"lat": 123, "lon": 13.4}}
    async with api.http.post(api.url + "/v1/simulate", json=bad, headers=api.admin()) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["error"]["details"][0]["field"] == "signal.lat"
