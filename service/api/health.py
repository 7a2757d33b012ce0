"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__
from service.api.common import CONTEXT, json_response, require_admin
from service.api.openapi import Op, document
from service.metrics import REGISTRY

routes = web.RouteTableDef()
# Tables of their own: with METRICS_PORT set, /metrics is served there (without a token) and
# not on the public port; without it, the public port serves it to the admin token.
public_metrics_routes = web.RouteTableDef()
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


def _metrics_text() -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@document(
    Op(
        "get",
        "/metrics",
        "Prometheus metrics (text format), to the admin token; with METRICS_PORT set, served "
        "there without a token and not on this port",
        auth="admin",
        tags=["operations"],
        content_type="text/plain",
        database=False,
    )
)
@public_metrics_routes.get("/metrics")
async def metrics_with_admin_token(request: web.Request) -> web.Response:
    # Route names, request counts and rates describe the deployment's traffic: on the public
    # port they are for the operator only.
    require_admin(request)
    return _metrics_text()


@metrics_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """METRICS_PORT: no token (bind it to an internal interface; scrapers carry none)."""
    return _metrics_text()
