"""Admin routes for rules: what is loaded, reload, the simulator, the test push and the
backtest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from service.api.common import CONTEXT, json_response, read_model, require_admin
from service.api.models import Attributes, Locale, SignalBody, Strict, Timezone, Topics
from service.api.openapi import Op, Param, document
from service.context import Context
from service.durations import parse_duration
from service.errors import NotFound, RulesError, ServiceUnavailable, Unprocessable
from service.queue import DELIVERIES_CHANNEL
from service.reload.watch import reload_rules
from service.vocabulary import RuleMode, Trigger

if TYPE_CHECKING:
    from service.reload.holder import RulesHolder

routes = web.RouteTableDef()


class RuleInfo(BaseModel):
    id: str
    description: str
    priority: int
    trigger: Trigger
    mode: RuleMode = Field(description="live, or shadow: evaluated and counted, never sent")
    file: str
    places: int


class RulesStatus(BaseModel):
    rules: list[RuleInfo]
    loaded_at: datetime | None
    status: str = Field(description="'ok', 'errors' (old set still active) or 'not loaded'")
    errors: list[str] = Field(description="file:line: message of the last failed load")
    warnings: list[str]


class SimulatedSignal(SignalBody):
    # Simulations may ask about any moment (tomorrow's lunch), unlike live signals.
    at: AwareDatetime | None = None


class SimulatedProfile(Strict):
    id: str = Field(
        default="simulation",
        max_length=64,
        description="A subscription id: decides the A/B variant shown",
    )
    timezone: Timezone | None = None
    locale: Locale | None = None
    topics: Topics = Field(default_factory=list)
    attributes: Attributes = Field(default_factory=dict)
    paused: bool = False
    resting_until: AwareDatetime | None = Field(
        default=None,
        description="The subscriber rests under the fatigue guard until then: with the "
        "policy's `fatigue`, a push decided before it is suppressed `fatigued`",
    )


class SimulateRequest(Strict):
    signal: SimulatedSignal
    profile: SimulatedProfile = Field(default_factory=lambda: SimulatedProfile())


class NotificationAction(BaseModel):
    action: str
    title: str
    url: str


class Notification(BaseModel):
    """The rendered message as the phone would show it."""

    title: str
    body: str
    url: str | None = None
    icon: str | None = None
    image: str | None = None
    actions: list[NotificationAction] = Field(default_factory=list)
    locale: str = Field(description="the locale whose texts were chosen; '' is the default")


class SimulatedDecision(BaseModel):
    rule: str
    place: str | None = Field(description="null for a rule without places")
    distance_m: float | None
    variant: str
    notification: Notification


class RuleVerdict(BaseModel):
    rule: str
    matched: bool
    reason: str | None = Field(
        description="null when it matched and was chosen; else the first failed condition "
        "(campaign, day, daypart, topics, attributes.<name>, moment, speed, context.<name>), "
        "a place reason (no_place, accuracy, no_location) or why a match was not sent "
        "(a suppression reason, stale, dwell_pending, not_triggered, outranked)"
    )


class SimulateResult(BaseModel):
    decision: SimulatedDecision | None
    rules: list[RuleVerdict]


def _holder(ctx: Context) -> RulesHolder:
    holder = ctx.rules
    if holder is None:
        raise ServiceUnavailable("rules are not loaded")
    return cast("RulesHolder", holder)


def status(holder: RulesHolder) -> dict[str, Any]:
    ruleset = holder.current
    rules = []
    if ruleset is not None:
        rules = [
            {
                "id": r.id,
                "description": r.description,
                "priority": r.priority,
                "trigger": r.trigger,
                "mode": r.model.mode,
                "file": r.file,
                "places": len(r.place_idx),
            }
            for r in ruleset.rules
        ]
    state = "not loaded" if ruleset is None else ("errors" if holder.last_errors else "ok")
    return {
        "rules": rules,
        "loaded_at": holder.loaded_at.isoformat() if holder.loaded_at else None,
        "status": state,
        "errors": holder.last_errors,
        "warnings": holder.last_warnings,
    }


@document(
    Op(
        "get",
        "/v1/rules",
        "Loaded rules, their status and the last load errors",
        response=RulesStatus,
        auth="admin",
        tags=["rules"],
        database=False,
    )
)
@routes.get("/v1/rules")
async def get_rules(request: web.Request) -> web.Response:
    require_admin(request)
    return json_response(status(_holder(request.app[CONTEXT])))


@document(
    Op(
        "post",
        "/v1/rules/reload",
        "Reload rules/; an invalid set keeps the old one",
        response=RulesStatus,
        auth="admin",
        errors=[422],
        tags=["rules"],
        database=False,
    )
)
@routes.post("/v1/rules/reload")
async def post_reload(request: web.Request) -> web.Response:
    require_admin(request)
    holder = _holder(request.app[CONTEXT])
    errors = await reload_rules(holder)
    if errors:
        raise Unprocessable(
            f"rules not reloaded: {len(errors)} error(s), the first: {errors[0]}; "
            "the previous set stays active",
            details=errors,
        )
    return json_response(status(holder))


@document(
    Op(
        "post",
        "/v1/simulate",
        "What one signal of one profile would trigger, and why",
        request=SimulateRequest,
        response=SimulateResult,
        auth="admin",
        tags=["rules"],
        database=False,
    )
)
@routes.post("/v1/simulate")
async def post_simulate(request: web.Request) -> web.Response:
    # The engine is imported with the first simulation, not with the API: importing the API
    # (and ingest) must not load shapely, numpy and the time-zone finder.
    from service.rules import Profile, Signal, simulate

    require_admin(request)
    body = await read_model(request, SimulateRequest)
    holder = _holder(request.app[CONTEXT])
    ruleset = holder.current
    if ruleset is None:
        raise ServiceUnavailable("no valid rule set is loaded")
    now = datetime.now(UTC)
    s = body.signal
    subject = body.profile.id
    signal = Signal(
        subscription_id=subject,
        lat=s.lat,
        lon=s.lon,
        at=s.at or now,
        accuracy_m=s.accuracy_m,
        speed_mps=s.speed_mps,
        moment=s.moment,
        context=s.context,
    )
    p = body.profile
    profile = Profile(
        id=subject,
        timezone=p.timezone,
        locale=p.locale,
        topics=frozenset(p.topics),
        attributes=p.attributes,
        paused=p.paused,
        resting_until=p.resting_until,
    )
    # Judged at the signal's own time, so a simulated lunchtime is not "stale".
    return json_response(simulate(ruleset, signal, profile, signal.at))


class TestPushRequest(Strict):
    subscription_id: uuid.UUID
    place_id: str | None = Field(
        default=None,
        max_length=256,
        description="One of the rule's places (default: its first); not for a rule without places",
    )
    locale: Locale | None = Field(default=None, description="Instead of the subscription's own")


class TestPushResult(BaseModel):
    delivery_id: int


@document(
    Op(
        "post",
        "/v1/rules/{id}/test",
        "Send the rule's rendered message now to one subscription, past caps and quiet hours; "
        "the push is marked test and kept out of rule statistics and caps",
        request=TestPushRequest,
        response=TestPushResult,
        status=202,
        auth="admin",
        errors=[404, 422],
        tags=["rules"],
    )
)
@routes.post("/v1/rules/{id}/test")
async def post_test_push(request: web.Request) -> web.Response:
    from service.rules import Profile
    from service.rules.preview import render_for

    require_admin(request)
    body = await read_model(request, TestPushRequest)
    ctx = request.app[CONTEXT]
    ruleset = _holder(ctx).current
    if ruleset is None:
        raise ServiceUnavailable("no valid rule set is loaded")
    rule_id = request.match_info["id"]
    rule = ruleset.rule_by_id.get(rule_id)
    if rule is None:
        raise NotFound(f"no rule {rule_id!r} is loaded")
    sub = await ctx.store.subscription_profile(subscription_id=body.subscription_id)
    if sub is None:
        raise NotFound(f"no subscription {body.subscription_id}")
    if sub.status != "active" or sub.paused:
        why = "paused" if sub.paused else "gone (its push service dropped it)"
        raise Unprocessable(
            f"subscription {body.subscription_id} is {why}: nothing would be delivered",
            details=[{"field": "subscription_id", "message": why, "type": "subscription"}],
        )
    profile = Profile(
        id=str(sub.id),
        timezone=sub.timezone,
        locale=body.locale or sub.locale,
        topics=frozenset(sub.topics),
        attributes=sub.attributes,
    )
    try:
        rendered = render_for(ruleset, rule, profile, body.place_id)
    except RulesError as exc:
        raise Unprocessable(
            str(exc), details=[{"field": "place_id", "message": str(exc), "type": "place"}]
        ) from None
    delivery_id = await ctx.store.insert_test_delivery(
        subscription_id=sub.id,
        rule_id=rule.id,
        variant=rendered.variant.name,
        place_id=rendered.place_id or None,
        payload=rendered.payload,
        ttl_s=rendered.ttl_s,
        urgency=rendered.urgency,
        topic=rendered.topic,
    )
    await ctx.store.notify(channel=DELIVERIES_CHANNEL)
    return json_response({"delivery_id": delivery_id}, status=202)


class BacktestLive(BaseModel):
    decided: int = Field(description="deliveries the live rules decided in the period")
    sent: int = Field(description="of those, accepted by the push service")


class BacktestRule(BaseModel):
    rule: str
    mode: RuleMode
    matched: int = Field(description="signals on which the rule fired (before caps)")
    would_send: int
    shadow_sent: int = Field(description="for a rule in mode: shadow, what it would send")
    suppressed: dict[str, int]
    silent: dict[str, int] = Field(
        description="signals the rule matched without sending, by reason: not_triggered (an "
        "enter rule, already inside), stale (received later than stale_after)"
    )
    not_matched: dict[str, int] = Field(
        description="signals within the rule's reach that did not match it, by the first "
        "failed condition"
    )
    live: BacktestLive


class BacktestLiveOnly(BaseModel):
    rule: str
    decided: int
    sent: int


class BacktestTotals(BaseModel):
    would_send: int
    live_decided: int
    live_sent: int


class BacktestReport(BaseModel):
    rules_version: str
    since: str
    until: str
    signals: int = Field(description="stored signals of the period that were run")
    subscribers: int
    first_signal: str | None
    last_signal: str | None
    rules: list[BacktestRule]
    live_only: list[BacktestLiveOnly] = Field(
        description="rules that sent in the period but are not in the backtested set"
    )
    totals: BacktestTotals
    notes: list[str]


MAX_BACKTEST = timedelta(days=31)


@document(
    Op(
        "get",
        "/v1/backtest",
        "The stored signals of the last period through the loaded rules from fresh presence, "
        "beside what the live rules sent; writes nothing",
        response=BacktestReport,
        auth="admin",
        errors=[422],
        tags=["rules"],
        query=[
            Param(
                "since",
                "how far back, a duration such as 6h or 2d (default 24h, at most 31d)",
                required=False,
            )
        ],
    )
)
@routes.get("/v1/backtest")
async def get_backtest(request: web.Request) -> web.Response:
    # Imported with the first backtest, like the simulator: the API loads no numpy on import.
    from service.reports.backtest import run_backtest

    require_admin(request)
    text = request.query.get("since", "24h")
    try:
        period = parse_duration(text)
        if period > MAX_BACKTEST:
            raise ValueError(f"since {text!r} is longer than 31d")
    except ValueError as exc:
        raise Unprocessable(
            f"since: {exc}", details=[{"field": "since", "message": str(exc), "type": "duration"}]
        ) from None
    ctx = request.app[CONTEXT]
    ruleset = _holder(ctx).current
    if ruleset is None:
        raise ServiceUnavailable("no valid rule set is loaded")
    report = await run_backtest(
        ctx.store, ruleset, period, retention=ctx.settings.signal_retention, offload=True
    )
    return json_response(report)
