"""POST /v1/events (engagement reported by service workers and pages) and GET /v1/stats."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from service import tokens
from service.api.common import CONTEXT, json_response, read_model, require_admin
from service.api.models import Strict
from service.api.openapi import Op, document
from service.errors import Forbidden, NotFound
from service.metrics import EVENTS_REJECTED
from service.stats import Stats, stats

routes = web.RouteTableDef()

# text/plain is accepted besides JSON so that a page on another origin can report with
# navigator.sendBeacon or a "simple" fetch: no CORS preflight, which CORS_ORIGINS would refuse.
EVENT_CONTENT_TYPES = ("application/json", "text/plain")


class EventIn(Strict):
    delivery_id: int = Field(strict=True, ge=1, lt=2**63)
    # base64url only: the HMAC comparison refuses non-ASCII text, which must be a 422, not a 500.
    token: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    type: Literal["shown", "clicked", "dismissed", "converted"]


class EventAccepted(BaseModel):
    delivery_id: int
    type: str
    recorded: bool = Field(description="false when this (delivery, type) was already recorded")


def _cors_open(response: web.Response) -> web.Response:
    # The token in the body is the credential (no cookies), so any origin may report.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@document(
    Op(
        "post",
        "/v1/events",
        "Report that a delivery was shown, clicked, dismissed or converted "
        "(authorised by its event token; a replay is accepted and counted once)",
        request=EventIn,
        response=EventAccepted,
        status=202,
        errors=[403, 404],
        tags=["events"],
    )
)
@routes.post("/v1/events")
async def post_event(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    event = await read_model(request, EventIn, EVENT_CONTENT_TYPES)
    # A forged token and the token of another delivery are the same failure: the HMAC over
    # this delivery id does not match. Checked before the database is touched.
    if not tokens.check_event_token(ctx.keys.secret_key, event.delivery_id, event.token):
        EVENTS_REJECTED.inc()
        raise Forbidden("the event token does not belong to this delivery")
    recorded = await ctx.store.record_event(delivery_id=event.delivery_id, type=event.type)
    if recorded is None:
        raise NotFound("no such delivery (it may have been erased)")
    body = EventAccepted(delivery_id=event.delivery_id, type=event.type, recorded=recorded)
    return _cors_open(json_response(body.model_dump(), status=202))


@document(
    Op(
        "get",
        "/v1/stats",
        "Per rule and variant: matches, suppressions by reason, the delivery funnel, "
        "click-through, and A/B significance",
        response=Stats,
        auth="admin",
        tags=["events"],
    )
)
@routes.get("/v1/stats")
async def get_stats(request: web.Request) -> web.Response:
    require_admin(request)
    return json_response(stats(await request.app[CONTEXT].store.engagement_counts()))
