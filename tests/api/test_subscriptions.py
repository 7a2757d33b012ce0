"""Subscriptions over real HTTP: validation, re-registration, tokens, erasure, CORS."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from typing import Any

import pytest

from service.tokens import hash_token
from tests.api.conftest import (
    Device,
    assert_error,
    b64url,
    count_rows,
    push_subscription,
    register,
)
from tests.conftest import LiveApi

OFF_CURVE = b64url(b"\x04" + b"\x01" * 64)  # right length and prefix, not on P-256


def _sub(**changes: Any) -> dict[str, Any]:
    sub = push_subscription()
    keys = changes.pop("keys", {})
    sub["keys"].update(keys)
    sub.update(changes)
    return sub


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("not an object", [1, 2], 422, "(body)"),
    ("no subscription", {"timezone": "Europe/Paris"}, 422, "subscription"),
    ("unknown key", {"subscription": _sub(), "colour": "red"}, 422, "colour"),
    (
        "https host not listed",
        {"subscription": _sub(endpoint="https://push.evil.example/x")},
        422,
        "subscription.endpoint",
    ),
    (
        "private address",
        {"subscription": _sub(endpoint="http://10.0.0.1/x")},
        422,
        "subscription.endpoint",
    ),
    (
        "not a url",
        {"subscription": _sub(endpoint="ftp://127.0.0.1/x")},
        422,
        "subscription.endpoint",
    ),
    (
        "endpoint with spaces",
        {"subscription": _sub(endpoint="http://127.0.0.1/a b")},
        422,
        "subscription.endpoint",
    ),
    ("endpoint not a string", {"subscription": _sub(endpoint=42)}, 422, "subscription.endpoint"),
    (
        "p256dh not base64url",
        {"subscription": _sub(keys={"p256dh": "***"})},
        422,
        "subscription.keys.p256dh",
    ),
    (
        "p256dh too short",
        {"subscription": _sub(keys={"p256dh": b64url(b"\x04" * 64)})},
        422,
        "subscription.keys.p256dh",
    ),
    (
        "p256dh compressed",
        {"subscription": _sub(keys={"p256dh": b64url(b"\x02" + b"\x01" * 32)})},
        422,
        "subscription.keys.p256dh",
    ),
    (
        "p256dh off the curve",
        {"subscription": _sub(keys={"p256dh": OFF_CURVE})},
        422,
        "not a point on the P-256 curve",
    ),
    (
        "auth 15 bytes",
        {"subscription": _sub(keys={"auth": b64url(b"a" * 15)})},
        422,
        "subscription.keys.auth",
    ),
    (
        "keys missing",
        {"subscription": {"endpoint": "http://127.0.0.1/x"}},
        422,
        "subscription.keys",
    ),
    (
        "expirationTime a string",
        {"subscription": _sub(expirationTime="soon")},
        422,
        "subscription.expirationTime",
    ),
    (
        "timezone unknown",
        {"subscription": _sub(), "timezone": "Mars/Olympus_Mons"},
        422,
        "timezone",
    ),
    ("locale not BCP 47", {"subscription": _sub(), "locale": "english!"}, 422, "locale"),
    (
        "too many topics",
        {"subscription": _sub(), "topics": [f"t{i}" for i in range(33)]},
        422,
        "topics",
    ),
    ("topic with a space", {"subscription": _sub(), "topics": ["hot food"]}, 422, "topics.0"),
    (
        "nested attribute",
        {"subscription": _sub(), "attributes": {"a": {"b": 1}}},
        422,
        "attributes.a",
    ),
    (
        "attribute too long",
        {"subscription": _sub(), "attributes": {"a": "x" * 300}},
        422,
        "attributes.a",
    ),
    ("attribute with NUL", {"subscription": _sub(), "attributes": {"a": "x\u0000"}}, 422, "NUL"),
    (
        "too many attributes",
        {"subscription": _sub(), "attributes": {f"k{i}": i for i in range(33)}},
        422,
        "attributes",
    ),
    (
        "consent not a bool",
        {"subscription": _sub(), "location_consent": "yes"},
        422,
        "location_consent",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "mentions"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_registration_is_refused_and_stores_nothing(
    api: LiveApi, name: str, body: Any, status: int, mentions: str
) -> None:
    async with api.http.post(api.url + "/v1/subscriptions", json=body) as resp:
        assert resp.status == status, await resp.text()
        assert_error(await resp.json(), status, "invalid", mentions)
    assert (await count_rows(api.ctx.pool, "subscriptions"))["subscriptions"] == 0


async def test_malformed_json_and_wrong_content_type(api: LiveApi) -> None:
    async with api.http.post(
        api.url + "/v1/subscriptions",
        data=b'{"subscription": ',
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        assert_error(await resp.json(), 400, "bad_request", "malformed JSON")
    async with api.http.post(
        api.url + "/v1/subscriptions",
        data=json.dumps({"subscription": push_subscription()}),
        headers={"Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 415
        assert_error(await resp.json(), 415, "unsupported_media_type", "application/json")
    big = json.dumps(
        {"subscription": push_subscription(), "x": "a" * api.ctx.settings.max_body_bytes}
    )
    async with api.http.post(
        api.url + "/v1/subscriptions", data=big, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
    assert (await count_rows(api.ctx.pool, "subscriptions"))["subscriptions"] == 0


async def test_registration_stores_hash_only_and_profile(api: LiveApi) -> None:
    device = await register(
        api,
        timezone="Europe/Berlin",
        locale="de-DE",
        topics=["food", "coffee", "food"],
        attributes={"tier": "gold", "age": 30},
        location_consent=True,
    )
    raw = base64.urlsafe_b64decode(device.token + "=" * (-len(device.token) % 4))
    assert len(raw) == 32
    row = await api.ctx.pool.fetchrow("SELECT * FROM subscriptions WHERE id = $1::uuid", device.id)
    assert bytes(row["token_hash"]) == hash_token(device.token)
    assert device.token not in json.dumps(dict(row), default=str)
    async with api.http.get(
        api.url + f"/v1/subscriptions/{device.id}", headers=device.auth()
    ) as resp:
        assert resp.status == 200
        profile = await resp.json()
    assert profile["topics"] == ["coffee", "food"]
    assert profile["attributes"] == {"tier": "gold", "age": 30}
    assert profile["timezone"] == "Europe/Berlin" and profile["locale"] == "de-DE"
    assert profile["consent_at"] is not None and profile["paused"] is False
    # Never the keys or the endpoint.
    text = json.dumps(profile)
    for secret in (
        device.subscription["keys"]["p256dh"],
        device.subscription["keys"]["auth"],
        device.subscription["endpoint"],
    ):
        assert secret not in text


async def test_reregistration_keeps_id_rotates_token_and_keys(api: LiveApi) -> None:
    first = await register(api, timezone="Europe/Berlin", topics=["food"])
    # New keys for the same endpoint: the device proves it holds the subscription by its token.
    again = push_subscription(first.subscription["endpoint"])
    async with api.http.post(
        api.url + "/v1/subscriptions",
        json={"subscription": again, "topics": ["coffee"]},
        headers=first.auth(),
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["id"] == first.id and body["token"] != first.token
    second = Device(body["id"], body["token"], again)
    async with api.http.get(
        api.url + f"/v1/subscriptions/{first.id}", headers=first.auth()
    ) as resp:
        assert resp.status == 401
    async with api.http.get(
        api.url + f"/v1/subscriptions/{first.id}", headers=second.auth()
    ) as resp:
        profile = await resp.json()
    assert profile["topics"] == ["coffee"]
    assert profile["timezone"] == "Europe/Berlin"  # not given again: kept
    row = await api.ctx.pool.fetchrow("SELECT p256dh, auth FROM subscriptions")
    assert (row["p256dh"], row["auth"]) == (again["keys"]["p256dh"], again["keys"]["auth"])
    assert (await count_rows(api.ctx.pool, "subscriptions"))["subscriptions"] == 1


async def test_endpoint_alone_does_not_take_over_a_subscription(
    api: LiveApi, device: Device, other_device: Device
) -> None:
    # Measured: other keys and no credential answered 200 with the same id, and the real
    # device's token then got 401. An endpoint URL is no secret (push services, logs, tickets).
    endpoint = device.subscription["endpoint"]
    before = await api.ctx.pool.fetchrow(
        "SELECT * FROM subscriptions WHERE id = $1::uuid", device.id
    )
    stranger = push_subscription(endpoint)
    not_credentials: list[dict[str, str]] = [
        {},
        other_device.auth(),  # another subscription's token
        {"Authorization": "Bearer " + "z" * 43},  # no token at all
        {"Authorization": "Basic abc"},
        api.admin(),  # the admin does not own browsers' subscriptions either
    ]
    for headers in not_credentials:
        async with api.http.post(
            api.url + "/v1/subscriptions",
            json={"subscription": stranger, "topics": ["stolen"]},
            headers=headers,
        ) as resp:
            body = await resp.json()
            assert resp.status == 409, (headers, body)
        assert_error(body, 409, "endpoint_registered", "already registered")
        assert device.token not in json.dumps(body) and device.id not in json.dumps(body)
    # Nothing changed: same keys, same token, same profile.
    after = await api.ctx.pool.fetchrow(
        "SELECT * FROM subscriptions WHERE id = $1::uuid", device.id
    )
    assert dict(after) == dict(before)
    async with api.http.get(
        api.url + f"/v1/subscriptions/{device.id}", headers=device.auth()
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["topics"] == ["food"]


async def test_same_browser_subscription_reregisters_without_token(
    api: LiveApi, device: Device
) -> None:
    # The browser sends its unchanged subscription again (a reinstall, lost local storage):
    # its keys.auth is the proof.
    async with api.http.post(
        api.url + "/v1/subscriptions", json={"subscription": device.subscription}
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["id"] == device.id and body["token"] != device.token
    async with api.http.get(
        api.url + f"/v1/subscriptions/{device.id}", headers=device.auth()
    ) as resp:
        assert resp.status == 401  # the old token is revoked
    async with api.http.get(
        api.url + f"/v1/subscriptions/{device.id}",
        headers={"Authorization": f"Bearer {body['token']}"},
    ) as resp:
        assert resp.status == 200


async def test_reregistration_with_a_stale_token_is_refused(api: LiveApi) -> None:
    first = await register(api)
    # The same browser subscription renews the token; the first token is no proof any more.
    async with api.http.post(
        api.url + "/v1/subscriptions", json={"subscription": first.subscription}
    ) as resp:
        assert resp.status == 200
    async with api.http.post(
        api.url + "/v1/subscriptions",
        json={"subscription": push_subscription(first.subscription["endpoint"])},
        headers=first.auth(),
    ) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "endpoint_registered"


async def test_concurrent_first_registrations_of_one_endpoint(api: LiveApi) -> None:
    # Racing inserts of a new endpoint: one creates it, the same subscription renews it, and
    # other keys get 409; none is a 500 or a second row.
    endpoint = push_subscription()["endpoint"]
    same = push_subscription(endpoint)
    others = [push_subscription(endpoint) for _ in range(5)]

    async def post(sub: dict[str, Any]) -> int:
        async with api.http.post(api.url + "/v1/subscriptions", json={"subscription": sub}) as r:
            return r.status

    statuses = await asyncio.gather(*(post(sub) for sub in [same, same, *others]))
    rows = await api.ctx.pool.fetch("SELECT auth FROM subscriptions WHERE endpoint = $1", endpoint)
    assert len(rows) == 1
    winner = rows[0]["auth"]
    for sub, status in zip([same, same, *others], statuses, strict=True):
        if sub["keys"]["auth"] == winner:
            assert status in (200, 201), statuses
        else:
            assert status == 409, statuses
    assert statuses.count(201) == 1, statuses


async def test_patch_changes_only_given_fields(api: LiveApi, device: Device) -> None:
    url = api.url + f"/v1/subscriptions/{device.id}"
    async with api.http.patch(
        url, json={"paused": True, "locale": None}, headers=device.auth()
    ) as resp:
        assert resp.status == 200
        profile = await resp.json()
    assert profile["paused"] is True and profile["locale"] is None
    assert profile["timezone"] == "Europe/Berlin" and profile["topics"] == ["food"]
    async with api.http.patch(
        url, json={"timezone": "Nowhere/City"}, headers=device.auth()
    ) as resp:
        assert resp.status == 422
        assert_error(await resp.json(), 422, "invalid", "timezone")
    row = await api.ctx.pool.fetchrow("SELECT timezone, paused FROM subscriptions")
    assert (row["timezone"], row["paused"]) == ("Europe/Berlin", True)


async def test_patch_location_consent(api: LiveApi, device: Device) -> None:
    url = api.url + f"/v1/subscriptions/{device.id}"

    async def patch(body: dict[str, Any]) -> dict[str, Any]:
        async with api.http.patch(url, json=body, headers=device.auth()) as resp:
            assert resp.status == 200
            profile: dict[str, Any] = await resp.json()
            return profile

    given = (await patch({"location_consent": True}))["consent_at"]
    assert given is not None
    assert (await patch({"attributes": {"tier": "gold"}}))["consent_at"] == given  # kept
    assert (await patch({"location_consent": None}))["consent_at"] is None  # null withdraws


def _credentials(device: Device, other: Device, admin: dict[str, str]) -> dict[str, Any]:
    return {
        "none": {},
        "malformed": {"Authorization": f"Basic {device.token}"},
        "wrong": {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"},
        "other": other.auth(),
        "admin": admin,
    }


DEVICE_ONLY = {"none": 401, "malformed": 401, "wrong": 401, "other": 403, "admin": 403}


@pytest.mark.parametrize("who", list(DEVICE_ONLY))
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_token_matrix(
    api: LiveApi, device: Device, other_device: Device, who: str, method: str
) -> None:
    headers = _credentials(device, other_device, api.admin())[who]
    expected = DEVICE_ONLY[who]
    if method == "DELETE" and who == "admin":
        expected = 204
    body = {"paused": True} if method == "PATCH" else None
    async with api.http.request(
        method, api.url + f"/v1/subscriptions/{device.id}", json=body, headers=headers
    ) as resp:
        assert resp.status == expected, await resp.text()
        if expected >= 400:
            payload = await resp.json()
            assert payload["error"]["code"] == ("unauthorized" if expected == 401 else "forbidden")
    still_there = await api.ctx.pool.fetchval(
        "SELECT paused FROM subscriptions WHERE id = $1::uuid", device.id
    )
    if expected == 204:
        assert still_there is None
    else:
        assert still_there is False  # neither patched nor deleted


async def test_device_may_not_probe_other_ids(api: LiveApi, device: Device) -> None:
    for other_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        async with api.http.get(
            api.url + f"/v1/subscriptions/{other_id}", headers=device.auth()
        ) as resp:
            assert resp.status == 403
    async with api.http.delete(
        api.url + "/v1/subscriptions/00000000-0000-0000-0000-000000000000", headers=api.admin()
    ) as resp:
        assert resp.status == 404


async def insert_delivery(pool: Any, dev: Device) -> int:
    """A sent delivery full of personal data, as the worker and sender would leave it."""
    columns = {
        "subscription_id": "$1::uuid",
        "signal_id": "(SELECT max(id) FROM signals)",
        "rule_id": "'lunch'",
        "variant": "'a'",
        "place_id": "'place-1'",
        "dedupe_key": "$1 || ':lunch'",
        "payload": "$2",
        "distance_m": "42",
        "local_hour": "12",
        "ttl_s": "60",
        "status": "'sent'",
        "expires_at": "now() + interval '1 hour'",
        "last_error": "'HTTP 500 from ' || $3",
    }
    # Later migrations may add required timestamps (the worker's decided_at, ...).
    for extra in await pool.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_name = 'deliveries' AND is_nullable = 'NO' AND column_default IS NULL
             AND data_type = 'timestamp with time zone'"""
    ):
        columns.setdefault(extra["column_name"], "now()")
    return int(
        await pool.fetchval(
            f"INSERT INTO deliveries ({', '.join(columns)}) VALUES ({', '.join(columns.values())})"
            " RETURNING id",
            dev.id,
            {"title": "hi", "endpoint": dev.subscription["endpoint"]},
            dev.subscription["endpoint"],
        )
    )


