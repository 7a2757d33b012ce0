"""A campaign's body: one message to a segment, at a moment that is an instant or a wall-clock
time in each subscriber's own time zone.

Pure: no I/O and no clock (callers pass ``now``). This module checks a campaign as the API or
the CLI receives it (service/campaigns/usecases.py), compiles its message with the rules'
compiler (locales, actions, ``{attributes.*}`` templates, the worst-case payload), and turns
its audience and message into the forms the fan-out's one SQL statement evaluates
(conditions, payload templates per variant and locale); service/campaigns/plan.py plans one
fan-out tick. The SQL side of the same definitions (``momentcast_holds``, ``momentcast_fill``,
``momentcast_variant_point``) is in migrations/0009_campaigns.sql; tests/campaigns check that
the two agree.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    field_validator,
)

from service.campaigns.experiment import ExperimentSpec
from service.campaigns.optimal import Optimal, OptimalMoment
from service.durations import parse_duration
from service.errors import CampaignInvalid, RuleLoadError
from service.rules.conditions import Condition, kind
from service.rules.localtime import zone
from service.rules.models import (
    LOCALE_PATTERN,
    RULE_ID,
    ConditionOps,
    Duration,
    Message,
    Variant,
)
from service.rules.ruleset import CompiledMessage, CompiledVariant
from service.rules.templates import attribute_value
from service.vocabulary import PUSH_TOPIC, PUSH_TOPIC_PATTERN, Late, Urgency

# The widest UTC offsets in tzdata (Etc/GMT+12 .. Pacific/Kiritimati): a local moment has
# come everywhere LATEST_OFFSET after it came as UTC wall-clock time.
EARLIEST_OFFSET = timedelta(hours=14)
LATEST_OFFSET = timedelta(hours=12)
# An instant this far in the past is "now" (a form filled in a minute ago); older is an error.
PAST_TOLERANCE = timedelta(minutes=5)
MAX_AHEAD = timedelta(days=366)
MAX_TTL = timedelta(days=28)
DEFAULT_TTL = timedelta(hours=1)
MAX_TOPICS = 32
MAX_LOCALES = 32
MAX_CONDITIONS = 32

_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")
_TOPIC = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([A-Za-z0-9]+)\s*$")
_RATE_UNITS = {"s": 1, "second": 1, "min": 60, "minute": 60, "hour": 3600, "h": 3600}
RATE_PATTERN = r"^\s*\d+\s*/\s*(s|second|min|minute|h|hour|\d+[smhd])\s*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_rate(value: object) -> float:
    """``N/period`` as pushes per second: ``100/s``, ``5000/min``, ``20000/hour``, ``50/10s``."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"rate must be text such as 100/s or 5000/min, not {value!r}")
    m = _RATE.match(value)
    if not m:
        raise ValueError(f"bad rate {value!r}: write N/period, e.g. 100/s, 5000/min, 20000/hour")
    count, unit = int(m.group(1)), m.group(2)
    if unit in _RATE_UNITS:
        seconds = float(_RATE_UNITS[unit])
    else:
        try:
            seconds = parse_duration(unit).total_seconds()
        except ValueError:
            raise ValueError(
                f"bad rate {value!r}: the period is s, min, hour or a duration such as 10s"
            ) from None
    if count < 1 or seconds <= 0:
        raise ValueError(f"rate {value!r} sends nothing; use at least 1 per period")
    return count / seconds


def _local_moment(value: object) -> object:
    if isinstance(value, str):
        if not _LOCAL.match(value):
            raise ValueError(
                f"{value!r}: write the local moment as YYYY-MM-DDTHH:MM, e.g. 2026-11-24T11:45"
            )
        try:
            return datetime.strptime(value, "%Y-%m-%dT%H:%M")
        except ValueError:
            raise ValueError(f"{value!r} is not a date and time of day") from None
    return value


def _topic(value: object) -> str:
    # A before-validator sees the raw JSON value: a number or an object is no topic (and
    # would make the pattern match raise a TypeError, a 500).
    if not isinstance(value, str) or not _TOPIC.match(value):
        raise ValueError(f"topic {value!r}: up to 64 of A-Z a-z 0-9 _ . : -")
    return value


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, str | int | float) and value == value:  # bool is an int; NaN is not
        return value
    raise ValueError("must be a string, number or boolean, or one operator such as {gte: 3}")


def _condition_shape(value: Any) -> str:
    return "ops" if isinstance(value, dict) else "value"


# A rule's who.attributes condition: a value (equality) or {operator: value}.
AudienceCondition = Annotated[
    Annotated[Annotated[str | int | float | bool, PlainValidator(_scalar)], Tag("value")]
    | Annotated[ConditionOps, Tag("ops")],
    Discriminator(_condition_shape),
    Field(description="A value (equality) or one operator: eq ne in not_in gt gte lt lte exists"),
]


class Audience(_Strict):
    """Who gets the campaign: every condition given must hold (active, unpaused subscriptions
    only)."""

    topics: list[Annotated[str, BeforeValidator(_topic)]] | None = Field(
        None, max_length=MAX_TOPICS, description="At least one in common with the subscriber"
    )
    attributes: dict[str, AudienceCondition] | None = Field(
        None,
        max_length=MAX_CONDITIONS,
        description="Conditions on the subscriber's attributes, as in rules' who.attributes",
    )
    locales: list[Annotated[str, Field(pattern=LOCALE_PATTERN)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_LOCALES,
        description="The subscriber's locale is one of these tags or of their languages "
        "(de matches de-AT)",
    )


class LocalMoment(_Strict):
    """A wall-clock moment in each subscriber's own time zone (UTC for those without one)."""

    local: Annotated[datetime, BeforeValidator(_local_moment)] = Field(
        description="YYYY-MM-DDTHH:MM", json_schema_extra={"pattern": _LOCAL.pattern}
    )
    late: Late = Field(
        "skip",
        description="Where the moment has already passed when the campaign is created: skip "
        "those subscribers (missed_local_time) or send to them at once",
    )


def _send_at_shape(value: Any) -> str:
    if isinstance(value, dict):
        return "optimal" if "optimal" in value else "local"
    return "instant"


SendAtSpec = Annotated[
    Annotated[Annotated[AwareDatetime, Field(strict=True)], Tag("instant")]
    | Annotated[LocalMoment, Tag("local")]
    | Annotated[OptimalMoment, Tag("optimal")],
    Discriminator(_send_at_shape),
]

RateText = Annotated[
    float,
    BeforeValidator(parse_rate),
    Field(json_schema_extra={"type": "string", "pattern": RATE_PATTERN}),
]


class CampaignBody(_Strict):
    """POST /v1/campaigns, and the YAML of ``momentcast campaign send``."""

    id: str = Field(description="lower-case letters, digits, - and _; at most 64")
    description: str = Field("", max_length=500)
    audience: Audience
    message: Message
    variants: list[Variant] | None = Field(None, min_length=1, max_length=16)
    send_at: SendAtSpec = Field(
        description="An RFC 3339 instant, {local, late} in each subscriber's time zone, or "
        "{optimal, window, fallback, late}: each subscriber's best local hour of that day"
    )
    ttl: Duration | None = Field(None, description="Default: the message's ttl (1h)")
    urgency: Urgency | None = None
    topic: str | None = Field(None, json_schema_extra={"pattern": PUSH_TOPIC_PATTERN})
    rate: RateText | None = Field(None, description="Spread the sends: 100/s, 5000/min, ...")
    experiment: ExperimentSpec | None = Field(
        None, description="A test share gets the variants, then the rest the winner"
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError(f"{value!r}: use up to 64 lower-case letters, digits, - and _")
        return value

    @field_validator("topic")
    @classmethod
    def _push_topic(cls, value: str | None) -> str | None:
        if value is not None and not PUSH_TOPIC.match(value):
            raise ValueError(f"{value!r} must be 1-32 characters of A-Z a-z 0-9 _ -")
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(seconds=1) <= value <= MAX_TTL:
            raise ValueError("must be between 1s and 28d")
        return value

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: list[Variant] | None) -> list[Variant] | None:
        if value is not None:
            names = [v.name for v in value]
            if len(set(names)) != len(names):
                raise ValueError("variant names must be unique")
            if sum(v.weight for v in value) <= 0:
                raise ValueError("variant weights must add up to more than 0")
        return value


@dataclass(frozen=True)
class SendAt:
    """When a campaign goes: one ``instant``, or a ``local`` wall-clock moment per zone."""

    instant: datetime | None = None
    local: datetime | None = None  # naive: a wall-clock time
    late: Late = "skip"
    # send_at.optimal: ``local`` is then the fallback moment; each subscriber's own hour is
    # planned at creation (service/campaigns/sendtime.py).
    optimal: Optimal | None = None

    def moment_in(self, zone_name: str) -> datetime:
        """The campaign's moment for subscribers in ``zone_name`` ('' or unknown: UTC). A
        wall-clock time a DST change skips or repeats is read with the offset before it."""
        if self.instant is not None:
            return self.instant
        assert self.local is not None
        return self.local.replace(tzinfo=zone(zone_name or None)).astimezone(UTC)

    @property
    def earliest(self) -> datetime:
        if self.instant is not None:
            return self.instant
        if self.optimal is not None:
            return self.optimal.first_utc - EARLIEST_OFFSET
        assert self.local is not None
        return self.local.replace(tzinfo=UTC) - EARLIEST_OFFSET

    @property
    def latest(self) -> datetime:
        """When the moment has come in every time zone."""
        if self.instant is not None:
            return self.instant
        if self.optimal is not None:
            return self.optimal.first_utc + timedelta(hours=23) + LATEST_OFFSET
        assert self.local is not None
        return self.local.replace(tzinfo=UTC) + LATEST_OFFSET

    def as_json(self) -> Any:
        if self.instant is not None:
            return self.instant.isoformat().replace("+00:00", "Z")
        if self.optimal is not None:
            o = self.optimal
            return {
                "optimal": o.day.isoformat(),
                "window": o.window.text,
                "fallback": o.clock,
                "late": self.late,
            }
        assert self.local is not None
        return {"local": self.local.strftime("%Y-%m-%dT%H:%M"), "late": self.late}

    @classmethod
    def from_json(cls, value: Any) -> SendAt:
        if isinstance(value, str):
            return cls(instant=datetime.fromisoformat(value).astimezone(UTC))
        return cls(local=datetime.strptime(value["local"], "%Y-%m-%dT%H:%M"), late=value["late"])


@dataclass(frozen=True)
class Campaign:
    """A checked and compiled campaign."""

    id: str
    description: str
    send_at: SendAt
    ttl_s: int
    urgency: str
    topic: str | None
    rate_per_s: float | None
    variants: list[CompiledVariant]
    conditions: tuple[Condition, ...] = ()
    topics: tuple[str, ...] | None = None
    locales: tuple[str, ...] | None = None  # lower-case
    # The body as given, normalised to JSON (kept with the campaign for GET and the CLI).
    spec: dict[str, Any] = field(default_factory=dict)
    experiment: ExperimentSpec | None = None

    @property
    def audience(self) -> dict[str, Any]:
        """The audience as the store's queries take it: topics, locales and conditions with
        their SQL arguments (see :func:`sql_condition`)."""
        out: dict[str, Any] = {
            "conditions": [
                {"key": c.key, "op": c.op, "value": sql_argument(c)} for c in self.conditions
            ]
        }
        if self.topics is not None:
            out["topics"] = list(self.topics)
        if self.locales is not None:
            out["locales"] = list(self.locales)
        return out

    @property
    def programs(self) -> dict[str, Any]:
        """The variants and messages as the fan-out's statement takes them: variant names and
        the lower ends of their shares of the variant points (for width_bucket), the locale
        keys ('' first), and per variant and key the payload's JSON text with a token where
        each attribute goes (``tokens[i]`` stands for attribute ``names[i]``)."""
        keys = ["", *sorted({tag for v in self.variants for tag in v.messages if tag})]
        names = sorted(
            {
                name
                for v in self.variants
                for m in v.messages.values()
                for t in m.all_templates
                for root, name in t.fields
                if root == "attributes"
            }
        )
        tokens = _tokens(self, len(names))
        values = {("attributes", n): t for n, t in zip(names, tokens, strict=True)}
        lower: list[int] = []
        start = 0
        for v in self.variants:
            lower.append(start)
            start += v.weight
        templates = [
            json.dumps(v.message_for(key or None).render(values), ensure_ascii=False)
            for v in self.variants
            for key in keys
        ]
        return {
            "variants": [v.name for v in self.variants],
            "lower": lower,
            "total": start,
            "keys": keys,
            "templates": templates,
            "tokens": tokens,
            "names": names,
        }

    def variant_for(self, subscription_id: str) -> CompiledVariant:
        return campaign_variant(subscription_id, self.id, self.variants)


def _tokens(campaign: Campaign, n: int) -> list[str]:
    """Stand-ins for attribute values in a payload's JSON text, found in none of its texts."""
    texts = json.dumps(campaign.spec, ensure_ascii=False)
    salt = 0
    while True:
        nonce = hashlib.sha256(f"{campaign.id}:{salt}".encode()).hexdigest()[:12]
        if f"@@{nonce}" not in texts:
            return [f"@@{nonce}:{i}@@" for i in range(n)]
        salt += 1


def sql_argument(cond: Condition) -> Any:
    """A condition's value as momentcast_holds takes it: in a JSON array for in, and for
    not_in the values with the JSON types among them."""
    if cond.op == "in":
        return list(cond.value) if isinstance(cond.value, tuple) else [cond.value]
    if cond.op == "not_in":
        values = list(cond.value) if isinstance(cond.value, tuple) else [cond.value]
        kinds = sorted({_JSON_TYPES[k] for v in values if (k := kind(v)) is not None})
        return {"values": values, "kinds": kinds}
    return cond.value


_JSON_TYPES = {"text": "string", "number": "number", "bool": "boolean"}


# Tags of unions that are no field of the body (send_at's shapes, a condition's forms).
_UNION_TAGS = frozenset({"value", "ops"})


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in e["loc"]]
        if loc[:1] == ["send_at"] and len(loc) > 1:
            loc = ["send_at", *loc[2:]]  # drop the shape's tag
        elif loc[:2] == ["audience", "attributes"]:
            loc = [p for p in loc if p not in _UNION_TAGS and not p.startswith("function-")]
        message = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "timezone_aware":
            message = "needs an offset (e.g. 2026-11-24T11:45:00+01:00), or use {local, late}"
        item = (".".join(loc) or "(body)", message)
        if item not in out:
            out.append(item)
    return out


def parse_campaign(raw: str | bytes, *, now: datetime) -> Campaign:
    """Check and compile a campaign body (JSON); raises CampaignInvalid naming each field."""
    try:
        body = CampaignBody.model_validate_json(raw)
    except ValidationError as exc:
        raise CampaignInvalid(_errors(exc)) from None
    errors: list[tuple[str, str]] = []
    conditions: list[Condition] = []
    for key, spec in (body.audience.attributes or {}).items():
        op, value = spec.operator if isinstance(spec, ConditionOps) else ("eq", spec)
        cond = Condition("attributes", key, op, value)
        why = cond.never_applies()
        if why is not None:
            errors.append((f"audience.attributes.{key}", f"this condition can never hold: {why}"))
        conditions.append(cond)
    if isinstance(body.send_at, OptimalMoment):
        optimal = Optimal.of(body.send_at)
        late: Late = body.send_at.late
        send_at = SendAt(local=optimal.fallback_moment, late=late, optimal=optimal)
        errors += optimal.errors(None)
        if send_at.latest < now:
            errors.append(("send_at.optimal", f"{optimal.day} has passed in every time zone"))
    elif isinstance(body.send_at, LocalMoment):
        send_at = SendAt(local=body.send_at.local, late=body.send_at.late)
        if send_at.latest < now:
            errors.append(
                (
                    "send_at.local",
                    f"{body.send_at.local:%Y-%m-%dT%H:%M} has passed in every time zone",
                )
            )
    else:
        send_at = SendAt(instant=body.send_at.astimezone(UTC))
        if send_at.instant is not None and send_at.instant < now - PAST_TOLERANCE:
            errors.append(("send_at", f"{body.send_at.isoformat()} is in the past"))
    if send_at.earliest > now + MAX_AHEAD:
        errors.append(("send_at", "is more than a year ahead"))
    # The payload carries "campaign" where a rule's carries "rule": 4 characters more.
    try:
        variants = _compile(body)
    except RuleLoadError as exc:
        errors += [_field_message(e) for e in exc.errors]
        variants = []
    if body.experiment is not None and len(body.variants or []) < 2:
        errors.append(("experiment", "needs two or more variants to choose a winner from"))
    if errors:
        raise CampaignInvalid(errors)
    msg = body.message
    ttl = body.ttl if body.ttl is not None else msg.ttl
    return Campaign(
        id=body.id,
        description=body.description,
        send_at=send_at,
        ttl_s=max(1, int(ttl.total_seconds())),
        urgency=body.urgency or msg.urgency,
        topic=body.topic if body.topic is not None else msg.topic,
        rate_per_s=body.rate,
        variants=variants,
        conditions=tuple(conditions),
        topics=tuple(sorted(set(body.audience.topics))) if body.audience.topics else None,
        locales=tuple(sorted({t.lower() for t in body.audience.locales}))
        if body.audience.locales
        else None,
        spec=json.loads(raw),
        experiment=body.experiment,
    )


