"""Hostile input: oversized and deeply nested JSON, slow bodies, and what is stored and logged."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import register
from tests.conftest import LiveApi
from tests.security.logscan import Watch, leaks

BODY_ENDPOINTS = [
    ("POST", "/v1/subscriptions", False),
    ("PATCH", "/v1/subscriptions/{id}", True),
    ("POST", "/v1/signals", True),
    ("POST", "/v1/events", False),
    ("POST", "/v1/simulate", "admin"),
]


def _auth(api: LiveApi, device: Any, who: Any) -> dict[str, str]:
    if who == "admin":
        return api.admin()
    return device.auth() if who else {}


async def _healthy(api: LiveApi) -> None:
    async with api.http.get(api.url + "/healthz") as resp:
        assert resp.status == 200


@pytest.mark.parametrize(("method", "path", "who"), BODY_ENDPOINTS)
async def test_oversized_bodies_get_413(api: LiveApi, method: str, path: str, who: Any) -> None:
    device = await register(api)
    url = api.url + path.replace("{id}", device.id)
    limit = api.ctx.settings.max_body_bytes
    big = b'{"x": "' + b"a" * (limit + 10) + b'"}'

    async def chunks() -> Any:  # no Content-Length: the limit must hold while streaming too
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    headers = {**_auth(api, device, who), "Content-Type": "application/json"}
    for data in (big, chunks()):
        async with api.http.request(method, url, data=data, headers=headers) as resp:
            assert resp.status == 413, (path, resp.status, await resp.text())
            assert (await resp.json())["error"]["code"] == "payload_too_large"
    await _healthy(api)


def _nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize(("method", "path", "who"), BODY_ENDPOINTS)
async def test_deeply_nested_json_is_a_client_error(
    api: LiveApi, method: str, path: str, who: Any, kind: str
) -> None:
    device = await register(api)
    url = api.url + path.replace("{id}", device.id)
    headers = {**_auth(api, device, who), "Content-Type": "application/json"}
    depth = 50_000  # 100 KB: under the size limit, far over any parser's recursion limit
    bodies = [_nested(depth, kind)]
    # Nested inside fields that accept objects, too.
    inner = _nested(depth, "dict")
    bodies.append('{"lat": 52.5, "lon": 13.4, "context": {"k": ' + inner + "}}")
    bodies.append('{"attributes": {"k": ' + inner + "}}")
    for body in bodies:
        async with api.http.request(method, url, data=body, headers=headers) as resp:
            assert 400 <= resp.status < 500, (path, resp.status, await resp.text())
            assert "error" in await resp.json()
    await _healthy(api)


async def test_many_keys_and_huge_numbers_are_client_errors(api: LiveApi) -> None:
    device = await register(api)
    bodies = [
        json.dumps({f"k{i}": i for i in range(20_000)}),
        '{"lat": 1' + "0" * 5000 + ', "lon": 13}',
        '{"lat": 1e999999, "lon": 13}',
        '{"lat": 52.5, "lon": 13.4, "context": {'
        + ",".join(f'"k{i}": {i}' for i in range(10_000))
        + "}}",
        '{"signals": [' + ",".join(['{"lat": 52.5, "lon": 13.4}'] * 5000) + "]}",
    ]
    for body in bodies:
        async with api.http.post(
            api.url + "/v1/signals",
            data=body,
            headers={**device.auth(), "Content-Type": "application/json"},
        ) as resp:
            assert 400 <= resp.status < 500, (resp.status, await resp.text())
    assert await api.ctx.pool.fetchval("SELECT count(*) FROM signals") == 0
    await _healthy(api)


async def _slow_request(
    url: str, path: str, headers: dict[str, str], total: int, every: float, budget: float
) -> tuple[float, bytes]:
    """Send headers, then one body byte every ``every`` s; how long until the server ends it."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {total}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode())
    started = time.monotonic()
    answer = b""
    try:
        for _ in range(total):
            writer.write(b" ")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(4096), every)
            except TimeoutError:
                answer = b""
            if answer or reader.at_eof() or time.monotonic() - started > budget:
                break
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - started, answer


async def test_slow_body_is_cut_off(api_with: Any) -> None:
    api: LiveApi = await api_with(body_read_timeout=2)
    budget = 10.0
    elapsed, answer = await _slow_request(
        api.url,
        "/v1/subscriptions",
        {"Content-Type": "application/json"},
        total=10_000,
        every=0.5,
        budget=budget,
    )
    # A client trickling a body must not hold a connection (and a handler) open forever.
    assert elapsed < budget, f"a body trickled for {elapsed:.0f}s was still being read"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer
    await _healthy(api)


