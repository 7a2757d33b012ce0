"""A rule set of location-free rules only, without any places: public API -> worker -> sender
-> the strict push service, for a signal with a location and one without, and the simulator.
Measured before: every signal failed in the core (an empty place array indexed with -1),
was quarantined after three tries, and /v1/simulate answered 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from service.testing import PushService
from tests.conftest import LiveApi, make_settings
from tests.web.conftest import CAFES, deliver, notification, send, subscriber

ANYWHERE = """
description: Every signal, wherever it comes from
priority: 1
trigger: signal
message:
  title: "Hello from {rule.id}"
  body: "No place needed"
  ttl: 20m
"""


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    root = tmp_path / "rules"
    root.mkdir()  # no places/ folder at all
    (root / "policy.yaml").write_text("limits: {}\nstale_after: 10m\n")
    (root / "anywhere.yaml").write_text(ANYWHERE)
    return make_settings(data_dir, database_url, rules_dir=root)


async def test_located_and_unlocated_signals_push_without_places(
    api: LiveApi, push_service: PushService
) -> None:
    ruleset = api.ctx.rules.current if api.ctx.rules is not None else None
    assert ruleset is not None and ruleset.places == []
    located, located_token = await subscriber(api, push_service, location_consent=True)
    unlocated, unlocated_token = await subscriber(api, push_service)
    lat, lon = CAFES["cafe-a"]
    await send(api, located_token, {"lat": lat, "lon": lon, "accuracy_m": 10})
    await send(api, unlocated_token, {"moment": "know", "context": {"page": "home"}})
    await deliver(api)
    for sub in (located, unlocated):
        [message] = sub.messages()
        assert notification(message)["title"] == "Hello from anywhere"
    quarantined = await api.ctx.pool.fetchval(
        "SELECT count(*) FROM signals WHERE quarantined_at IS NOT NULL"
    )
    assert quarantined == 0


async def test_simulate_answers_without_places(api: LiveApi) -> None:
    lat, lon = CAFES["cafe-a"]
    for signal in (
        {"lat": lat, "lon": lon, "at": "2026-11-24T12:30:00+01:00"},
        {"at": "2026-11-24T12:30:00+01:00", "moment": "know"},
    ):
        body = {"signal": signal, "profile": {"timezone": "Europe/Berlin"}}
        async with api.http.post(api.url + "/v1/simulate", json=body, headers=api.admin()) as resp:
            assert resp.status == 200, await resp.text()
            result = await resp.json()
        assert result["decision"]["rule"] == "anywhere" and result["decision"]["place"] is None


async def test_the_admin_views_answer_without_places(
    api: LiveApi, push_service: PushService
) -> None:
    _, token = await subscriber(api, push_service)
    await send(api, token, {"moment": "know"})
    await deliver(api)
    for path in ("/v1/rules", "/v1/stats", "/v1/stats/places", "/v1/stats.csv", "/v1/dashboard"):
        async with api.http.get(api.url + path, headers=api.admin()) as resp:
            assert resp.status == 200, (path, await resp.text())
    async with api.http.post(
        api.url + "/v1/rules/anywhere/test", json={}, headers=api.admin()
    ) as resp:
        assert resp.status < 500, await resp.text()
