"""Admin routes for campaigns: create (or dry-run), list, show, cancel.

The use cases are service/campaigns/usecases.py, which ``momentcast campaign ...`` calls too;
this module only maps their domain errors to HTTP and answers their models as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from service.api.common import CONTEXT, json_response, require_admin, require_json
from service.api.openapi import Op, document
from service.campaigns import usecases
from service.campaigns.models import (
    CampaignCancelled,
    CampaignCreated,
    CampaignDryRun,
    CampaignList,
    CampaignResult,
)
from service.errors import (
    BadRequest,
    CampaignExists,
    CampaignInvalid,
    CampaignMalformed,
    CampaignNotFound,
    Conflict,
    NotFound,
    Unprocessable,
)

routes = web.RouteTableDef()

# The body's shape for /openapi.json; the full format (message and variants as in rule files)
# is checked by service.campaigns.body and described in docs/campaigns.md.
_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "audience", "message", "send_at"],
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
        "description": {"type": "string"},
        "audience": {
            "type": "object",
            "properties": {
                "topics": {"type": "array", "items": {"type": "string"}},
                "attributes": {"type": "object"},
                "locales": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "message": {"type": "object", "description": "as a rule file's message"},
        "variants": {"type": "array", "items": {"type": "object"}},
        "send_at": {
            "oneOf": [
                {"type": "string", "format": "date-time"},
                {
                    "type": "object",
                    "required": ["local"],
                    "properties": {
                        "local": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$"},
                        "late": {"enum": ["skip", "send"]},
                    },
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "description": "send-time optimisation: each subscriber at their own best "
                    "local hour of the day (docs/campaigns.md)",
                    "required": ["optimal"],
                    "properties": {
                        "optimal": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                        "window": {
                            "type": "string",
                            "pattern": r"^\d{2}:\d{2}-\d{2}:\d{2}$",
                            "default": "08:00-21:00",
                        },
                        "fallback": {"type": "string", "pattern": r"^\d{2}:\d{2}$"},
                        "late": {"enum": ["skip", "send"]},
                    },
                    "additionalProperties": False,
                },
            ]
        },
        "ttl": {"type": "string", "examples": ["20m", "2h"]},
        "urgency": {"enum": ["very-low", "low", "normal", "high"]},
        "topic": {"type": "string"},
        "rate": {"type": "string", "examples": ["100/s", "5000/min"]},
        "experiment": {
            "type": "object",
            "description": "with two or more variants: the test share gets them by weight, "
            "after decide_after the rest gets the variant most likely best on the metric",
            "required": ["test_share", "decide_after"],
            "properties": {
                "test_share": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "decide_after": {"type": "string", "examples": ["30m", "2h"]},
                "metric": {"enum": ["clicked", "converted"]},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


@contextmanager
def _as_http() -> Iterator[None]:
    """The campaign use cases' domain errors as the HTTP errors the API answers."""
    try:
        yield
    except CampaignMalformed as exc:
        raise BadRequest(str(exc)) from None
    except CampaignInvalid as exc:
        details = [{"field": f, "message": m} for f, m in exc.errors]
        raise Unprocessable(str(exc), details=details) from None
    except CampaignExists as exc:
        raise Conflict(str(exc)) from None
    except CampaignNotFound as exc:
        raise NotFound(str(exc)) from None


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return json_response(model.model_dump(mode="json"), status)


def _now() -> datetime:
    return datetime.now(UTC)


@document(
    Op(
        "post",
        "/v1/campaigns",
        "Create a campaign: an audience, a message (with variants and locales) and a moment - "
        "an instant, or a local time in each subscriber's time zone. With ?dry_run=true "
        "nothing is stored: 200 with the audience size and a rendered sample per locale",
        request_schema=_BODY_SCHEMA,
        response=CampaignCreated,
        status=201,
        extra_responses={200: CampaignDryRun},
        auth="admin",
        errors=[409],
        tags=["campaigns"],
    )
)
@routes.post("/v1/campaigns")
async def post_campaign(request: web.Request) -> web.Response:
    require_admin(request)
    require_json(request)
    raw = await request.read()
    ctx = request.app[CONTEXT]
    store = ctx.store
    ruleset = ctx.rules.current if ctx.rules is not None else None
    quiet = ruleset.policy.quiet_hours if ruleset is not None else None
    with _as_http():
        if request.query.get("dry_run", "").lower() in ("1", "true", "yes"):
            return _json(await usecases.dry_run(store, raw, now=_now(), quiet=quiet))
        row = await usecases.create(store, raw, now=_now(), quiet=quiet)
    return _json(CampaignCreated(id=row.id, status=row.status, audience=row.audience_n), 201)


@document(
    Op(
        "get",
        "/v1/campaigns",
        "Every campaign, newest first, with its progress and results",
        response=CampaignList,
        auth="admin",
        tags=["campaigns"],
    )
)
@routes.get("/v1/campaigns")
async def get_campaigns(request: web.Request) -> web.Response:
    require_admin(request)
    return _json(CampaignList(campaigns=await usecases.results(request.app[CONTEXT].store)))


@document(
    Op(
        "get",
        "/v1/campaigns/{id}",
        "One campaign: status, queued, sent, failed, gone, expired, suppressed by reason, "
        "shown, clicked, converted, per variant, and the A/B comparison (with `experiment`: "
        "its phase, winner and prob_best)",
        response=CampaignResult,
        auth="admin",
        errors=[404],
        tags=["campaigns"],
    )
)
@routes.get("/v1/campaigns/{id}")
async def get_campaign(request: web.Request) -> web.Response:
    require_admin(request)
    with _as_http():
        found = await usecases.result(request.app[CONTEXT].store, request.match_info["id"])
    return _json(found)


@document(
    Op(
        "delete",
        "/v1/campaigns/{id}",
        "Cancel a campaign: nothing more is fanned out, and its pushes not sent yet are cancelled",
        response=CampaignCancelled,
        auth="admin",
        errors=[404],
        tags=["campaigns"],
    )
)
@routes.delete("/v1/campaigns/{id}")
async def delete_campaign(request: web.Request) -> web.Response:
    require_admin(request)
    with _as_http():
        cancelled = await usecases.cancel(request.app[CONTEXT].store, request.match_info["id"])
    return _json(cancelled)
