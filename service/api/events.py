"""POST /v1/events (engagement reported by service workers and pages) and GET /c/... (the
click links of declarative pushes)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, Field

from service import tokens
from service.api.common import CONTEXT, json_response, read_model
from service.api.models import Strict
from service.api.openapi import Op, Param, document
from service.errors import Forbidden, NotFound, Unprocessable
from service.metrics import EVENTS_REJECTED
from service.webpush.message import ACTION_PATTERN, OPEN_ACTION

routes = web.RouteTableDef()

# text/plain is accepted besides JSON so that a page on another origin can report with
# navigator.sendBeacon or a "simple" fetch: no CORS preflight, which CORS_ORIGINS would refuse.
EVENT_CONTENT_TYPES = ("application/json", "text/plain")


class EventIn(Strict):
    delivery_id: int = Field(strict=True, ge=1, lt=2**63)
    # base64url only: the HMAC comparison refuses non-ASCII text, which must be a 422, not a 500.
    token: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    type: Literal["shown", "clicked", "dismissed", "converted"]
    action: str | None = Field(
        default=None,
        pattern=ACTION_PATTERN,
        description=f"clicked only: the action button clicked, one of the delivery's own "
        f"(absent or {OPEN_ACTION!r}: the notification itself)",
    )


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
    action = None if event.action == OPEN_ACTION else event.action
    if action is not None and event.type != "clicked":
        raise _bad_action(f"an action is only reported with a click, not with {event.type}")
    # A forged token and the token of another delivery are the same failure: the HMAC over
    # this delivery id does not match. Checked before the database is touched.
    if not tokens.check_event_token(ctx.keys.secret_key, event.delivery_id, event.token):
        EVENTS_REJECTED.inc()
        raise Forbidden("the event token does not belong to this delivery")
    recorded = await ctx.store.record_event(
        delivery_id=event.delivery_id, type=event.type, action=action
    )
    if not recorded.found:
        raise NotFound("no such delivery (it may have been erased)")
    if not recorded.known:
        raise _bad_action("the delivery has no action button of this name")
    body = EventAccepted(delivery_id=event.delivery_id, type=event.type, recorded=recorded.inserted)
    return _cors_open(json_response(body.model_dump(), status=202))


def _bad_action(message: str) -> Unprocessable:
    detail = {"field": "action", "message": message, "type": "value_error"}
    return Unprocessable(f"action: {message}", details=[detail])


# What a click on a notification without a url of its own shows: the click is counted, and
# there is nowhere to go. A page rather than 204, which leaves a new tab blank.
_OPENED_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8>"
    b"<meta name=viewport content='width=device-width'><title>Opened</title>"
    b"<p>Thanks, the notification was opened. You can close this page.</p></html>"
)
_CLICK_HEADERS = {
    # Every click is this delivery's, once; nothing in between may answer it for us.
    "Cache-Control": "no-store",
    # The link carries the event token: never pass it on to the target.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


_ACTION = re.compile(ACTION_PATTERN)


def _delivery_id(raw: str) -> int | None:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if 1 <= value < 2**63 else None


def _redirectable(url: str | None) -> bool:
    """An absolute http(s) URL that fits in a Location header as it is."""
    if not url or len(url) > 2048 or not url.isascii() or not url.isprintable() or " " in url:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@document(
    Op(
        "get",
        "/c/{delivery_id}/{action}",
        "A click on a pushed notification (action 'open') or one of its action buttons: "
        "records clicked once, with the action, and redirects to the target stored with the "
        "delivery; 200 with a small page when that target has no url (authorised by the "
        "event token in ?t=; anything wrong is 404, never a redirect)",
        status=302,
        errors=[404],
        tags=["events"],
        query=[Param("t", "the delivery's event token (data.event_token of the push)")],
        pages={200: "text/html"},
    )
)
@routes.get("/c/{delivery_id}/{action}", allow_head=False)
async def click(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    delivery_id = _delivery_id(request.match_info["delivery_id"])
    action = request.match_info["action"]
    token = request.query.get("t", "")
    # One answer for every refusal, so that a link says nothing about why it does not work.
    gone = NotFound("no such link (it may have expired or been erased)")
    if delivery_id is None or not token or not _ACTION.match(action):
        raise gone
    if not tokens.check_event_token(ctx.keys.secret_key, delivery_id, token):
        EVENTS_REJECTED.inc()
        raise gone
    button = None if action == OPEN_ACTION else action
    # The target is read from the stored payload only: nothing in the request can name it.
    clicked = await ctx.store.record_click(delivery_id=delivery_id, action=button)
    if not clicked.known:
        raise gone
    if clicked.url is not None and _redirectable(clicked.url):
        return web.Response(status=302, headers={**_CLICK_HEADERS, "Location": clicked.url})
    headers = {**_CLICK_HEADERS, "Content-Security-Policy": "default-src 'none'"}
    return web.Response(
        body=_OPENED_PAGE, content_type="text/html", charset="utf-8", headers=headers
    )
