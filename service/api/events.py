"""POST /v1/events (engagement reported by service workers and pages) and GET /v1/stats."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from service import tokens
from service.api.common import CONTEXT, json_response, read_model, require_admin
from service.api.models import Strict
from service.api.openapi import Op, document
from service.errors import Forbidden, NotFound
from service.stats import Funnel, experiments
from service.store.db import q

routes = web.RouteTableDef()

EVENT_TYPES = ("shown", "clicked", "dismissed", "converted")
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


class RuleStats(BaseModel):
    rule: str
    variant: str
    matched: int
    suppressed: dict[str, int]
    sent: int
    failed: int
    gone: int
    expired: int
    shown: int
    clicked: int
    dismissed: int
    converted: int
    ctr: float | None = Field(description="clicked / sent")
    conversion_rate: float | None = Field(description="converted / sent")


class VariantComparison(BaseModel):
    a: str
    b: str
    rate_a: float | None
    rate_b: float | None
    difference: float | None = Field(description="rate_a - rate_b")
    z: float | None
    p_value: float | None = Field(description="two-sided, pooled two-proportion z-test")
    alpha: float = Field(description="0.05, Bonferroni-divided over the comparisons")
    required_per_variant: int | None = Field(
        description="sends per variant needed for 80 % power at the observed rates"
    )
    significant: bool
    winner: str | None
    verdict: str


class Experiment(BaseModel):
    rule: str
    metric: str
    variants: list[str]
    comparisons: list[VariantComparison]
    winner: str | None = Field(description="declared only when significant and powered")


class Stats(BaseModel):
    rules: list[RuleStats]
    experiments: list[Experiment]


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
        raise Forbidden("the event token does not belong to this delivery")
    row = await ctx.pool.fetchrow(q("event_record"), event.delivery_id, event.type)
    assert row is not None
    if not row["found"]:
        raise NotFound("no such delivery (it may have been erased)")
    body = EventAccepted(delivery_id=event.delivery_id, type=event.type, recorded=row["inserted"])
    return _cors_open(json_response(body.model_dump(), status=202))


async def collect_funnels(pool: asyncpg.Pool) -> list[Funnel]:
    """Every (rule, variant) seen in deliveries, events or counters, with its numbers."""
    funnels: dict[tuple[str, str], Funnel] = {}

    def get(rule: str, variant: str) -> Funnel:
        key = (rule, variant)
        if key not in funnels:
            funnels[key] = Funnel(rule, variant)
        return funnels[key]

    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # One snapshot, so the funnel stages agree with each other.
        for r in await conn.fetch(q("stats_deliveries")):
            f = get(r["rule_id"], r["variant"])
            f.sent, f.failed, f.gone, f.expired = r["sent"], r["failed"], r["gone"], r["expired"]
        for r in await conn.fetch(q("stats_events")):
            setattr(get(r["rule_id"], r["variant"]), r["type"], r["n"])
        for r in await conn.fetch(q("stats_counters")):
            f = get(r["rule_id"], r["variant"])
            counter: str = r["counter"]
            if counter == "matched":
                f.matched += r["n"]
            elif counter.startswith("suppressed:"):
                reason = counter.removeprefix("suppressed:")
                f.suppressed[reason] = f.suppressed.get(reason, 0) + r["n"]
    return [funnels[k] for k in sorted(funnels)]


async def stats(pool: asyncpg.Pool) -> dict[str, Any]:
    funnels = await collect_funnels(pool)
    # A variant named "" only holds suppressions of rules that no longer exist; it is no arm
    # of an A/B test.
    arms = [f for f in funnels if f.variant]
    return {"rules": [f.as_dict() for f in funnels], "experiments": experiments(arms)}


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
    return json_response(await stats(request.app[CONTEXT].pool))
