"""The HTTP API (aiohttp): one module per group of routes, assembled here."""

from __future__ import annotations

from aiohttp import web

from service import __version__
from service.api import campaigns, health, pages, rules, signals, subscriptions
from service.api import events as events_api
from service.api import stats as stats_api
from service.api.common import CONTEXT, json_response
from service.api.cors import cors_middleware
from service.api.openapi import Op, build_spec, document
from service.context import Context

openapi_routes = web.RouteTableDef()


@document(
    Op("get", "/openapi.json", "This OpenAPI 3.1 document", database=False, tags=["operations"])
)
@openapi_routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_spec(__version__))


def create_app(ctx: Context) -> web.Application:
    app = web.Application(
        # One layer: CORS around the JSON errors (error answers carry its headers too).
        middlewares=[cors_middleware],
        client_max_size=ctx.settings.max_body_bytes,
    )
    app[CONTEXT] = ctx
    app.add_routes(health.routes)
    if ctx.settings.metrics_port is None:
        app.add_routes(health.public_metrics_routes)
    app.add_routes(openapi_routes)
    app.add_routes(rules.routes)
    app.add_routes(subscriptions.routes)
    app.add_routes(signals.routes)
    app.add_routes(events_api.routes)
    app.add_routes(stats_api.routes)
    app.add_routes(campaigns.routes)
    app.add_routes(pages.routes)
    app.cleanup_ctx.append(signals.signal_ingest)
    return app


def create_metrics_app() -> web.Application:
    """``/metrics`` and ``/healthz``, for METRICS_PORT (in every process, the worker's
    included): a worker has no API, so its liveness probe is here."""
    app = web.Application()
    app.add_routes(health.metrics_routes)
    app.router.add_get("/healthz", health.healthz)
    return app
