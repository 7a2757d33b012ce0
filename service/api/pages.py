"""What browsers load from the service itself: the SDK, the service worker, the demo page,
the dashboard, and the JSON the dashboard draws (GET /v1/dashboard; its "Per place" table and
CSV export are :mod:`service.api.stats`')."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from service.api.common import CONTEXT, json_response, require_admin
from service.api.openapi import Op, document
from service.api.stats import stats_body
from service.errors import NotFound
from service.settings import tile_source
from service.stats import Stats
from service.vocabulary import RuleMode

routes = web.RouteTableDef()

# Only these names are served: nothing else under service/static/ is reachable by URL.
ASSETS: dict[str, str] = {
    "momentcast.js": "text/javascript",
    "sw.js": "text/javascript",
    "index.html": "text/html",
    "dashboard.html": "text/html",
    "momentcast.css": "text/css",
    "dashboard.js": "text/javascript",
    "demo.js": "text/javascript",
}
# Leaflet (service/static/vendor/leaflet/, from the npm registry): loaded by the dashboard only
# when MOMENTCAST_MAP_TILES is set.
VENDOR: dict[str, str] = {
    "leaflet.js": "text/javascript",
    "leaflet.css": "text/css",
    "images/layers.png": "image/png",
    "images/layers-2x.png": "image/png",
    "images/marker-icon.png": "image/png",
    "images/marker-icon-2x.png": "image/png",
    "images/marker-shadow.png": "image/png",
}
# The pages load only their own scripts and styles and talk only to this origin.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; worker-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def page_csp(tiles: str | None = None) -> str:
    """PAGE_CSP; with a tile URL template, images from its host too (the basemap)."""
    if tiles is None:
        return PAGE_CSP
    return PAGE_CSP.replace("img-src 'self' data:", f"img-src 'self' data: {tile_source(tiles)}")


@cache
def asset(name: str) -> bytes:
    return resources.files("service").joinpath("static", name).read_bytes()


def _serve(name: str, *, max_age: int = 300, csp: str = PAGE_CSP) -> web.Response:
    content_type = ASSETS[name]
    headers = {"Cache-Control": f"public, max-age={max_age}", "X-Content-Type-Options": "nosniff"}
    if content_type == "text/html":
        headers["Content-Security-Policy"] = csp
        headers["Cache-Control"] = "no-cache"
    return web.Response(
        body=asset(name), content_type=content_type, charset="utf-8", headers=headers
    )


@document(
    Op(
        "get",
        "/momentcast.js",
        "The browser SDK (plain JavaScript, see docs/clients.md)",
        content_type="text/javascript",
        tags=["web"],
        database=False,
    )
)
@routes.get("/momentcast.js")
async def sdk(request: web.Request) -> web.Response:
    response = _serve("momentcast.js")
    # Sites include it from their own pages: it must load cross-origin.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@document(
    Op(
        "get",
        "/sw.js",
        "The service worker: shows pushes, reports shown and clicked",
        content_type="text/javascript",
        tags=["web"],
        database=False,
    )
)
@routes.get("/sw.js")
async def service_worker(request: web.Request) -> web.Response:
    # Browsers check for a new worker on navigation; no-cache makes fixes reach them at once.
    response = _serve("sw.js", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Access-Control-Allow-Origin"] = "*"  # importScripts() from other sites
    return response


@document(
    Op(
        "get",
        "/",
        "Demo page: subscribe, send a position, see the decision explained",
        content_type="text/html",
        tags=["web"],
        database=False,
    )
)
@routes.get("/")
async def demo_page(request: web.Request) -> web.Response:
    return _serve("index.html")


@document(
    Op(
        "get",
        "/dashboard",
        "Dashboard (the page asks for the admin token; its data is GET /v1/dashboard)",
        content_type="text/html",
        tags=["web"],
        database=False,
    )
)
@routes.get("/dashboard")
async def dashboard_page(request: web.Request) -> web.Response:
    return _serve("dashboard.html", csp=page_csp(request.app[CONTEXT].settings.map_tiles))


@document(
    Op(
        "get",
        "/static/{name}",
        "The pages' own styles and scripts (a fixed list)",
        errors=[404],
        content_type="*/*",  # each file its own: CSS, JavaScript, PNG
        tags=["web"],
        database=False,
    )
)
@routes.get("/static/{name}")
async def static_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS or name in ("sw.js", "index.html", "dashboard.html"):
        raise NotFound("no such file")
    return _serve(name)


@document(
    Op(
        "get",
        "/static/vendor/leaflet/{path}",
        "The vendored Leaflet the dashboard loads for its basemap (MOMENTCAST_MAP_TILES)",
        errors=[404],
        content_type="*/*",  # each file its own: CSS, JavaScript, PNG
        tags=["web"],
        database=False,
    )
)
@routes.get("/static/vendor/leaflet/{path:.+}")
async def vendor_asset(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    if path not in VENDOR:
        raise NotFound("no such file")
    content_type = VENDOR[path]
    body = resources.files("service").joinpath("static", "vendor", "leaflet", path).read_bytes()
    headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    charset = None if content_type.startswith("image/") else "utf-8"
    return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)


class HourCount(BaseModel):
    hour: int = Field(ge=0, le=23, description="local hour of day at the signal's location")
    decisions: int


class DashboardRule(BaseModel):
    id: str
    description: str
    trigger: str
    mode: RuleMode = Field(description="live, or shadow: evaluated and counted, never sent")
    priority: int
    places: dict[str, Any] = Field(description="the rule's places, a GeoJSON FeatureCollection")
    decisions_by_hour: list[HourCount]


class DashboardSubscribers(BaseModel):
    active: int = Field(description="subscriptions that can be sent to: not paused, not gone")
    paused: int = Field(description="not gone, paused by the subscriber")
    gone: int = Field(description="the push service says the subscription no longer exists")
    sharing_location: int = Field(
        description="of active, those that consented to location use: the audience of "
        "rules with places (the others and campaigns can reach every active one)"
    )


class Dashboard(BaseModel):
    status: str = Field(description="'ok', 'errors' (old set still active) or 'not loaded'")
    errors: list[str] = Field(description="file:line: message of the last failed load")
    warnings: list[str]
    rules: list[DashboardRule]
    stats: Stats
    subscribers: DashboardSubscribers
    map_tiles: str | None = Field(
        description="MOMENTCAST_MAP_TILES: the basemap's tile URL template, or null (none)"
    )


@document(
    Op(
        "get",
        "/v1/dashboard",
        "Everything the dashboard draws: rule status and load errors, each rule's places, "
        "decisions by local hour, /v1/stats and the subscriber counts",
        response=Dashboard,
        auth="admin",
        tags=["web"],
    )
)
@routes.get("/v1/dashboard")
async def dashboard_data(request: web.Request) -> web.Response:
    require_admin(request)
    ctx = request.app[CONTEXT]
    holder = ctx.rules
    ruleset = holder.current if holder is not None else None
    hours: dict[str, dict[int, int]] = {}
    for row in await ctx.store.decisions_by_hour():
        hours.setdefault(row.rule_id, {})[row.local_hour] = row.n
    rules = []
    if ruleset is not None:
        for rule in ruleset.rules:
            counts = hours.get(rule.id, {})
            rules.append(
                {
                    "id": rule.id,
                    "description": rule.description,
                    "trigger": rule.trigger,
                    "mode": rule.model.mode,
                    "priority": rule.priority,
                    "places": ruleset.places_geojson(rule),
                    "decisions_by_hour": [
                        {"hour": h, "decisions": counts.get(h, 0)} for h in range(24)
                    ],
                }
            )
    status = (
        "not loaded"
        if ruleset is None
        else ("errors" if holder is not None and holder.last_errors else "ok")
    )
    return json_response(
        {
            "status": status,
            "errors": list(holder.last_errors) if holder is not None else [],
            "warnings": list(holder.last_warnings) if holder is not None else [],
            "rules": rules,
            "stats": await stats_body(ctx),
            "subscribers": await _subscribers(request),
            "map_tiles": ctx.settings.map_tiles,
        }
    )


async def _subscribers(request: web.Request) -> dict[str, int]:
    """The dashboard's subscriber and audience counts (its own: /v1/stats is the API's)."""
    totals = await request.app[CONTEXT].store.subscriber_totals()
    return {
        "active": totals.active,
        "paused": totals.paused,
        "gone": totals.gone,
        "sharing_location": totals.sharing_location,
    }
