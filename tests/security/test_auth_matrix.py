"""Every endpoint of /openapi.json x every kind of credential: only the right holder gets in.

The table below classifies each operation; an operation the spec adds without a row here
fails ``test_every_operation_is_classified``, so a new endpoint cannot ship unreviewed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import Device, register
from tests.conftest import LiveApi
from tests.factories import insert_delivery

PUBLIC = "public"
DEVICE = "device"  # the path's own device only
DEVICE_OR_ADMIN = "device_or_admin"
DEVICE_SELF = "device_self"  # a device acting on itself (no id in the path)
ADMIN = "admin"
EVENT_TOKEN = "event_token"  # a per-delivery HMAC in the body or query, no bearer token

ACCESS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): ADMIN,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/v1/vapid-public-key"): PUBLIC,
    ("POST", "/v1/subscriptions"): PUBLIC,
    ("GET", "/v1/subscriptions/{id}"): DEVICE,
    ("PATCH", "/v1/subscriptions/{id}"): DEVICE,
    ("DELETE", "/v1/subscriptions/{id}"): DEVICE_OR_ADMIN,
    ("GET", "/v1/subscriptions/{id}/export"): ADMIN,
    # The dashboard's test recipients: no endpoint, token or position, still admin only.
    ("GET", "/v1/subscriptions"): ADMIN,
    ("POST", "/v1/signals"): DEVICE_SELF,
    ("POST", "/v1/events"): EVENT_TOKEN,
    # The navigate links of declarative pushes: the event token is ?t=.
    ("GET", "/c/{delivery_id}/{action}"): EVENT_TOKEN,
    ("GET", "/v1/rules"): ADMIN,
    ("POST", "/v1/rules/reload"): ADMIN,
    ("POST", "/v1/simulate"): ADMIN,
    ("POST", "/v1/rules/{id}/test"): ADMIN,
    ("GET", "/v1/backtest"): ADMIN,
    ("GET", "/v1/stats"): ADMIN,
    ("GET", "/v1/dashboard"): ADMIN,
    ("GET", "/v1/stats/places"): ADMIN,
    ("GET", "/v1/stats.csv"): ADMIN,
    ("POST", "/v1/campaigns"): ADMIN,
    ("GET", "/v1/campaigns"): ADMIN,
    ("GET", "/v1/campaigns/{id}"): ADMIN,
    ("DELETE", "/v1/campaigns/{id}"): ADMIN,
    # Static pages and scripts for browsers: no data behind them.
    ("GET", "/"): PUBLIC,
    ("GET", "/dashboard"): PUBLIC,
    ("GET", "/momentcast.js"): PUBLIC,
    ("GET", "/sw.js"): PUBLIC,
    ("GET", "/static/{name}"): PUBLIC,
    ("GET", "/static/vendor/leaflet/{path}"): PUBLIC,
}

BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/subscriptions/{id}"): {"paused": True},
    ("POST", "/v1/signals"): {"lat": 52.52, "lon": 13.41},
    ("POST", "/v1/simulate"): {"signal": {"lat": 52.52, "lon": 13.41}, "profile": {}},
    ("POST", "/v1/campaigns"): {
        "id": "matrix",
        "audience": {"topics": ["food"]},
        "message": {"title": "Hello"},
        "send_at": {"local": (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT12:00")},
    },
}

# Ways to get the Authorization header wrong; each must be a plain 401.
MALFORMED = [
    "Bearer",
    "Bearer ",
    "Bearer    ",
    "Basic dXNlcjpwYXNzd29yZA==",
    "Token abcdefghijklmnopqrstuvwxyz",
    "bearer-abcdefghijklmnopqrstuvwxyz",
    "Bearer " + "A" * 4096,
    "Bearer \u00e9\u00e9\u00e9",
    "Bearer abc def",
]
WHO = ["none", "malformed", "wrong", "other", "admin", "own"]


async def _spec(api: LiveApi) -> dict[str, Any]:
    async with api.http.get(api.url + "/openapi.json") as resp:
        assert resp.status == 200
        spec: dict[str, Any] = await resp.json()
    return spec


async def test_every_operation_is_classified(api: LiveApi) -> None:
    spec = await _spec(api)
    ops = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert ops == set(ACCESS), (
        f"unclassified: {sorted(ops - set(ACCESS))}; gone: {sorted(set(ACCESS) - ops)}"
    )
    for (method, path), kind in ACCESS.items():
        declared = "security" in spec["paths"][path][method.lower()]
        assert declared == (kind not in (PUBLIC, EVENT_TOKEN)), (method, path)
    # And the app serves no route the spec does not describe (HEAD and CORS preflight
    # aside, which take no credentials and change nothing).
    from service.api import create_app

    served = {
        (r.method, r.resource.canonical)
        for r in create_app(api.ctx).router.routes()
        if r.resource is not None and r.method not in ("HEAD", "OPTIONS", "*")
    }
    assert served <= set(ACCESS), sorted(served - set(ACCESS))


def _headers(
    who: str, device: Device, other: Device, admin: dict[str, str], malformed: str
) -> dict[str, str]:
    return {
        "none": {},
        "malformed": {"Authorization": malformed},
        "wrong": {"Authorization": "Bearer " + uuid.uuid4().hex + uuid.uuid4().hex},
        "other": other.auth(),
        "admin": admin,
        "own": device.auth(),
    }[who]


def _expected(kind: str, who: str) -> set[int]:
    if who in ("none", "malformed", "wrong"):
        return {401}
    table: dict[str, dict[str, set[int]]] = {
        DEVICE: {"other": {403}, "admin": {403}, "own": {200}},
        DEVICE_OR_ADMIN: {"other": {403}, "admin": {204}, "own": {204}},
        DEVICE_SELF: {"other": {202}, "admin": {403}, "own": {202}},
        # A device token is no admin token: 401 (unknown credential) or 403 are both refusals.
        ADMIN: {"other": {401, 403}, "admin": {200}, "own": {401, 403}},
    }
    return table[kind][who]


def _expected_of(method: str, path: str, kind: str, who: str) -> set[int]:
    if (method, path) == ("POST", "/v1/rules/{id}/test") and who == "admin":
        return {202}  # a test push is accepted into the outbox
    if path == "/v1/campaigns" and method == "POST" and who == "admin":
        return {201}  # created
    if path == "/v1/campaigns/{id}" and who == "admin":
        return {404}  # in, and no campaign has the device's id
    return _expected(kind, who)


async def _snapshot(api: LiveApi, device: Device) -> tuple[Any, ...]:
    pool = api.ctx.pool
    row = await pool.fetchrow(
        "SELECT paused, status FROM subscriptions WHERE id = $1::uuid", device.id
    )
    signals = await pool.fetchval(
        "SELECT count(*) FROM signals WHERE subscription_id = $1::uuid", device.id
    )
    return (tuple(row) if row else None, signals)


PROTECTED = sorted(k for k, v in ACCESS.items() if v not in (PUBLIC, EVENT_TOKEN))


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_auth_matrix(api: LiveApi, method: str, path: str, who: str) -> None:
    device = await register(api, topics=["food"])
    other = await register(api)
    kind = ACCESS[(method, path)]
    expected = _expected_of(method, path, kind, who)
    url = api.url + path.replace("{id}", device.id)
    body = BODIES.get((method, path))
    if path == "/v1/rules/{id}/test":  # a rule's id in the path, the device's in the body
        url = api.url + "/v1/rules/lunch-nearby/test"
        body = {"subscription_id": device.id}
    variants = MALFORMED if who == "malformed" else [""]
    for malformed in variants:
        before = await _snapshot(api, device)
        headers = _headers(who, device, other, api.admin(), malformed)
        async with api.http.request(method, url, json=body, headers=headers) as resp:
            text = await resp.text()
            assert resp.status in expected, (method, path, who, malformed[:20], resp.status, text)
            if resp.status in (401, 403):
                error = (await resp.json())["error"]
                assert error["code"] == ("unauthorized" if resp.status == 401 else "forbidden")
                if resp.status == 401:
                    assert resp.headers.get("WWW-Authenticate") == "Bearer"
                # A refusal never echoes the credential it was given.
                if headers.get("Authorization"):
                    token = headers["Authorization"].partition(" ")[2].strip()
                    assert len(token) < 8 or token not in text
        after = await _snapshot(api, device)
        if min(expected) >= 400 or who == "other":
            # Refused, or acting on the other device: the device's data is untouched.
            assert after == before, (method, path, who)


async def _delivery(api: LiveApi, device: Device) -> int:
    return await insert_delivery(
        api.ctx.pool,
        uuid.UUID(device.id),
        rule_id="r",
        dedupe_key=uuid.uuid4().hex,
        payload={},
        ttl_s=60,
        expires_in=3600,
        topic=None,
        status="sent",
    )


async def test_event_tokens_open_their_own_delivery_only(api: LiveApi) -> None:
    from service import tokens

    device = await register(api)
    mine, theirs = await _delivery(api, device), await _delivery(api, device)
    key = api.ctx.keys.secret_key
    cases = [
        (mine, "", {400, 403, 422}),
        (mine, "x" * 32, {403}),
        (mine, tokens.event_token(key, theirs), {403}),  # another delivery's token
        (mine, tokens.event_token(b"\0" * 32, mine), {403}),  # signed with another key
        (mine, device.token, {403}),  # a device token is not an event token
        (10**12, tokens.event_token(key, 10**12), {404}),
        (mine, tokens.event_token(key, mine), {202}),
    ]
    for delivery_id, token, expected in cases:
        body = {"delivery_id": delivery_id, "token": token, "type": "clicked"}
        async with api.http.post(api.url + "/v1/events", json=body, headers=api.admin()) as resp:
            assert resp.status in expected, (delivery_id, token[:8], await resp.text())
    recorded = await api.ctx.pool.fetch("SELECT delivery_id FROM events")
    assert [r["delivery_id"] for r in recorded] == [mine]


async def test_click_links_open_their_own_delivery_only(api: LiveApi) -> None:
    from service import tokens

    device = await register(api)
    mine, theirs = await _delivery(api, device), await _delivery(api, device)
    await api.ctx.pool.execute(
        'UPDATE deliveries SET payload = \'{"url": "https://example.com/o"}\' WHERE id = $1',
        mine,
    )
    key = api.ctx.keys.secret_key
    cases = [
        (mine, "", 404),
        (mine, "x" * 32, 404),
        (mine, tokens.event_token(key, theirs), 404),  # another delivery's token
        (mine, tokens.event_token(b"\0" * 32, mine), 404),  # signed with another key
        (mine, device.token, 404),  # a device token is not an event token
        (10**12, tokens.event_token(key, 10**12), 404),
        (mine, tokens.event_token(key, mine), 302),
    ]
    for delivery_id, token, expected in cases:
        # Bearer credentials change nothing: only the event token opens the link.
        for headers in ({}, api.admin(), device.auth()):
            async with api.http.get(
                f"{api.url}/c/{delivery_id}/open",
                params={"t": token},
                headers=headers,
                allow_redirects=False,
            ) as resp:
                assert resp.status == expected, (delivery_id, token[:8], await resp.text())
                assert ("Location" in resp.headers) == (expected == 302)
    recorded = await api.ctx.pool.fetch("SELECT delivery_id FROM events")
    assert [r["delivery_id"] for r in recorded] == [mine]


async def test_public_endpoints_need_no_credentials(api: LiveApi) -> None:
    for method, path in sorted(k for k, v in ACCESS.items() if v == PUBLIC):
        if method != "GET" or "{" in path:
            continue
        async with api.http.get(api.url + path) as resp:
            assert resp.status in (200, 503), (path, resp.status)  # readyz may be 503


async def test_device_cannot_reach_another_device_by_any_id_spelling(api: LiveApi) -> None:
    device = await register(api)
    other = await register(api)
    spellings = [
        other.id,
        other.id.upper(),
        other.id.replace("-", ""),
        "{" + other.id + "}",
        "urn:uuid:" + other.id,
    ]
    for spelling in spellings:
        for method in ("GET", "PATCH", "DELETE"):
            body = {"paused": True} if method == "PATCH" else None
            async with api.http.request(
                method, f"{api.url}/v1/subscriptions/{spelling}", json=body, headers=device.auth()
            ) as resp:
                assert resp.status in (403, 404), (spelling, method, resp.status)
    row = await api.ctx.pool.fetchrow(
        "SELECT paused, status FROM subscriptions WHERE id = $1::uuid", other.id
    )
    assert row is not None and not row["paused"] and row["status"] == "active"