async def test_device_tokens_are_stored_as_sha256_only(api: LiveApi) -> None:
    devices = [await register(api, attributes={"tier": "gold"}) for _ in range(3)]
    pool = api.ctx.pool
    for device in devices:
        stored = await pool.fetchval(
            "SELECT token_hash FROM subscriptions WHERE id = $1::uuid", device.id
        )
        assert bytes(stored) == hashlib.sha256(device.token.encode()).digest()
    # The clear token appears in no column of any table, in any encoding we could think of.
    tables = [
        r["tablename"]
        for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    assert "subscriptions" in tables
    for table in tables:
        dump = "\n".join(
            r["j"] for r in await pool.fetch(f'SELECT row_to_json(t)::text AS j FROM "{table}" t')
        )
        for device in devices:
            assert device.token not in dump, table
            assert device.token.encode().hex() not in dump, table
    # A rotated token (re-registration) invalidates the old one: only one hash per device.
    async with api.http.post(
        api.url + "/v1/subscriptions", json={"subscription": devices[0].subscription}
    ) as resp:
        assert resp.status == 200
        new_token = (await resp.json())["token"]
    async with api.http.get(
        api.url + f"/v1/subscriptions/{devices[0].id}", headers=devices[0].auth()
    ) as resp:
        assert resp.status == 401
    stored = await pool.fetchval(
        "SELECT token_hash FROM subscriptions WHERE id = $1::uuid", devices[0].id
    )
    assert bytes(stored) == hashlib.sha256(new_token.encode()).digest()


def test_the_log_scan_detects_what_it_must(log_privacy: Watch) -> None:
    token = "q" * 43
    lines = [
        "api POST /v1/signals 202 1.2ms",
        f"subscribed with token {token}",
        "signal at 52.52001,13.40495",
        "lag 0.25s",
        "worker batch of 500 in 12.5ms",
    ]
    assert leaks(lines, {token}) == [lines[1], lines[2]]
    assert log_privacy.secrets, "the watch should have seen the suite's tokens"


async def test_a_noisy_request_flow_logs_no_token_or_coordinate(
    api: LiveApi, log_privacy: Watch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="service")
    caplog.set_level(logging.DEBUG, logger="momentcast")
    device = await register(api, attributes={"home": "52.520008,13.404954"})
    signal = {"lat": 52.520008, "lon": 13.404954, "accuracy_m": 12.5, "context": {"lat": 48.858370}}
    calls = [
        ("POST", "/v1/signals", signal, device.auth()),
        ("POST", "/v1/signals", {"lat": 952.123456, "lon": 13.404954}, device.auth()),
        ("POST", "/v1/signals", signal, {"Authorization": f"Bearer {device.token}x"}),
        ("PATCH", f"/v1/subscriptions/{device.id}", {"attributes": {"a": 1.23456}}, device.auth()),
        ("POST", "/v1/simulate", {"signal": signal, "profile": {}}, api.admin()),
    ]
    for method, path, body, headers in calls:
        async with api.http.request(method, api.url + path, json=body, headers=headers) as resp:
            assert resp.status < 500
    lines = [log_privacy.format(r) for r in caplog.records]
    assert lines, "the flow should have logged something"
    assert leaks(lines, {device.token, device.token + "x"}) == []


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "lat",
                    "lon",
                    "signals",
                    "subscription",
                    "context",
                    "at",
                    "moment",
                    "keys",
                    "endpoint",
                    "attributes",
                    "delivery_id",
                    "token",
                    "type",
                    "profile",
                    "signal",
                    "paused",
                    "topics",
                    "timezone",
                    "accuracy_m",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=16,
)


def _fuzz(url: str, calls: list[tuple[str, str, dict[str, str]]], seen: list[int]) -> None:
    session = requests.Session()

    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(body=JSON, raw=st.booleans(), call=st.sampled_from(calls))
    def one(body: Any, raw: bool, call: tuple[str, str, dict[str, str]]) -> None:
        method, path, headers = call
        data = json.dumps(body).encode()
        if raw:  # truncated / mangled JSON
            data = data[: max(1, len(data) // 2)] + b"\x00\xff"
        resp = session.request(
            method,
            url + path,
            data=data,
            timeout=10,
            headers={**headers, "Content-Type": "application/json"},
        )
        seen.append(resp.status_code)
        assert resp.status_code < 500, (method, path, data[:300], resp.text[:300])
        assert "error" in resp.json() or resp.status_code < 300

    one()


async def test_hypothesis_json_against_every_body_endpoint(api_with: Any) -> None:
    api: LiveApi = await api_with(signal_rate_burst=100_000)
    device = await register(api)
    calls = [
        (m, p.replace("{id}", device.id), _auth(api, device, who)) for m, p, who in BODY_ENDPOINTS
    ]
    seen: list[int] = []
    await asyncio.to_thread(_fuzz, api.url, calls, seen)
    assert len(seen) >= 80 and any(s >= 400 for s in seen)
    await _healthy(api)
