"""The HTTP skeleton over a real socket: health, readiness, metrics, OpenAPI, error format."""

from __future__ import annotations

import json

from service import __version__
from service.api import create_app
from service.context import Context
from service.store import Store
from service.store.db import create_pool
from tests.conftest import LiveApi, start_app


def assert_error(body: dict[str, object], code: str) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)


async def test_healthz(api: LiveApi) -> None:
    async with api.http.get(api.url + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "version": __version__}


async def test_readyz_checks_database_and_rules(api: LiveApi) -> None:
    async with api.http.get(api.url + "/readyz") as resp:
        body = await resp.json()
    assert body["checks"]["database"] == "ok"
    if api.ctx.rules is not None and api.ctx.rules.current is not None:
        assert resp.status == 200 and body["status"] == "ready"
    else:
        assert resp.status == 503 and body["checks"]["rules"] == "not loaded"


async def test_readyz_reports_database_outage(api: LiveApi, database_url: str) -> None:
    broken_pool = await create_pool(database_url, min_size=0, max_size=1)
    await broken_pool.close()
    ctx = Context(settings=api.ctx.settings, store=Store(broken_pool), keys=api.ctx.keys)
    runner, url = await start_app(create_app(ctx))
    try:
        async with api.http.get(url + "/readyz") as resp:
            body = await resp.json()
    finally:
        await runner.cleanup()
    assert resp.status == 503
    assert body["checks"]["database"].startswith("unavailable")


async def test_metrics_is_prometheus_text(api: LiveApi) -> None:
    async with api.http.get(api.url + "/healthz"):
        pass
    async with api.http.get(api.url + "/metrics", headers=api.admin()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'momentcast_http_requests_total{method="GET",route="/healthz",status="200"}' in text


async def test_metrics_on_the_public_port_answers_only_to_the_admin_token(api: LiveApi) -> None:
    # Route names, counts and rates tell an outsider how the service is used and loaded.
    for headers in ({}, {"Authorization": "Bearer not-the-admin-token-at-all"}):
        async with api.http.get(api.url + "/metrics", headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert_error(await resp.json(), "unauthorized")


async def test_openapi_is_3_1_and_lists_routes(api: LiveApi) -> None:
    async with api.http.get(api.url + "/openapi.json") as resp:
        assert resp.status == 200
        spec = await resp.json()
    assert spec["openapi"] == "3.1.0"
    for path in ("/healthz", "/readyz", "/metrics", "/v1/vapid-public-key"):
        assert path in spec["paths"], path


async def test_vapid_public_key_is_a_p256_point(api: LiveApi) -> None:
    from service.webpush.base64url import b64url_decode

    async with api.http.get(api.url + "/v1/vapid-public-key") as resp:
        key = (await resp.json())["public_key"]
    raw = b64url_decode(key)
    assert len(raw) == 65 and raw[0] == 4
    assert key == api.ctx.keys.vapid_public_b64


async def test_404_is_json(api: LiveApi) -> None:
    async with api.http.get(api.url + "/no/such/thing?secret=1") as resp:
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert_error(await resp.json(), "not_found")


async def test_405_is_json_with_allow(api: LiveApi) -> None:
    async with api.http.delete(api.url + "/healthz") as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert_error(await resp.json(), "method_not_allowed")


async def test_413_before_reading_the_body(api: LiveApi) -> None:
    big = json.dumps({"x": "a" * (api.ctx.settings.max_body_bytes + 10)})
    async with api.http.post(
        api.url + "/healthz", data=big, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert_error(await resp.json(), "payload_too_large")