async def test_erasure_leaves_no_personal_row(
    api: LiveApi, device: Device, other_device: Device
) -> None:
    pool = api.ctx.pool
    for dev in (device, other_device):
        # Client-chosen signal ids are the client's data too.
        signals = [{"lat": 52.52, "lon": 13.405, "id": f"sig-{dev.id[:8]}-{i}"} for i in range(3)]
        async with api.http.post(
            api.url + "/v1/signals", json={"signals": signals}, headers=dev.auth()
        ) as resp:
            assert resp.status == 202
        await pool.execute(
            """INSERT INTO presence (subscription_id, rule_id, place_id, inside, updated_at)
               VALUES ($1::uuid, 'lunch', 'place-1', true, now())""",
            dev.id,
        )
        delivery_id = await insert_delivery(pool, dev)
        await pool.execute(
            "INSERT INTO events (delivery_id, type) VALUES ($1, 'shown')", delivery_id
        )
    before = await count_rows(pool)

    async with api.http.delete(
        api.url + f"/v1/subscriptions/{device.id}", headers=device.auth()
    ) as resp:
        assert resp.status == 204

    after = await count_rows(pool)
    assert after["subscriptions"] == before["subscriptions"] - 1
    assert after["signals"] == before["signals"] - 3
    assert after["presence"] == before["presence"] - 1
    # Statistics keep their counts ...
    assert after["deliveries"] == before["deliveries"]
    assert after["events"] == before["events"]
    # ... but no row anywhere mentions the erased device, its endpoint or its keys.
    tables = [
        r["tablename"]
        for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    traces = (
        device.id,
        device.subscription["endpoint"],
        device.subscription["keys"]["auth"],
        f"sig-{device.id[:8]}-",
    )
    for table in tables:
        for trace in traces:
            hits = await pool.fetchval(
                f"SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'", trace
            )
            assert hits == 0, (table, trace)
    erased = await pool.fetchrow("SELECT * FROM deliveries WHERE subscription_id IS NULL")
    assert erased["payload"] is None and erased["place_id"] is None
    assert erased["distance_m"] is None and erased["signal_id"] is None
    assert (erased["rule_id"], erased["variant"], erased["status"]) == ("lunch", "a", "sent")
    # The other device is untouched.
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM signals WHERE subscription_id = $1::uuid", other_device.id
        )
        == 3
    )
    async with api.http.get(
        api.url + f"/v1/subscriptions/{device.id}", headers=device.auth()
    ) as resp:
        assert resp.status == 401


async def test_cors_preflight_and_headers(api_with: Any) -> None:
    api = await api_with(cors_origins=["https://shop.example"])
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with api.http.options(api.url + "/v1/signals", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    async with api.http.options(
        api.url + "/v1/signals", headers={**preflight, "Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
    # Error answers carry the headers too, so the page can read the message.
    async with api.http.post(
        api.url + "/v1/signals",
        json={"lat": 1, "lon": 2},
        headers={"Origin": "https://shop.example"},
    ) as resp:
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    async with api.http.get(
        api.url + "/healthz", headers={"Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers
