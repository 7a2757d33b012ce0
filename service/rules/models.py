"""The rule file and policy file formats as pydantic models.

`extra="forbid"` everywhere: a misspelt key (`dayparts` as `dayparst`) would
otherwise silently widen a rule, which is the worst kind of mistake here.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from service.durations import DURATION_PATTERN, parse_duration
from service.vocabulary import (
    DEFAULT_URGENCY,
    PLACE_TRIGGERS,
    PUSH_TOPIC,
    PUSH_TOPIC_PATTERN,
    Allocation,
    Day,
    Moment,
    Operator,
    RuleMode,
    Trigger,
    Urgency,
)

from .units import LIMIT_PATTERN, WINDOW_PATTERN, Limit, Window, parse_limit, parse_window

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "20m"]}),
]
LimitText = Annotated[
    Limit,
    BeforeValidator(parse_limit),
    WithJsonSchema({"type": "string", "pattern": LIMIT_PATTERN, "examples": ["1/day", "3/week"]}),
]
WindowText = Annotated[
    Window,
    BeforeValidator(parse_window),
    WithJsonSchema({"type": "string", "pattern": WINDOW_PATTERN, "examples": ["11:30-14:00"]}),
]
Scalar = str | int | float | bool
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# BCP 47-like language tags as browsers report them: de, de-AT, zh-Hant-TW.
LOCALE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
ACTION_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_ACTIONS = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A rule file's `campaign:` key: the local dates the rule may fire on. Not a campaign (that is
# service.campaigns, the marketer's one-off message); no docstring, which the schema would show.
class DateWindow(_Strict):
    start: date | None = Field(None, description="First local date the rule may fire")
    end: date | None = Field(None, description="Last local date the rule may fire (inclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> DateWindow:
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"campaign ends ({self.end}) before it starts ({self.start})")
        return self


class Where(_Strict):
    places: str | list[str] = Field(
        description="Places file(s) under rules/: GeoJSON (.geojson, .json) or CSV with "
        "id,name,lat,lon, e.g. places/restaurants.geojson or places/shops.csv"
    )
    filter: dict[str, Scalar] | None = Field(
        None, description="Feature properties that must all be equal, e.g. {category: restaurant}"
    )
    radius_m: float | None = Field(
        None, gt=0, le=50_000, description="Radius around Point features; a feature's radius_m wins"
    )

    @property
    def files(self) -> list[str]:
        return [self.places] if isinstance(self.places, str) else list(self.places)


class When(_Strict):
    dayparts: list[str] | None = Field(None, description="Names from policy.yaml dayparts")
    between: WindowText | list[WindowText] | None = Field(
        None, description='Local time windows such as "11:30-14:00" or "22:00-02:00"'
    )
    days: list[Day] | None = Field(
        None,
        description="Local weekdays (a window that crosses "
        "midnight belongs to the day it starts on)",
    )

    @property
    def windows(self) -> list[Window]:
        if self.between is None:
            return []
        return [self.between] if isinstance(self.between, Window) else list(self.between)


class ConditionOps(_Strict):
    """One operator and its value, e.g. ``{gte: 3}`` or ``{in: [rain, snow]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    gt: Scalar | None = None
    gte: Scalar | None = None
    lt: Scalar | None = None
    lte: Scalar | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> ConditionOps:
        given = [name for name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(
                "a condition is one operator and its value, e.g. {gte: 3} or {in: [a, b]}"
                + (f" (got {len(given)})" if given else "")
            )
        return self

    @property
    def operator(self) -> tuple[Operator, Scalar | tuple[Scalar, ...]]:
        name = next(iter(self.model_fields_set))
        value = getattr(self, name)
        op: Operator = "in" if name == "in_" else name  # type: ignore[assignment]
        return op, tuple(value) if isinstance(value, list) else value


ConditionSpec = Annotated[
    Scalar | ConditionOps,
    Field(description="A value (equality) or one operator: eq ne in not_in gt gte lt lte exists"),
]


class Who(_Strict):
    topics: list[str] | None = Field(None, description="At least one in common with the subscriber")
    attributes: dict[str, ConditionSpec] | None = Field(
        None, description="Conditions on the subscriber's attributes; all must hold"
    )
    context: dict[str, ConditionSpec] | None = Field(
        None, description="Conditions on the signal's context; all must hold"
    )
    moments: list[Moment] | None = Field(None, description="The signal's declared intent")
    max_speed_mps: float | None = Field(None, gt=0, description="Ignore faster subscribers")
    max_accuracy_m: float | None = Field(
        None, gt=0, description="Fixes less precise than this neither enter nor leave a place"
    )


class Action(_Strict):
    """A notification button; a click counts per action and opens its url."""

    action: str = Field(description="Id of the button, counted in stats: a-z 0-9 _ -")
    title: str = Field(min_length=1, description="Button text (template)")
    url: str | None = Field(None, description="Opened on click (template); default: message url")

    @model_validator(mode="after")
    def _id(self) -> Action:
        if not ACTION_ID.match(self.action) or self.action == "open":
            raise ValueError(
                f"action {self.action!r}: use up to 32 of a-z 0-9 _ - ('open' is the "
                "notification itself)"
            )
        return self


class LocalisedText(_Strict):
    """A locale's texts; unset fields fall back (variant+locale, variant, message+locale,
    message)."""

    title: str | None = Field(None, min_length=1)
    body: str | None = None
    url: str | None = None
    icon: str | None = None
    image: str | None = None
    tag: str | None = None
    actions: list[Action] | None = Field(None, max_length=MAX_ACTIONS)


Locales = Annotated[
    dict[Annotated[str, Field(pattern=LOCALE_PATTERN)], LocalisedText],
    Field(description="By the subscriber's locale: exact tag, then language, else the default"),
]


def _unique_actions(actions: list[Action] | None) -> None:
    if actions is not None:
        ids = [a.action for a in actions]
        if len(set(ids)) != len(ids):
            raise ValueError("action ids must be unique")


class MessageOverride(LocalisedText):
    """A variant's changes to the rule's message; unset fields are inherited."""

    locales: Locales | None = None

    @model_validator(mode="after")
    def _actions(self) -> MessageOverride:
        _unique_actions(self.actions)
        return self


class Message(_Strict):
    title: str = Field(min_length=1, description="Template, e.g. 'Lunch at {place.name}?'")
    body: str = Field(
        "", description="Template with place.*, distance_m, rule.id, attributes.*, context.*"
    )
    url: str | None = Field(None, description="Opened on click (template)")
    icon: str | None = None
    image: str | None = None
    tag: str | None = Field(None, description="Notifications with the same tag replace each other")
    actions: list[Action] | None = Field(None, max_length=MAX_ACTIONS, description="Buttons")
    locales: Locales | None = None
    ttl: Duration = Field(timedelta(hours=1), description="How long the push service keeps it")
    urgency: Urgency = DEFAULT_URGENCY
    topic: str | None = Field(
        None,
        description="RFC 8030 Topic: up to 32 of A-Z a-z 0-9 _ -",
        json_schema_extra={"pattern": PUSH_TOPIC_PATTERN},
    )

    @model_validator(mode="after")
    def _topic(self) -> Message:
        _unique_actions(self.actions)
        if self.topic is not None and not PUSH_TOPIC.match(self.topic):
            raise ValueError(f"topic {self.topic!r} must be 1-32 characters of A-Z a-z 0-9 _ -")
        if self.ttl > timedelta(days=28):
            raise ValueError("ttl longer than 28d is not kept by push services")
        return self


class Variant(_Strict):
    name: str = Field(min_length=1, max_length=32)
    weight: int = Field(ge=0, le=10_000)
    message: MessageOverride | None = None


class Limits(_Strict):
    per_subscriber: LimitText | None = Field(None, description="e.g. 1/day for this rule")
    per_place: LimitText | None = Field(None, description="e.g. 1/week per subscriber and place")


class RuleModel(_Strict):
    id: str | None = Field(None, description="Defaults to the file name without .yaml")
    description: str = ""
    priority: int = Field(
        0,
        ge=-1_000_000,
        le=1_000_000,
        description="Higher wins when several rules match one signal",
    )
    campaign: DateWindow | None = None
    trigger: Trigger = Field(
        "enter", description="enter, dwell, inside (need where); signal (default without where)"
    )
    dwell: Duration | None = Field(None, description="Needed by trigger: dwell, e.g. 3m")
    where: Where | None = Field(None, description="Places; without it the rule is location-free")
    when: When | None = None
    who: Who | None = None
    message: Message
    variants: list[Variant] | None = None
    allocation: Allocation = Field(
        "fixed",
        description="How each push's variant is picked: fixed (by weight, the same variant for "
        "a subscriber every time) or adaptive (Thompson sampling over the last 30 days' "
        "interactions per sent push; weights unused, but weight 0 still turns a variant off)",
    )
    min_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="allocation: adaptive only: the least share of pushes every variant keeps "
        "(min_share x variants must be at most 1)",
    )
    limits: Limits | None = None
    mode: RuleMode = Field(
        "live",
        description="live sends; shadow is evaluated on live traffic, counts shadow_sent, "
        "never sends and never counts toward caps",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_trigger(cls, data: Any) -> Any:
        # A rule without places has nothing to enter: it fires on matching signals.
        if isinstance(data, dict) and "trigger" not in data and data.get("where") is None:
            return {**data, "trigger": "signal"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RuleModel:
        if self.where is None:
            if self.trigger in PLACE_TRIGGERS:
                raise ValueError(
                    f"trigger: {self.trigger} needs where (places); a rule without places "
                    "uses trigger: signal"
                )
            if self.limits is not None and self.limits.per_place is not None:
                raise ValueError("limits.per_place needs where (places)")
            if self.who is not None and self.who.max_accuracy_m is not None:
                raise ValueError("who.max_accuracy_m needs where (places)")
        if self.id is not None and not RULE_ID.match(self.id):
            raise ValueError(f"id {self.id!r}: use lower-case letters, digits, - and _")
        if self.trigger == "dwell" and self.dwell is None:
            raise ValueError("trigger: dwell needs a dwell time, e.g. dwell: 3m")
        if self.trigger != "dwell" and self.dwell is not None:
            raise ValueError(f"dwell is only used with trigger: dwell (trigger is {self.trigger})")
        if self.variants is not None:
            names = [v.name for v in self.variants]
            if len(set(names)) != len(names):
                raise ValueError("variant names must be unique")
            if sum(v.weight for v in self.variants) <= 0:
                raise ValueError("variant weights must add up to more than 0")
        return self


class PolicyLimits(_Strict):
    per_subscriber: LimitText | None = Field(None, description="All rules together, e.g. 3/day")
    min_gap: Duration | None = Field(None, description="Minimum time between two pushes, e.g. 1h")


class FatiguePolicy(_Strict):
    """Rest a subscriber who got `after` sent pushes in a row without an interaction."""

    after: int = Field(
        ...,
        ge=1,
        strict=True,
        description="Sent pushes in a row without a click or conversion before a rest, e.g. 5",
    )
    rest: Duration = Field(
        ..., description="How long rule and campaign pushes to them are suppressed, e.g. 14d"
    )


class PolicyModel(_Strict):
    dayparts: dict[str, WindowText] = Field(default_factory=dict)
    quiet_hours: WindowText | None = None
    limits: PolicyLimits = Field(default_factory=lambda: PolicyLimits.model_validate({}))
    stale_after: Duration = Field(
        timedelta(minutes=10),
        description="Signals older than this when processed update presence but trigger nothing",
    )
    presence_timeout: Duration = Field(
        timedelta(hours=2),
        description="A subscriber not seen for this long is outside every place again",
    )
    hysteresis_m: float = Field(30.0, ge=0, le=5000)
    fatigue: FatiguePolicy | None = Field(
        None, description="The fatigue guard, e.g. {after: 5, rest: 14d}; off when absent"
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema of a rule file, for yaml-language-server and other editors."""
    schema = RuleModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "momentcast rule file"
    return schema


def policy_json_schema() -> dict[str, Any]:
    schema = PolicyModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "momentcast policy.yaml"
    return schema
