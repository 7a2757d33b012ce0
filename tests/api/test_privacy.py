"""Privacy: logs hold no coordinates or tokens; retention deletes old processed signals."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import aiohttp
import pytest

from service import maintenance
from service.api import create_app
from service.api.middleware import AccessLogger
from service.context import Context
from tests.api.conftest import register
from tests.conftest import LiveApi
from tests.factories import insert_delivery

# Distinctive values: any of them in a log line means a coordinate leaked.
LAT, LON, ACCURACY = 48.858370123, 2.294481456, 7.654321


async def test_logs_hold_no_coordinates_or_tokens(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(ctx)
    runner = aiohttp.web.AppRunner(app, access_log_class=AccessLogger, handle_signals=False)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            api = LiveApi(url, http, ctx)
            device = await register(api, attributes={"home": f"{LAT},{LON}"})
            signal = {"lat": LAT, "lon": LON, "accuracy_m": ACCURACY}
            for body in (
                signal,
                {"signals": [signal, {**signal, "lat": 123.0}]},
                {"signals": [signal] * 2},
            ):
                async with http.post(url + "/v1/signals", json=body, headers=device.auth()) as resp:
                    assert resp.status in (202, 422)
            async with http.get(
                url + f"/v1/subscriptions/{device.id}?lat={LAT}", headers=device.auth()
            ) as resp:
                assert resp.status == 200
            async with http.post(
                url + "/v1/signals", json=signal, headers={"Authorization": "Bearer " + "z" * 43}
            ) as resp:
                assert resp.status == 401
            async with http.delete(
                url + f"/v1/subscriptions/{device.id}", headers=device.auth()
            ) as resp:
                assert resp.status == 204
    finally:
        await runner.cleanup()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/v1/signals" in text  # the access log did run
    forbidden = [
        str(LAT),
        str(LON),
        str(ACCURACY),
        "48.858",
        "2.2944",
        device.token,
        "z" * 43,
        device.id,
        device.subscription["endpoint"],
        device.subscription["keys"]["auth"],
    ]
    for value in forbidden:
        assert value not in text, value


async def test_retention_purges_old_processed_signals_only(api: LiveApi) -> None:
    pool = api.ctx.pool
    device = await register(api)
    async with api.http.post(
        api.url + "/v1/signals", json={"signals": [{"lat": 1, "lon": 2}] * 4}, headers=device.auth()
    ) as resp:
        assert resp.status == 202
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM signals ORDER BY id")]
    retention = api.ctx.settings.signal_retention
    # old+processed, fresh+processed, old+unprocessed, fresh+unprocessed
    await pool.execute(
        "UPDATE signals SET processed_at = now() - $2::interval - interval '1 min' WHERE id = $1",
        ids[0],
        retention,
    )
    await pool.execute(
        "UPDATE signals SET processed_at = now() - $2::interval + interval '1 min' WHERE id = $1",
        ids[1],
        retention,
    )
    await pool.execute(
        "UPDATE signals SET received_at = now() - interval '30 days' WHERE id = $1", ids[2]
    )
    assert await maintenance.purge_signals(api.ctx) == 1
    left = [r["id"] for r in await pool.fetch("SELECT id FROM signals ORDER BY id")]
    assert left == ids[1:]
    assert await maintenance.purge_signals(api.ctx) == 0


async def test_a_signal_id_is_remembered_as_long_as_its_signal(api: LiveApi) -> None:
    # The idempotency window is SIGNAL_RETENTION: once a signal is purged, a retry with its id
    # is not recognised any more (documented as out of scope).
    pool = api.ctx.pool
    device = await register(api)

    async def post(client_id: str) -> Any:
        body = {"lat": 1, "lon": 2, "id": client_id}
        async with api.http.post(api.url + "/v1/signals", json=body, headers=device.auth()) as r:
            assert r.status == 202
            return await r.json()

    assert await post("old") == {"accepted": 1, "duplicates": 0}
    assert await post("kept") == {"accepted": 1, "duplicates": 0}
    await pool.execute(
        "UPDATE signals SET processed_at = now() - $1::interval - interval '1 min' "
        "WHERE client_id = 'old'",
        api.ctx.settings.signal_retention,
    )
    await pool.execute("UPDATE signals SET processed_at = now() WHERE client_id = 'kept'")
    assert await maintenance.purge_signals(api.ctx) == 1
    assert await post("kept") == {"accepted": 0, "duplicates": 1}
    assert await post("old") == {"accepted": 1, "duplicates": 0}


async def test_export_returns_everything_stored_but_the_keys(api: LiveApi) -> None:
    pool = api.ctx.pool
    device = await register(api, topics=["food"], attributes={"tier": "gold"})
    other = await register(api)
    body = {
        "signals": [
            {"lat": 52.52, "lon": 13.405, "moment": "go", "id": "fix-1"},
            {"lat": 52.53, "lon": 13.4},
        ]
    }
    for d in (device, other):
        async with api.http.post(api.url + "/v1/signals", json=body, headers=d.auth()) as r:
            assert r.status == 202
    await pool.execute(
        "INSERT INTO presence (subscription_id, rule_id, place_id, inside, updated_at)"
        " VALUES ($1, 'lunch', 'rest-01', true, now())",
        device.id,
    )
    await insert_delivery(
        pool,
        uuid.UUID(device.id),
        rule_id="lunch",
        variant="",
        place_id="rest-01",
        payload={"title": "Lunch?", "body": "2-for-1"},
        ttl_s=60,
        topic=None,
        events=["shown"],
    )

    url = api.url + f"/v1/subscriptions/{device.id}/export"
    async with api.http.get(url, headers=api.admin()) as r:
        assert r.status == 200, await r.text()
        export = await r.json()
    assert export["profile"]["id"] == device.id
    assert export["profile"]["topics"] == ["food"]
    assert [(s["lat"], s["moment"], s["client_id"]) for s in export["signals"]] == [
        (52.52, "go", "fix-1"),
        (52.53, None, None),
    ]
    assert [(p["rule_id"], p["inside"]) for p in export["presence"]] == [("lunch", True)]
    [delivery] = export["deliveries"]
    assert delivery["payload"]["title"] == "Lunch?"
    assert [e["type"] for e in delivery["events"]] == ["shown"]
    text = json.dumps(export)
    for secret in (
        device.subscription["endpoint"],
        device.subscription["keys"]["p256dh"],
        device.subscription["keys"]["auth"],
        device.token,
    ):
        assert secret not in text
    assert other.id not in text

    # Admin only; an unknown or malformed id is 404.
    async with api.http.get(url, headers=device.auth()) as r:
        assert r.status == 401
    async with api.http.get(url) as r:
        assert r.status == 401
    for missing in ("00000000-0000-0000-0000-000000000000", "nope"):
        async with api.http.get(
            api.url + f"/v1/subscriptions/{missing}/export", headers=api.admin()
        ) as r:
            assert r.status == 404
