"""The compiled, immutable rule set: rules with their places flattened into
numpy arrays and one STRtree over every place any rule uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import tzfpy

from service.vocabulary import CONDITION_REASONS, DAYS, MOMENTS, PLACE_REASONS, Trigger

from .conditions import Condition
from .models import PolicyModel, RuleModel
from .places import FloatArray, IntArray, Place
from .templates import Template
from .units import Limit, Window

MESSAGE_FIELDS = ("title", "body", "url", "icon", "image", "tag")


@dataclass(frozen=True)
class CompiledAction:
    action: str
    title: Template
    url: Template | None  # None: the message's url


@dataclass(frozen=True)
class CompiledMessage:
    """The texts of one variant in one locale ("" is the default)."""

    lang: str
    templates: dict[str, Template]  # only the fields that are set
    actions: tuple[CompiledAction, ...] = ()

    def render(self, values: Mapping[tuple[str, str], str]) -> dict[str, Any]:
        """The stored payload: every set field, lang and the actions, with ``values`` filled
        in (rules and campaigns render through this alone)."""
        payload: dict[str, Any] = {name: t.render(values) for name, t in self.templates.items()}
        if self.lang:
            payload["lang"] = self.lang
        if self.actions:
            payload["actions"] = [
                {
                    "action": a.action,
                    "title": a.title.render(values),
                    "url": a.url.render(values) if a.url is not None else payload.get("url", ""),
                }
                for a in self.actions
            ]
        return payload

    @property
    def all_templates(self) -> list[Template]:
        out = list(self.templates.values())
        for a in self.actions:
            out += [a.title] if a.url is None else [a.title, a.url]
        return out

    @cached_property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """Every field the templates use, once each: what a render needs values for."""
        return tuple(dict.fromkeys(f for t in self.all_templates for f in t.fields))


@dataclass(frozen=True)
class CompiledVariant:
    name: str
    weight: int
    # By lower-case locale tag; "" is the default message.
    messages: dict[str, CompiledMessage]

    @property
    def templates(self) -> dict[str, Template]:
        return self.messages[""].templates

    def message_for(self, locale: str | None) -> CompiledMessage:
        """The subscriber's locale: the exact tag, then its language, else the default."""
        if locale:
            tag = locale.lower()
            found = self.messages.get(tag) or self.messages.get(tag.split("-", 1)[0])
            if found is not None:
                return found
        return self.messages[""]


@dataclass(eq=False)
class CompiledRule:
    id: str
    index: int
    file: str
    model: RuleModel
    place_idx: list[int]
    windows: list[Window]  # empty: any time of day
    variants: list[CompiledVariant]  # at least one (the base message as "default")
    # who.attributes, then who.context, in file order.
    conditions: tuple[Condition, ...] = ()

    @property
    def location_free(self) -> bool:
        return self.model.where is None

    @property
    def priority(self) -> int:
        return self.model.priority

    @property
    def description(self) -> str:
        return self.model.description

    @property
    def trigger(self) -> Trigger:
        return self.model.trigger

    @property
    def dwell_s(self) -> float:
        return self.model.dwell.total_seconds() if self.model.dwell else 0.0

    @property
    def day_mask(self) -> int:
        days = self.model.when.days if self.model.when else None
        return 0x7F if not days else sum(1 << DAYS.index(d) for d in days)

    @property
    def moment_mask(self) -> int:
        moments = self.model.who.moments if self.model.who else None
        # Bit 0 stands for "the signal declared no moment", which only rules
        # without a moment condition accept.
        return 0x1F if not moments else sum(1 << (MOMENTS.index(m) + 1) for m in moments)

    @property
    def per_subscriber(self) -> Limit | None:
        return self.model.limits.per_subscriber if self.model.limits else None

    @property
    def per_place(self) -> Limit | None:
        return self.model.limits.per_place if self.model.limits else None

    def summary(self, places: list[Place]) -> str:
        m = self.model
        when = ", ".join(w.text for w in self.windows) or "any time"
        if m.when and m.when.dayparts:
            when = ", ".join(m.when.dayparts) + f" ({when})"
        if m.when and m.when.days:
            when += " on " + ",".join(m.when.days)
        kinds = {places[i].kind for i in self.place_idx}
        trig = f"dwell {int(self.dwell_s)}s" if m.trigger == "dwell" else m.trigger
        variants = "/".join(v.name for v in self.variants)
        if m.allocation == "adaptive":
            variants += f" (adaptive, min_share {m.min_share:g})"
        where = (
            "no places"
            if self.location_free
            else f"{len(self.place_idx)} places ({'+'.join(sorted(kinds))})"
        )
        return f"{self.id}: priority {m.priority}, {trig}, {where}, {when}, variants {variants}"