def _compile(body: CampaignBody) -> list[CompiledVariant]:
    from service.rules.loader import compile_message

    return compile_message(body.message, body.variants, name=body.id + "xxxx")


def _field_message(error: str) -> tuple[str, str]:
    where, sep, message = error.partition(": ")
    if not sep or " " in where:
        return ("message", error)
    return (where.replace("[", ".").replace("]", ""), message)


# --- the message per subscriber ------------------------------------------------------------


def campaign_variant(
    subscription_id: str, campaign_id: str, variants: Sequence[CompiledVariant]
) -> CompiledVariant:
    """Deterministic per (subscription, campaign): 7 bytes of SHA-256 (momentcast_variant_point
    in SQL computes the same), unlike a rule's ``rule_variant`` (8 bytes). Neither may change:
    a running A/B test would reshuffle its subscribers."""
    total = sum(v.weight for v in variants)
    point = variant_point(subscription_id, campaign_id, total)
    for variant in variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    return variants[-1]


def variant_point(subscription_id: str, campaign_id: str, total: int) -> int:
    digest = hashlib.sha256(f"{subscription_id}\0{campaign_id}".encode()).digest()
    return int.from_bytes(digest[:7], "big") % total


def render(message: CompiledMessage, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The stored payload of one subscriber's push: engine._render for campaigns, whose
    templates know only ``{attributes.*}`` (momentcast_fill in SQL)."""
    values = {
        (root, name): attribute_value(attributes.get(name))
        for tpl in message.all_templates
        for root, name in tpl.fields
        if root == "attributes"
    }
    return message.render(values)
