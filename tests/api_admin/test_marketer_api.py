"""The marketer's admin routes over HTTP: simulate's rendered notification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.api import create_app
from service.context import Context
from service.reloader import load
from service.store import Store
from tests.conftest import LiveApi, make_settings, start_app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def live(ctx: Context) -> AsyncIterator[LiveApi]:
    settings = make_settings(
        ctx.settings.data_dir, ctx.settings.database_url, rules_dir=REPO / "rules"
    )
    context = Context(settings=settings, store=Store(ctx.pool), keys=ctx.keys)
    load(context)
    runner, url = await start_app(create_app(context))
    async with aiohttp.ClientSession() as http:
        yield LiveApi(url, http, context)
    await runner.cleanup()


async def simulate(api: LiveApi, body: dict[str, Any]) -> dict[str, Any]:
    async with api.http.post(api.url + "/v1/simulate", json=body, headers=api.admin()) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
    return result


async def test_simulate_returns_the_rendered_notification(live: LiveApi) -> None:
    # Trattoria Spreeblick at 12:30 Berlin time on a Tuesday, for a subscriber into food.
    body: dict[str, Any] = {
        "signal": {"lat": 52.52035, "lon": 13.4071, "at": "2026-11-24T12:30:00+01:00"},
        "profile": {"id": "sub-1", "topics": ["food"]},
    }
    decision = (await simulate(live, body))["decision"]
    title = {
        "a": "Lunch at Trattoria Spreeblick?",
        "b": "Hungry? Trattoria Spreeblick is around the corner",
    }[decision["variant"]]
    assert decision["notification"] == {
        "title": title,
        "body": "Trattoria Spreeblick is 0 m away: 2-for-1 mains until 14:00.",
        "url": "https://example.com/offers/rest-01",
        "actions": [],
        "locale": "",
    }
    # The same profile id always gets the same variant.
    assert (await simulate(live, body))["decision"]["variant"] == decision["variant"]


async def test_simulate_renders_the_locale_and_the_actions(live: LiveApi) -> None:
    # A context signal on the hiking-boots pages at 19:00 in Berlin, from a German reader.
    body: dict[str, Any] = {
        "signal": {
            "at": "2026-11-24T19:00:00+01:00",
            "moment": "know",
            "context": {"page_category": "hiking-boots"},
        },
        "profile": {"timezone": "Europe/Berlin", "locale": "de-DE"},
    }
    result = await simulate(live, body)
    n = result["decision"]["notification"]
    assert result["decision"]["rule"] == "know-hiking" and result["decision"]["place"] is None
    assert n["title"] == "Welcher Stiefel passt zu Ihrem Weg?" and n["locale"] == "de"
    assert n["actions"] == [
        {
            "action": "guide",
            "title": "Read the guide",
            "url": "https://example.com/guides/boot-fitting",
        },
        {"action": "shop", "title": "Shop boots", "url": "https://example.com/shop/hiking-boots"},
    ]
    # Rules with places cannot match a signal without a location, and say so.
    reasons = {r["rule"]: r["reason"] for r in result["rules"]}
    assert reasons["lunch-nearby"] == "no_location"