@dataclass(eq=False)
class Ruleset:
    rules: list[CompiledRule]
    policy: PolicyModel
    places: list[Place]
    version: str
    root: str
    warnings: list[str] = field(default_factory=list)
    loaded_at: datetime | None = None

    def __post_init__(self) -> None:
        self.rule_by_id = {r.id: r for r in self.rules}
        self._build_reasons()
        self._build_fences()
        self._build_tree()

    def _build_reasons(self) -> None:
        """Codes of the reasons a pair can fail, in the order they are checked: 0 is OK, the
        attribute conditions come after topics and the context conditions after speed."""
        conditions = [c for r in self.rules for c in r.conditions]
        attrs = sorted({c.reason for c in conditions if c.source == "attributes"})
        ctx = sorted({c.reason for c in conditions if c.source == "context"})
        fixed = list(CONDITION_REASONS)
        split = fixed.index("topics") + 1
        self.reason_names: list[str] = ["", *fixed[:split], *attrs, *fixed[split:], *ctx]
        self.reason_code: dict[str, int] = {n: i for i, n in enumerate(self.reason_names)}
        self.place_reasons = PLACE_REASONS

    def places_geojson(self, rule: CompiledRule) -> dict[str, Any]:
        """A rule's places as a GeoJSON FeatureCollection in lon/lat, each point with the
        radius the rule reaches it with."""
        default_radius = rule.model.where.radius_m if rule.model.where else None
        features = [
            self.places[i].feature(self.places[i].radius_m or default_radius)
            for i in rule.place_idx
        ]
        return {"type": "FeatureCollection", "features": features}

    def _build_fences(self) -> None:
        hyst = self.policy.hysteresis_m
        f_rule: list[int] = []
        f_place: list[int] = []
        f_radius: list[float] = []
        f_gate: list[float] = []
        for rule in self.rules:
            who = rule.model.who
            max_acc = who.max_accuracy_m if who else None
            if rule.location_free:
                # One fence with no place: every signal is a pair of it (see core.evaluate).
                f_rule.append(rule.index)
                f_place.append(-1)
                f_radius.append(0.0)
                f_gate.append(np.inf)
                continue
            where = rule.model.where
            assert where is not None
            for p in rule.place_idx:
                place = self.places[p]
                if place.kind == "point":
                    radius = place.radius_m or where.radius_m or 0.0
                    gate = max_acc if max_acc is not None else radius
                else:
                    radius = 0.0
                    # A polygon has no radius; its area-equivalent one stands in.
                    gate = max_acc if max_acc is not None else place.equivalent_radius_m
                f_rule.append(rule.index)
                f_place.append(p)
                f_radius.append(radius)
                f_gate.append(gate)
        self.fence_rule: IntArray = np.asarray(f_rule, dtype=np.intp)
        self.fence_place: IntArray = np.asarray(f_place, dtype=np.intp)
        self.fence_radius: FloatArray = np.asarray(f_radius, dtype=np.float64)
        self.fence_reach: FloatArray = self.fence_radius + hyst
        self.fence_gate: FloatArray = np.asarray(f_gate, dtype=np.float64)
        self.fence_by_ids = {
            (self.rules[r].id, self.places[p].id): i
            for i, (r, p) in enumerate(zip(f_rule, f_place, strict=True))
            if p >= 0
        }
        self.free_fences: IntArray = np.flatnonzero(self.fence_place < 0).astype(np.intp)
        # Per fence, for the engine's per-signal loop: (rule id, place id), None for a fence
        # without a place, and the accuracy gate as a Python float.
        self.fence_keys: list[tuple[str, str] | None] = [
            (self.rules[r].id, self.places[p].id) if p >= 0 else None
            for r, p in zip(f_rule, f_place, strict=True)
        ]
        self.fence_gate_list: list[float] = [float(g) for g in f_gate]
        # CSR: fences of place p are place_fences[start[p]:start[p + 1]].
        placed = np.flatnonzero(self.fence_place >= 0)
        order = placed[np.argsort(self.fence_place[placed], kind="stable")]
        self.place_fences: IntArray = order.astype(np.intp)
        counts = np.bincount(self.fence_place[placed], minlength=len(self.places))
        self.place_fence_start: IntArray = np.concatenate(([0], np.cumsum(counts))).astype(np.intp)
        self.place_fence_count: IntArray = counts.astype(np.intp)

    def _build_tree(self) -> None:
        n = len(self.places)
        reach = np.zeros(n, dtype=np.float64)
        placed = self.fence_place >= 0
        np.maximum.at(reach, self.fence_place[placed], self.fence_reach[placed])
        boxes: list[tuple[float, float, float, float]] = []
        owner: list[int] = []
        self.place_tz: list[str | None] = [None] * n
        for p in np.flatnonzero(self.place_fence_count):
            pb = self.places[p].reach_box(float(reach[p]))
            boxes.extend(pb)
            owner.extend([int(p)] * len(pb))
            self.place_tz[p] = _uniform_tz(pb)
        self.tree_place: IntArray = np.asarray(owner, dtype=np.intp)
        geoms = shapely.box(*np.asarray(boxes, dtype=np.float64).T) if boxes else np.empty(0)
        self.tree = shapely.STRtree(geoms)
        self.place_is_poly = np.asarray([p.kind == "polygon" for p in self.places], dtype=bool)
        self.place_lat: FloatArray = np.asarray([p.lat for p in self.places], dtype=np.float64)
        self.place_lon: FloatArray = np.asarray([p.lon for p in self.places], dtype=np.float64)
        self.place_lat0: FloatArray = np.asarray([p.lat0 for p in self.places], dtype=np.float64)
        self.place_lon0: FloatArray = np.asarray([p.lon0 for p in self.places], dtype=np.float64)
        self.place_shape: npt.NDArray[np.object_] = np.empty(n, dtype=object)
        self.place_shape[:] = [p.shape for p in self.places]
        self.rule_priority = np.asarray([r.priority for r in self.rules], dtype=np.int64)
        self.tz_names: list[str] = sorted({z for z in self.place_tz if z is not None})
        codes = {z: i for i, z in enumerate(self.tz_names)}
        self.place_tz_code: IntArray = np.asarray(
            [codes[z] if z is not None else -1 for z in self.place_tz], dtype=np.intp
        )


def _uniform_tz(boxes: list[tuple[float, float, float, float]]) -> str | None:
    """The time zone of a place's whole reach, or None when the box touches a
    zone border (then each signal is looked up on its own)."""
    zones = set()
    for x0, y0, x1, y1 in boxes:
        for lon, lat in ((x0, y0), (x0, y1), (x1, y0), (x1, y1), ((x0 + x1) / 2, (y0 + y1) / 2)):
            zones.add(tzfpy.get_tz(lon, lat))
    if len(zones) != 1:
        return None
    zone = zones.pop()
    return zone if zone and not zone.startswith("Etc/") else None
