"""The marketer's admin routes over HTTP: simulate's rendered notification and the test push
(through the sender to the strict test push service, past caps and quiet hours, out of stats)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.context import Context
from service.push import Sender
from service.testing import BrowserSubscription, PushService
from service.worker import Worker
from tests.api.conftest import CAFE, serve, write_rules
from tests.conftest import LiveApi
from tests.factories import insert_delivery, subscribe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def live(ctx: Context) -> AsyncIterator[LiveApi]:
    async with serve(ctx, REPO / "rules") as api:
        yield api


@pytest.fixture
async def push_service(ctx: Context) -> AsyncIterator[PushService]:
    service = await PushService(ctx.keys.vapid_public_b64).start()
    yield service
    await service.close()


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


async def register(api: LiveApi, sub: BrowserSubscription, **profile: Any) -> tuple[str, str]:
    registered = await subscribe(api, sub, **profile)
    return registered.id, registered.token


async def send_test(
    api: LiveApi, rule: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with api.http.post(
        f"{api.url}/v1/rules/{rule}/test",
        json=body,
        headers=api.admin() if headers is None else headers,
    ) as r:
        return r.status, await r.json()


async def send_all(api: LiveApi) -> None:
    async with Sender(api.ctx) as sender:
        while await sender.run_once():
            pass


async def stats_of(api: LiveApi, rule: str) -> list[dict[str, Any]]:
    async with api.http.get(f"{api.url}/v1/stats", headers=api.admin()) as r:
        assert r.status == 200
        rows: list[dict[str, Any]] = (await r.json())["rules"]
    return [row for row in rows if row["rule"] == rule]


async def test_a_test_push_arrives_past_caps_and_quiet_hours_and_stays_out_of_stats(
    ctx: Context, tmp_path: Path, push_service: PushService
) -> None:
    # Quiet hours now in Berlin, and the day's one push already sent.
    hour = datetime.now(ZoneInfo("Europe/Berlin")).hour
    policy = (
        f'quiet_hours: "{hour:02d}:00-{(hour + 2) % 24:02d}:00"\n'
        "limits: {per_subscriber: 1/day}\nstale_after: 10m\nhysteresis_m: 30\n"
    )
    async with serve(ctx, write_rules(tmp_path / "rules", policy)) as api:
        sub = push_service.subscribe()
        sid, _ = await register(api, sub, locale="de-AT", attributes={"tier": "gold"})
        await insert_delivery(
            api.ctx.pool,
            uuid.UUID(sid),
            rule_id="promo",
            variant="default",
            dedupe_key="earlier",
            payload={},
            ttl_s=60,
            expires_in=3600,
            topic=None,
            decided_at=datetime.now(UTC) - timedelta(hours=1),
            status="sent",
        )
        status, body = await send_test(api, "promo", {"subscription_id": sid, "place_id": "cafe-b"})
        assert status == 202, body
        delivery_id = body["delivery_id"]
        await send_all(api)
        [message] = sub.messages()
        n = message["notification"]
        # The subscriber's locale and attributes, the chosen place, 0 m away.
        assert n["title"] == "Kaffee im Cafe B"
        assert n["body"] == "gold members: Cafe B is 0 m away"
        assert n["data"]["delivery_id"] == delivery_id and n["data"]["rule"] == "promo"
        row = await api.ctx.pool.fetchrow(
            "SELECT test, status, place_id FROM deliveries WHERE id = $1", delivery_id
        )
        assert dict(row) == {"test": True, "status": "sent", "place_id": "cafe-b"}
        # The browser reports it shown: recorded, and still no rule statistic counts it.
        async with api.http.post(
            f"{api.url}/v1/events",
            json={
                "delivery_id": delivery_id,
                "token": n["data"]["event_token"],
                "type": "shown",
            },
        ) as r:
            assert r.status == 202
        [row_stats] = await stats_of(api, "promo")
        assert (row_stats["sent"], row_stats["shown"]) == (1, 0)  # the earlier live push only
        # A locale in the request wins over the subscription's.
        status, body = await send_test(api, "promo", {"subscription_id": sid, "locale": "en"})
        assert status == 202
        await send_all(api)
        assert sub.messages()[-1]["notification"]["title"] == "Coffee at Cafe A"


async def test_a_test_push_counts_toward_no_cap(
    ctx: Context, tmp_path: Path, push_service: PushService
) -> None:
    policy = "limits: {per_subscriber: 1/day, min_gap: 1h}\nstale_after: 10m\nhysteresis_m: 30\n"
    async with serve(ctx, write_rules(tmp_path / "rules", policy)) as api:
        sub = push_service.subscribe()
        sid, token = await register(api, sub)
        status, _ = await send_test(api, "promo", {"subscription_id": sid})
        assert status == 202
        # Then the subscriber walks into the café: the day's one live push is still due.
        async with api.http.post(
            f"{api.url}/v1/signals",
            headers={"Authorization": f"Bearer {token}"},
            json={"lat": CAFE[0], "lon": CAFE[1], "accuracy_m": 10},
        ) as r:
            assert r.status == 202
        assert await Worker(api.ctx).drain() == 1
        rows = await api.ctx.pool.fetch("SELECT test FROM deliveries ORDER BY id")
        assert [r["test"] for r in rows] == [True, False]
        await send_all(api)
        assert len(sub.messages()) == 2
        [row_stats] = await stats_of(api, "promo")
        assert (row_stats["matched"], row_stats["sent"], row_stats["suppressed"]) == (1, 1, {})


async def test_the_test_route_refuses(
    ctx: Context, tmp_path: Path, push_service: PushService
) -> None:
    policy = "limits: {}\nstale_after: 10m\nhysteresis_m: 30\n"
    async with serve(ctx, write_rules(tmp_path / "rules", policy)) as api:
        sid, token = await register(api, push_service.subscribe())
        body = {"subscription_id": sid}
        # Admin only: no token, a device token.
        assert (await send_test(api, "promo", body, headers={}))[0] == 401
        device = {"Authorization": f"Bearer {token}"}
        assert (await send_test(api, "promo", body, headers=device))[0] == 401
        status, answer = await send_test(api, "lunch", body)
        assert (status, answer["error"]["code"]) == (404, "not_found")
        assert "no rule 'lunch'" in answer["error"]["message"]
        status, answer = await send_test(
            api, "promo", {"subscription_id": "00000000-0000-4000-8000-000000000000"}
        )
        assert (status, answer["error"]["code"]) == (404, "not_found")
        status, answer = await send_test(api, "promo", {"subscription_id": "not-a-uuid"})
        assert (status, answer["error"]["details"][0]["field"]) == (422, "subscription_id")
        status, answer = await send_test(api, "promo", {**body, "place_id": "nowhere"})
        assert (status, answer["error"]["details"][0]["field"]) == (422, "place_id")
        status, answer = await send_test(api, "free", {**body, "place_id": "cafe-a"})
        assert status == 422 and "has no places" in answer["error"]["message"]
        async with api.http.patch(
            f"{api.url}/v1/subscriptions/{sid}", json={"paused": True}, headers=device
        ) as r:
            assert r.status == 200
        status, answer = await send_test(api, "promo", body)
        assert status == 422 and "paused" in answer["error"]["message"]
        assert await api.ctx.pool.fetchval("SELECT count(*) FROM deliveries") == 0
        # A location-free rule: no place, {context.*} empty.
        async with api.http.patch(
            f"{api.url}/v1/subscriptions/{sid}", json={"paused": False}, headers=device
        ) as r:
            assert r.status == 200
        status, answer = await send_test(api, "free", body)
        assert status == 202
        row = await api.ctx.pool.fetchrow(
            "SELECT place_id, payload, test FROM deliveries WHERE id = $1", answer["delivery_id"]
        )
        assert row["place_id"] is None and row["test"] is True
        assert row["payload"]["title"] == "About "
