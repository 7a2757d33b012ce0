"""Admin routes for campaigns: create (or dry-run), list, show, cancel.

The same functions serve ``momentcast campaign ...`` (service/campaign_cli.py), which runs
them on the store directly. The campaign core (service/rules/campaigns.py) is imported with
the first call, not with the API: importing the API must not load the engine.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, Field

from service.api.common import CONTEXT, json_response, require_admin, require_json
from service.api.openapi import Op, document
from service.errors import BadRequest, CampaignInvalid, Conflict, NotFound, Unprocessable
from service.queue import CAMPAIGNS_CHANNEL
from service.stats import CampaignResult, campaign_results
from service.store import Store
from service.store.campaigns import CampaignRow, NewCampaign

if TYPE_CHECKING:
    from service.rules.campaigns import Campaign

routes = web.RouteTableDef()

# The body's shape for /openapi.json; the full format (message and variants as in rule files)
# is checked by service.rules.campaigns and described in docs/campaigns.md.
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
            ]
        },
        "ttl": {"type": "string", "examples": ["20m", "2h"]},
        "urgency": {"enum": ["very-low", "low", "normal", "high"]},
        "topic": {"type": "string"},
        "rate": {"type": "string", "examples": ["100/s", "5000/min"]},
    },
    "additionalProperties": False,
}


class CampaignCreated(BaseModel):
    id: str
    status: str
    audience: int = Field(description="active, unpaused subscriptions in the audience now")


class CampaignSample(BaseModel):
    variant: str
    locale: str = Field(description="the message's locale ('' is the default)")
    from_audience: bool = Field(
        description="rendered with the attributes of an audience member of that locale "
        "(false: with none, no such member)"
    )
    notification: dict[str, Any]


class CampaignDryRun(BaseModel):
    id: str
    audience: int
    send_at: str | dict[str, str]
    ttl_s: int
    variants: list[dict[str, Any]]
    samples: list[CampaignSample]


class CampaignList(BaseModel):
    campaigns: list[CampaignResult]


class CampaignCancelled(CampaignResult):
    cancelled_now: int = Field(description="pending pushes this call cancelled")


def _invalid(exc: CampaignInvalid) -> Unprocessable:
    details = [{"field": f, "message": m} for f, m in exc.errors]
    return Unprocessable(str(exc), details=details)


def parse(raw: bytes | str, now: datetime) -> Campaign:
    """The checked campaign, or 422 naming each field that is wrong."""
    from service.rules.campaigns import parse_campaign

    try:
        json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    try:
        return parse_campaign(raw, now=now)
    except CampaignInvalid as exc:
        raise _invalid(exc) from None


def _new(campaign: Campaign, created_at: datetime) -> NewCampaign:
    at = campaign.send_at
    return NewCampaign(
        id=campaign.id,
        description=campaign.description,
        spec=campaign.spec,
        audience=campaign.audience,
        programs=campaign.programs,
        send_at=at.instant,
        send_local=at.local,
        late=at.late if at.local is not None else None,
        ttl_s=campaign.ttl_s,
        urgency=campaign.urgency,
        topic=campaign.topic,
        rate_per_s=campaign.rate_per_s,
        created_at=created_at,
    )


async def create(store: Store, raw: bytes | str, *, now: datetime) -> CampaignRow:
    """Check, store (audience counted in the same statement) and wake the fan-out; 422 for a
    bad body, 409 for a taken id, and nothing stored in either case."""
    campaign = parse(raw, now)
    row = await store.create_campaign(campaign=_new(campaign, now))
    if row is None:
        raise Conflict(
            f"campaign {campaign.id!r} exists; a campaign is not changed once created "
            "(cancel it and send one with another id)"
        )
    await store.notify(channel=CAMPAIGNS_CHANNEL)
    return row


async def dry_run(store: Store, raw: bytes | str, *, now: datetime) -> dict[str, Any]:
    """What ``create`` would send, stored nowhere: the audience size and, per variant and
    message locale, the notification as an audience member of that locale would see it."""
    from service.rules.campaigns import render
    from service.rules.engine import notification

    campaign = parse(raw, now)
    audience = await store.audience_size(audience=campaign.audience)
    tags = sorted({tag for v in campaign.variants for tag in v.messages})
    samples = {
        s.locale: s.attributes
        for s in await store.audience_samples(audience=campaign.audience, locales=tags)
    }
    return {
        "id": campaign.id,
        "audience": audience,
        "send_at": campaign.send_at.as_json(),
        "ttl_s": campaign.ttl_s,
        "variants": [{"variant": v.name, "weight": v.weight} for v in campaign.variants],
        "samples": [
            {
                "variant": v.name,
                "locale": tag,
                "from_audience": tag in samples,
                "notification": notification(render(message, samples.get(tag, {}))),
            }
            for v in campaign.variants
            for tag, message in sorted(v.messages.items())
        ],
    }


async def result(store: Store, campaign_id: str) -> dict[str, Any]:
    found = campaign_results(await store.campaign_counts(campaign_id=campaign_id))
    if not found:
        raise NotFound(f"no campaign {campaign_id!r}")
    return found[0]


async def results(store: Store) -> list[dict[str, Any]]:
    return campaign_results(await store.campaign_counts())


async def cancel(store: Store, campaign_id: str) -> dict[str, Any]:
    """Stop the fan-out and cancel every push not sent yet; 404 for an unknown id."""
    cancelled = await store.cancel_campaign(campaign_id=campaign_id)
    if not cancelled.found:
        raise NotFound(f"no campaign {campaign_id!r}")
    return {**await result(store, campaign_id), "cancelled_now": cancelled.cancelled}


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
    store = request.app[CONTEXT].store
    if request.query.get("dry_run", "").lower() in ("1", "true", "yes"):
        return json_response(await dry_run(store, raw, now=_now()))
    row = await create(store, raw, now=_now())
    return json_response({"id": row.id, "status": row.status, "audience": row.audience_n}, 201)


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
    return json_response({"campaigns": await results(request.app[CONTEXT].store)})


@document(
    Op(
        "get",
        "/v1/campaigns/{id}",
        "One campaign: status, queued, sent, failed, gone, expired, suppressed by reason, "
        "shown, clicked, converted, per variant, and the A/B comparison",
        response=CampaignResult,
        auth="admin",
        errors=[404],
        tags=["campaigns"],
    )
)
@routes.get("/v1/campaigns/{id}")
async def get_campaign(request: web.Request) -> web.Response:
    require_admin(request)
    return json_response(await result(request.app[CONTEXT].store, request.match_info["id"]))


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
    return json_response(await cancel(request.app[CONTEXT].store, request.match_info["id"]))
