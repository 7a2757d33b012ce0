"""Every statistics route: GET /v1/stats (per rule and variant), GET /v1/stats/places and
GET /v1/stats.csv (per rule and place over a period: the dashboard's "Per place" and its
export). The arithmetic is :mod:`service.stats`'; the counts come from the store."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from service.api.common import CONTEXT, json_response, require_admin
from service.api.openapi import Op, Param, document
from service.context import Context
from service.errors import Unprocessable
from service.stats import HEALTH_WINDOW, Stats, VariantPlan, stats
from service.store.engagement import EngagementCounts
from service.vocabulary import ADAPTIVE_WINDOW_DAYS

routes = web.RouteTableDef()


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
    return json_response(await stats_body(request.app[CONTEXT]))


async def stats_body(ctx: Context) -> dict[str, Any]:
    """/v1/stats (and the dashboard's copy of it): the counts, and per variant of each loaded
    rule its allocation, share and prob_best from the last 30 days' sent and interacted
    pushes (the counts adaptive allocation draws from)."""
    counts = await engagement_counts(ctx)
    ruleset = ctx.rules.current if ctx.rules is not None else None
    plans = [
        VariantPlan(
            rule.id,
            tuple(v.name for v in rule.variants),
            tuple(v.weight for v in rule.variants),
            rule.model.allocation == "adaptive",
            rule.model.min_share,
        )
        for rule in (ruleset.rules if ruleset is not None else [])
    ]
    compared = [p.rule for p in plans if len(p.variants) >= 2]
    variant_counts = {}
    if compared:
        since = datetime.now(UTC) - timedelta(days=ADAPTIVE_WINDOW_DAYS)
        rows = await ctx.store.variant_counts(rule_ids=compared, since=since)
        variant_counts = {(r.rule_id, r.variant): (r.sent, r.interacted) for r in rows}
    return stats(counts, plans, variant_counts)


async def engagement_counts(ctx: Context) -> EngagementCounts:
    """The counts of /v1/stats (and the dashboard's), with the health of the last week;
    resting subscribers are counted while the loaded policy has the fatigue guard."""
    ruleset = ctx.rules.current if ctx.rules is not None else None
    guard = ruleset is not None and ruleset.policy.fatigue is not None
    return await ctx.store.engagement_counts(health_window=HEALTH_WINDOW, fatigue=guard)


# ---- Statistics per place over a period (the dashboard's "Per place", and its CSV export).

DEFAULT_PERIOD = timedelta(days=7)
MAX_PERIOD = timedelta(days=366)


class PlaceStats(BaseModel):
    rule: str
    place: str = Field(description="the place's id ('' for a rule without places)")
    place_name: str = Field(description="its name in the loaded rules ('' if not loaded)")
    decided: int = Field(description="deliveries decided in the period (test pushes aside)")
    sent: int
    failed: int
    gone: int
    expired: int
    shown: int
    clicked: int
    converted: int
    ctr: float | None = Field(description="clicked / sent")


# The CSV export's columns after since and until: the JSON rows' fields, in their order.
PLACE_COLUMNS = tuple(PlaceStats.model_fields)


class PlaceStatsReport(BaseModel):
    since: str = Field(description="the period's start (included), RFC 3339 UTC")
    until: str = Field(description="its end (excluded)")
    places: list[PlaceStats]


def _instant(name: str, text: str) -> datetime:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        message = f"{text!r} is not a date (2026-11-24) or an RFC 3339 instant with an offset"
        raise Unprocessable(
            f"{name}: {message}", details=[{"field": name, "message": message, "type": "date"}]
        )
    return value.astimezone(UTC)


def period(request: web.Request) -> tuple[datetime, datetime]:
    """[from, to) of the query: dates (UTC midnight) or instants; to defaults to now, from to
    7 days before to; at most 366 days."""
    raw_to = request.query.get("to", "").strip()
    raw_from = request.query.get("from", "").strip()
    until = _instant("to", raw_to) if raw_to else datetime.now(UTC)
    since = _instant("from", raw_from) if raw_from else until - DEFAULT_PERIOD
    problem = (
        "must be before to"
        if since >= until
        else ("the period is longer than 366 days" if until - since > MAX_PERIOD else None)
    )
    if problem:
        raise Unprocessable(
            f"from: {problem}", details=[{"field": "from", "message": problem, "type": "period"}]
        )
    return since, until


async def place_stats(request: web.Request) -> dict[str, Any]:
    require_admin(request)
    since, until = period(request)
    ctx = request.app[CONTEXT]
    ruleset = ctx.rules.current if ctx.rules is not None else None
    names: dict[tuple[str, str], str] = {}
    if ruleset is not None:
        for rule in ruleset.rules:
            for feature in ruleset.places_geojson(rule)["features"]:
                props = feature.get("properties", {})
                names[(rule.id, str(props.get("id", "")))] = str(props.get("name", ""))
    rows = []
    for c in await ctx.store.place_counts(since, until):
        rows.append(
            {
                "rule": c.rule_id,
                "place": c.place_id,
                "place_name": names.get((c.rule_id, c.place_id), ""),
                "decided": c.decided,
                "sent": c.sent,
                "failed": c.failed,
                "gone": c.gone,
                "expired": c.expired,
                "shown": c.shown,
                "clicked": c.clicked,
                "converted": c.converted,
                "ctr": round(c.clicked / c.sent, 4) if c.sent else None,
            }
        )
    return {"since": since.isoformat(), "until": until.isoformat(), "places": rows}


PERIOD_QUERY = [
    Param(
        "from",
        "start (included): a date (UTC midnight) or an RFC 3339 instant; default 7 days before to",
        required=False,
    ),
    Param("to", "end (excluded), the same; default now", required=False),
]


@document(
    Op(
        "get",
        "/v1/stats/places",
        "Per rule and place, the deliveries decided in [from, to) and their fates",
        response=PlaceStatsReport,
        auth="admin",
        errors=[422],
        tags=["web"],
        query=PERIOD_QUERY,
    )
)
@routes.get("/v1/stats/places")
async def place_stats_json(request: web.Request) -> web.Response:
    return json_response(await place_stats(request))


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet runs a cell that starts like a formula: names come from rule files.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@document(
    Op(
        "get",
        "/v1/stats.csv",
        "The same per place, as CSV (one header line, then one line per rule and place)",
        auth="admin",
        errors=[422],
        content_type="text/csv",
        tags=["web"],
        query=PERIOD_QUERY,
    )
)
@routes.get("/v1/stats.csv")
async def place_stats_csv(request: web.Request) -> web.Response:
    report = await place_stats(request)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("since", "until", *PLACE_COLUMNS))
    for row in report["places"]:
        writer.writerow([report["since"], report["until"], *(_cell(row[c]) for c in PLACE_COLUMNS)])
    day = report["since"][:10] + "_" + report["until"][:10]
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="momentcast-stats_{day}.csv"',
            "Cache-Control": "no-store",
        },
    )
