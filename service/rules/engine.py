"""Decisions: from evaluated signals to at most one push per signal.

Pure logic, no I/O and no clock: the caller loads `SubscriberState` for the
subscriptions in a batch, calls `decide`, stores the returned decisions and
the mutated states in one transaction per subscriber. The replay and the
simulator run the very same code on in-memory state.

Presence is kept per (subscription, rule id, place id) and only while inside:
an absent entry means outside.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from service.rules.core import Evaluation, Match, collector_paused, evaluate
from service.rules.ruleset import CompiledRule, CompiledVariant, Ruleset
from service.rules.signals import Profile, Signal, SignalBatch
from service.rules.templates import attribute_value, text_value
from service.rules.whynot import not_matched_counts

__all__ = [
    "Decision",
    "Outcome",
    "Presence",
    "Profile",
    "Sent",
    "Signal",
    "SubscriberState",
    "Suppression",
    "choose_variant",
    "decide",
    "render_payload",
    "simulate",
]


@dataclass
class Presence:
    entered_at: datetime
    dwell_fired: bool = False


@dataclass(frozen=True)
class Sent:
    rule_id: str
    place_id: str
    sent_at: datetime


@dataclass
class SubscriberState:
    """What the engine remembers per subscription between batches."""

    subscription_id: str
    last_signal_at: datetime | None = None
    presence: dict[tuple[str, str], Presence] = field(default_factory=dict)
    history: list[Sent] = field(default_factory=list)  # decisions, oldest first
    # What shadow rules would have sent, oldest first: only their own limits see it.
    shadow_history: list[Sent] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    rule_id: str
    place_id: str  # "" for a location-free rule
    distance_m: float | None  # None for a location-free rule
    variant: str
    priority: int
    # title, body, the set ones of url, icon, image, tag; lang and actions when given
    payload: dict[str, Any]
    ttl_s: int
    urgency: str
    topic: str | None
    dedupe_key: str


@dataclass(frozen=True)
class Suppression:
    rule_id: str
    place_id: str
    reason: str


@dataclass
class Outcome:
    signal: Signal
    applied: bool  # False: older than the last applied signal, changed nothing
    stale: bool = False
    local_offset_s: float | None = None  # known when the signal was near a place
    entered: list[tuple[str, str]] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)
    fired: list[Match] = field(default_factory=list)
    decision: Decision | None = None
    suppressed: list[Suppression] = field(default_factory=list)
    # Shadow rules that would have sent for this signal (they send nothing).
    shadow: list[Match] = field(default_factory=list)


def choose_variant(subscription_id: str, rule: CompiledRule) -> CompiledVariant:
    """Deterministic per (subscription, rule): a stable hash picks a point on
    the cumulative weights, so a subscriber always sees the same variant."""
    total = sum(v.weight for v in rule.variants)
    digest = hashlib.sha256(f"{subscription_id}\0{rule.id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for variant in rule.variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    return rule.variants[-1]


def history_window(ruleset: Ruleset) -> timedelta:
    """How far back decisions matter for caps, gaps and cooldowns."""
    spans = [timedelta(0)]
    lim = ruleset.policy.limits
    if lim.per_subscriber:
        spans.append(lim.per_subscriber.period)
    if lim.min_gap:
        spans.append(lim.min_gap)
    for r in ruleset.rules:
        spans.extend(x.period for x in (r.per_subscriber, r.per_place) if x is not None)
    return max(spans)


def decide(
    ruleset: Ruleset,
    signals: Sequence[Signal],
    profiles: Mapping[str, Profile],
    states: MutableMapping[str, SubscriberState],
    now: datetime | None = None,
    arrival_order: bool = False,
    not_matched: Counter[tuple[str, str]] | None = None,
) -> list[Outcome]:
    """Apply a batch of signals; one Outcome per signal, in `at` order per
    subscription. `states` is updated in place (missing ones are created).
    `now=None` means "each signal is evaluated at its own time" (replay).
    `arrival_order=True` applies signals exactly as given, so a late one is
    seen as out of order (replay of a recorded stream). `not_matched`, when
    given, gets the batch's (rule id, reason) counts of rules within reach
    that did not match (`whynot.not_matched_counts`)."""
    if arrival_order:
        ordered = list(signals)
    else:
        ordered = sorted(signals, key=lambda s: (s.subscription_id, s.at))
    ev = evaluate(ruleset, SignalBatch.build(ordered, profiles))
    keep = history_window(ruleset)
    out: list[Outcome] = []
    with collector_paused():  # an outcome a signal: allocation-heavy, no cycles
        for i, sig in enumerate(ordered):
            profile = profiles.get(sig.subscription_id) or Profile(id=sig.subscription_id)
            state = states.get(sig.subscription_id)
            if state is None:
                state = states[sig.subscription_id] = SubscriberState(sig.subscription_id)
            out.append(_apply(ruleset, ev, i, sig, profile, state, now, keep))
        if not_matched is not None:  # after the loop: a batch that raised counts nothing
            not_matched.update(not_matched_counts(ev))
    return out


def _apply(
    rs: Ruleset,
    ev: Evaluation,
    i: int,
    sig: Signal,
    profile: Profile,
    state: SubscriberState,
    now: datetime | None,
    keep: timedelta,
) -> Outcome:
    if state.last_signal_at is not None and sig.at < state.last_signal_at:
        return Outcome(signal=sig, applied=False)
    state.last_signal_at = sig.at
    stale = now is not None and now - sig.at > rs.policy.stale_after
    outcome = Outcome(signal=sig, applied=True, stale=stale)
    py = ev.lists
    pairs = range(py.start[i], py.start[i + 1])
    if not pairs and not state.presence:
        return outcome  # near nothing, inside nothing: most signals of a busy batch
    if pairs:
        outcome.local_offset_s = py.local_offset[pairs.start]
    entered: set[int] = set()
    if sig.located:
        # A context signal (no location) says nothing about where the subscriber is:
        # presence neither enters nor leaves on it.
        seen: set[tuple[str, str]] = set()
        for k in pairs:
            fence_key = rs.fence_keys[py.fence[k]]
            if fence_key is None:
                continue
            key = fence_key
            seen.add(key)
            if not py.accurate[k] or not py.inside[k]:
                continue  # imprecise fixes and the hysteresis band change nothing
            if key not in state.presence:
                state.presence[key] = Presence(entered_at=sig.at)
                entered.add(k)
                outcome.entered.append(key)
        _leave(rs, sig, state, seen, outcome)
    matched = py.matched  # one whole-batch mask, computed once (cached)
    candidates: list[Match] = []
    for k in pairs:
        if not matched[k]:
            continue
        m = ev.match_at(k)
        if m.rule.trigger == "enter":
            fires = k in entered
        elif m.rule.trigger == "dwell":
            pres = state.presence[(m.rule.id, m.place_id)]
            fires = (
                not pres.dwell_fired
                and (sig.at - pres.entered_at).total_seconds() >= m.rule.dwell_s
            )
            # A stale signal leaves the dwell to fire on a later fresh one.
            if fires and not stale:
                pres.dwell_fired = True
        else:
            fires = True
        if fires and not stale:
            candidates.append(m)
    outcome.fired = candidates
    if not candidates:
        return outcome
    # Highest priority, then the nearest place (a rule without places after any place),
    # then the rule id.
    candidates.sort(
        key=lambda m: (
            -m.rule.priority,
            math.inf if m.distance_m is None else m.distance_m,
            m.rule.id,
            m.place_id,
        )
    )
    cutoff = sig.at - keep
    state.history = [h for h in state.history if h.sent_at > cutoff]
    if state.shadow_history:
        state.shadow_history = [h for h in state.shadow_history if h.sent_at > cutoff]
    for m in candidates:
        shadow = m.rule.model.mode == "shadow"
        history = state.history
        if shadow:
            # As if it alone were live: the live sends and its own would-be sends count.
            history = history + [h for h in state.shadow_history if h.rule_id == m.rule.id]
        # Quiet hours in the local time of the match: a place's, or the subscriber's.
        reason = _suppressed(rs, m, sig.at, profile, history, py.quiet[m.pair])
        if reason is not None:
            outcome.suppressed.append(Suppression(m.rule.id, m.place_id, reason))
            continue
        if shadow:
            # Would have sent: counted, never sent, kept out of the live caps' history; a
            # live rule ranked below may still send for this signal.
            outcome.shadow.append(m)
            state.shadow_history.append(Sent(m.rule.id, m.place_id, sig.at))
            continue
        outcome.decision = _render(m, sig, profile, state)
        state.history.append(Sent(m.rule.id, m.place_id, sig.at))
        break
    return outcome


def _leave(
    rs: Ruleset, sig: Signal, state: SubscriberState, seen: set[tuple[str, str]], outcome: Outcome
) -> None:
    """Presence entries not within reach of this fix are left, unless the
    fix is too imprecise for that fence to judge."""
    for key in [k for k in state.presence if k not in seen]:
        fence = rs.fence_by_ids.get(key)
        if fence is None:  # rule or place gone after a reload
            del state.presence[key]
            continue
        gate = rs.fence_gate_list[fence]
        if sig.accuracy_m is not None and sig.accuracy_m > gate:
            continue
        del state.presence[key]
        outcome.left.append(key)


def _count(
    history: list[Sent], since: datetime, rule: str | None = None, place: str | None = None
) -> int:
    return sum(
        1
        for h in history
        if h.sent_at > since
        and (rule is None or h.rule_id == rule)
        and (place is None or h.place_id == place)
    )


def _suppressed(
    rs: Ruleset, m: Match, at: datetime, profile: Profile, history: list[Sent], quiet: bool
) -> str | None:
    if profile.gone:
        return "gone"
    if profile.paused:
        return "paused"
    if quiet:
        return "quiet_hours"
    lim = rs.policy.limits
    if (
        lim.per_subscriber
        and _count(history, at - lim.per_subscriber.period) >= lim.per_subscriber.count
    ):
        return "global_cap"
    if lim.min_gap and history and max(h.sent_at for h in history) > at - lim.min_gap:
        return "min_gap"
    rc = m.rule.per_subscriber
    if rc and _count(history, at - rc.period, rule=m.rule.id) >= rc.count:
        return "rule_cap"
    pc = m.rule.per_place
    if (
        pc
        and m.place is not None
        and _count(history, at - pc.period, rule=m.rule.id, place=m.place_id) >= pc.count
    ):
        return "place_cooldown"
    return None


def _render(m: Match, sig: Signal, profile: Profile, state: SubscriberState) -> Decision:
    rule = m.rule
    variant = choose_variant(sig.subscription_id, rule)
    payload = render_payload(m, variant, profile, sig.context)
    msg = rule.model.message
    ttl = msg.ttl.total_seconds()
    if m.ttl_left_s is not None:
        ttl = min(ttl, m.ttl_left_s)
    if rule.trigger in ("enter", "dwell"):
        # Once per visit: the visit is named by the time it began.
        visit = int(state.presence[(rule.id, m.place_id)].entered_at.timestamp())
        key = f"{sig.subscription_id}:{rule.id}:{m.place_id}:{visit}"
    else:
        # inside and signal: each signal is one decision (its stored id, else its time).
        each = sig.id if sig.id is not None else int(sig.at.timestamp() * 1000)
        key = f"{sig.subscription_id}:{rule.id}:{m.place_id}:s{each}"
    return Decision(
        rule_id=rule.id,
        place_id=m.place_id,
        distance_m=round(m.distance_m, 1) if m.distance_m is not None else None,
        variant=variant.name,
        priority=rule.priority,
        payload=payload,
        ttl_s=max(0, math.ceil(ttl)),
        urgency=msg.urgency,
        topic=msg.topic,
        dedupe_key=key,
    )


def render_payload(
    m: Match, variant: CompiledVariant, profile: Profile, context: Mapping[str, Any]
) -> dict[str, Any]:
    """One variant's message rendered for a match, in the profile's locale: what decisions,
    `rules preview` and the test push send (title, body, the set ones of url, icon, image,
    tag; lang and actions when given)."""
    rule = m.rule
    message = variant.message_for(profile.locale)
    values: dict[tuple[str, str], str] = {("rule", "id"): rule.id}
    if m.distance_m is not None:
        values[("distance_m", "")] = str(round(m.distance_m))
    for tpl in message.all_templates:
        for root, name in tpl.fields:
            if root == "place":
                values[(root, name)] = text_value(_place_value(m, name))
            elif root == "attributes":
                values[(root, name)] = attribute_value(profile.attributes.get(name))
            elif root == "context":
                values[(root, name)] = attribute_value(context.get(name))
    return message.render(values)


def _place_value(m: Match, name: str) -> Any:
    place = m.place
    if place is None:
        return None
    if name == "id":
        return place.id
    if name == "name":
        return place.name
    return place.properties.get(name)


def simulate(
    ruleset: Ruleset, signal: Signal, profile: Profile, now: datetime | None = None
) -> dict[str, Any]:
    """Explain one signal for a fresh subscriber: the decision, and per rule
    whether it matched and, if it was not chosen, why."""
    states: dict[str, SubscriberState] = {}
    profiles = {signal.subscription_id: profile}
    ordered = [signal]
    ev = evaluate(ruleset, SignalBatch.build(ordered, profiles))
    reasons = ev.reasons(0)
    outcome = decide(ruleset, ordered, profiles, states, now)[0]
    suppressed = {s.rule_id: s.reason for s in outcome.suppressed}
    fired = {m.rule.id for m in outcome.fired}
    shadowed = {m.rule.id for m in outcome.shadow}
    rules = []
    for rule in ruleset.rules:
        reason = reasons[rule.id]
        matched = reason is None
        if matched:
            if outcome.stale:
                reason = "stale"
            elif rule.id in suppressed:
                reason = suppressed[rule.id]
            elif rule.id not in fired:
                reason = "dwell_pending" if rule.trigger == "dwell" else "not_triggered"
            elif rule.id in shadowed:
                reason = "shadow"
            elif outcome.decision is None or outcome.decision.rule_id != rule.id:
                reason = "outranked"
        rules.append({"rule": rule.id, "matched": matched, "reason": reason})
    d = outcome.decision
    decision = (
        None
        if d is None
        else {
            "rule": d.rule_id,
            "place": d.place_id or None,
            "distance_m": d.distance_m,
            "variant": d.variant,
            "notification": notification(d.payload),
        }
    )
    return {"decision": decision, "rules": rules}


def notification(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A decision's rendered message as the phone shows it (simulate, preview)."""
    out: dict[str, Any] = {"title": payload.get("title", ""), "body": payload.get("body", "")}
    for name in ("url", "icon", "image"):
        if payload.get(name):
            out[name] = payload[name]
    out["actions"] = list(payload.get("actions", []))
    out["locale"] = payload.get("lang", "")
    return out
