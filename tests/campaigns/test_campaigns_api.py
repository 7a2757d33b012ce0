"""The campaign routes over real HTTP: create, dry run, list, show, cancel, and their errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from service.rules.conditions import Condition, holds
from service.testing import PushService
from tests.api.conftest import assert_error
from tests.campaigns.conftest import body, subscribe
from tests.conftest import LiveApi

SOON = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)


def campaign(**fields: Any) -> dict[str, Any]:
    return body(**{"send_at": SOON.isoformat(), **fields})


async def post(api: LiveApi, data: Any, query: str = "") -> tuple[int, Any]:
    async with api.http.post(
        f"{api.url}/v1/campaigns{query}",
        data=json.dumps(data),
        headers={**api.admin(), "Content-Type": "application/json"},
    ) as r:
        return r.status, await r.json()


async def count(pool: asyncpg.Pool, table: str) -> int:
    n: int = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return n


async def test_create_counts_the_audience_and_refuses_a_second_with_the_same_id(
    api: LiveApi, push_service: PushService
) -> None:
    await subscribe(api, push_service, topics=["food"])
    await subscribe(api, push_service, topics=["food", "sport"], locale="de-AT")
    paused = await subscribe(api, push_service, topics=["food"])
    gone = await subscribe(api, push_service, topics=["food"])
    await subscribe(api, push_service, topics=["sport"])
    await api.ctx.pool.execute("UPDATE subscriptions SET paused = true WHERE id = $1", paused.id)
    await api.ctx.pool.execute("UPDATE subscriptions SET status = 'gone' WHERE id = $1", gone.id)
    status, created = await post(api, campaign())
    assert (status, created) == (201, {"id": "lunch", "status": "scheduled", "audience": 2})
    status, error = await post(api, campaign(message={"title": "Another text"}))
    assert_error(error, status, "conflict", "'lunch' exists")
    assert status == 409
    async with api.http.get(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        shown = await r.json()
    assert shown["send_at"] == SOON.isoformat().replace("+00:00", "Z")
    assert (shown["status"], shown["audience"], shown["queued"], shown["sent"]) == (
        "scheduled",
        2,
        0,
        0,
    )
    assert [v["variant"] for v in shown["variants"]] == ["default"]
    assert shown["experiment"] is None
    async with api.http.get(f"{api.url}/v1/campaigns", headers=api.admin()) as r:
        assert [c["id"] for c in (await r.json())["campaigns"]] == ["lunch"]


async def test_bad_bodies_are_refused_naming_the_field_and_store_nothing(api: LiveApi) -> None:
    cases: list[tuple[Any, str]] = [
        (campaign(audience={"attributes": {"visits": {"gt": "many"}}}), "audience.attributes"),
        (campaign(audience={"attributes": {"tier": {"in": ["a"], "eq": "b"}}}), "audience"),
        (campaign(audience={"segment": "vip"}), "audience.segment"),
        (campaign(send_at="tomorrow at noon"), "send_at"),
        (campaign(send_at="2020-01-01T12:00:00Z"), "send_at"),
        (campaign(send_at={"local": "2026-13-01T12:00"}), "send_at.local"),
        (campaign(send_at={"local": "2030-01-01T12:00", "late": "maybe"}), "send_at.late"),
        (campaign(message={"title": "At {place.name}"}), "message.title"),
        (campaign(message={"body": "no title"}), "message.title"),
        (campaign(variants=[{"name": "a", "weight": 1, "message": {"tag": "{x}"}}]), "variants"),
        ({"id": "x"}, "audience"),
        ([1, 2], "(body)"),
    ]
    for data, field in cases:
        status, error = await post(api, data)
        assert status == 422, (data, error)
        assert_error(error, status, "invalid", field)
        assert any(d["field"].startswith(field) for d in error["error"]["details"]), error
    async with api.http.post(
        f"{api.url}/v1/campaigns",
        data="{not json",
        headers={**api.admin(), "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400
    async with api.http.post(
        f"{api.url}/v1/campaigns",
        data="id: x",
        headers={**api.admin(), "Content-Type": "text/yaml"},
    ) as r:
        assert r.status == 415
    assert await count(api.ctx.pool, "campaigns") == 0


async def test_a_dry_run_stores_nothing_and_renders_a_sample_per_locale(
    api: LiveApi, push_service: PushService
) -> None:
    await subscribe(api, push_service, topics=["food"], locale="de-DE", attributes={"name": "Jo"})
    await subscribe(api, push_service, topics=["food"], attributes={"name": "Sam"})
    data = campaign(
        message={
            "title": "Lunch, {attributes.name}?",
            "locales": {"de": {"title": "Mittag, {attributes.name}?"}, "fr": {"title": "Midi ?"}},
        },
        variants=[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
    )
    status, result = await post(api, data, "?dry_run=true")
    assert status == 200, result
    assert result["audience"] == 2
    samples = {(s["variant"], s["locale"]): s for s in result["samples"]}
    assert set(samples) == {(v, loc) for v in "ab" for loc in ("", "de", "fr")}
    assert samples[("a", "de")]["notification"]["title"] == "Mittag, Jo?"
    assert samples[("a", "")]["notification"]["title"] == "Lunch, Sam?"
    assert samples[("a", "fr")]["from_audience"] is False
    assert await count(api.ctx.pool, "campaigns") == 0


async def test_audience_conditions_select_what_the_rule_operators_would(
    api: LiveApi, push_service: PushService
) -> None:
    profiles: list[dict[str, Any]] = [
        {"tier": "gold", "visits": 5},  # no vip: ne compares only a value that is there
        {"tier": "gold", "visits": 2, "vip": False},
        {"tier": "silver", "visits": 3},
        {"tier": "gold", "visits": 1.5, "vip": True},
        {"visits": "many"},
        {"tier": 1},
        {},
    ]
    for attributes in profiles:
        await subscribe(api, push_service, topics=["food"], attributes=attributes)
    conditions = {"tier": {"in": ["gold", "silver"]}, "visits": {"gte": 2}, "vip": {"ne": True}}
    status, result = await post(api, campaign(audience={"attributes": conditions}), "?dry_run=1")
    assert status == 200

    def member(attributes: dict[str, Any]) -> bool:
        checks = [
            Condition("attributes", "tier", "in", ("gold", "silver")),
            Condition("attributes", "visits", "gte", 2),
            Condition("attributes", "vip", "ne", True),
        ]
        return all(holds(c, attributes.get(c.key), c.key in attributes) for c in checks)

    assert result["audience"] == sum(member(p) for p in profiles) == 1


async def test_unknown_campaigns_are_404(api: LiveApi) -> None:
    for method in ("GET", "DELETE"):
        async with api.http.request(
            method, f"{api.url}/v1/campaigns/nope", headers=api.admin()
        ) as r:
            assert r.status == 404
            assert_error(await r.json(), 404, "not_found", "nope")


async def test_cancel_before_the_moment_leaves_nothing_to_send(
    api: LiveApi, push_service: PushService
) -> None:
    await subscribe(api, push_service, topics=["food"])
    assert (await post(api, campaign()))[0] == 201
    async with api.http.delete(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        assert r.status == 200
        cancelled = await r.json()
    assert (cancelled["status"], cancelled["cancelled_now"]) == ("cancelled", 0)
    row = await api.ctx.pool.fetchrow("SELECT next_check_at, cancelled_at FROM campaigns")
    assert row["next_check_at"] is None and row["cancelled_at"] is not None
    # Cancelling again changes nothing.
    async with api.http.delete(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        assert (await r.json())["status"] == "cancelled"


async def test_export_shows_a_subscribers_campaigns_and_erasure_unlinks_them(
    api: LiveApi, push_service: PushService
) -> None:
    from tests.campaigns.conftest import Clock, create

    sent, missed = [
        await subscribe(api, push_service, topics=["food"], timezone=zone)
        for zone in ("America/New_York", "Asia/Tokyo")
    ]
    now = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # past noon in Tokyo, not in New York
    await create(api.ctx, body(send_at={"local": "2026-11-24T12:00"}), now)
    await Clock(api.ctx, now).at(datetime(2026, 11, 24, 17, 0, tzinfo=UTC))
    exports = {}
    for member in (sent, missed):
        async with api.http.get(
            f"{api.url}/v1/subscriptions/{member.id}/export", headers=api.admin()
        ) as r:
            assert r.status == 200
            exports[member.id] = await r.json()
    [delivery] = exports[sent.id]["deliveries"]
    assert (delivery["campaign_id"], delivery["rule_id"]) == ("lunch", None)
    assert exports[sent.id]["campaign_suppressions"] == []
    [suppression] = exports[missed.id]["campaign_suppressions"]
    assert (suppression["campaign_id"], suppression["reason"]) == ("lunch", "missed_local_time")
    async with api.http.delete(f"{api.url}/v1/subscriptions/{missed.id}", headers=api.admin()) as r:
        assert r.status == 204
    rows = await api.ctx.pool.fetch("SELECT subscription_id, reason FROM campaign_suppressions")
    assert [(r["subscription_id"], r["reason"]) for r in rows] == [(None, "missed_local_time")]
    async with api.http.get(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        assert (await r.json())["suppressed"] == {"missed_local_time": 1}
