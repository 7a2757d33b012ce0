"""Liveness, readiness, metrics and the VAPID public key."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__
from service.api.common import CONTEXT, json_response
from service.api.openapi import Op, document
from service.metrics import REGISTRY

routes = web.RouteTableDef()
# Its own table: with METRICS_PORT set, /metrics is served there and not on the public port.
metrics_routes = web.RouteTableDef()


@document(
    Op(
        "get",
        "/healthz",
        "Liveness: the process answers, with its version",
        tags=["operations"],
        database=False,
    )
)
@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


@document(
    Op(
        "get",
        "/readyz",
        "Readiness: the database answers and a rule set is loaded",
        tags=["operations"],
        errors=[503],
        database=False,
    )
)
@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            await ctx.store.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    loaded = ctx.rules is not None and ctx.rules.current is not None
    checks["rules"] = "ok" if loaded else "not loaded"
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


@document(
    Op(
        "get",
        "/metrics",
        "Prometheus metrics (text format); with METRICS_PORT set, served on that port only",
        tags=["operations"],
        content_type="text/plain",
        database=False,
    )
)
@metrics_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@document(
    Op(
        "get",
        "/v1/vapid-public-key",
        "The VAPID public key for applicationServerKey",
        tags=["subscriptions"],
        database=False,
    )
)
@routes.get("/v1/vapid-public-key")
async def vapid_public_key(request: web.Request) -> web.Response:
    return json_response({"public_key": request.app[CONTEXT].keys.vapid_public_b64})
