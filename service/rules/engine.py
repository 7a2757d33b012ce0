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
import itertools
import math
import operator
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from service.engagement.fatigue import is_resting
from service.rules.adaptive import Posteriors, adaptive_rules, draw_variants
from service.rules.core import Evaluation, Match, collector_paused, evaluate
from service.rules.presence import (
    BatchPresence,
    Presence,
    batch_presence,
    microseconds,
    microseconds_of,
)
from service.rules.ruleset import CompiledRule, CompiledVariant, Ruleset
from service.rules.signals import Profile, Signal, SignalBatch
from service.rules.templates import attribute_value, text_value
from service.rules.whynot import not_matched_counts
from service.vocabulary import FATIGUED

__all__ = [
    "Decision",
    "Outcome",
    "Posteriors",
    "Presence",
    "Profile",
    "Sent",
    "Signal",
    "SubscriberState",
    "Suppression",
    "chosen_variant",
    "decide",
    "render_payload",
    "rule_variant",
    "simulate",
]


@dataclass(frozen=True)
class Sent:
    rule_id: str
    place_id: str
    sent_at: datetime


@dataclass(slots=True)
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


@dataclass(slots=True)  # one a signal: slots make them cheaper to build and to hold
class Outcome:
    signal: Signal
    applied: bool  # False: older than the last applied signal, changed nothing
    stale: bool = False
    local_offset_s: float | None = None  # known when the signal was near a place
    entered: list[tuple[str, str]] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)
    # (rule id, place id) of matched rules that stayed silent: every one of a stale signal
    # (reason `stale`), else `enter` rules because the subscriber was already inside
    # (reason `not_triggered`).
    silent: list[tuple[str, str]] = field(default_factory=list)
    fired: list[Match] = field(default_factory=list)
    decision: Decision | None = None
    suppressed: list[Suppression] = field(default_factory=list)
    # Shadow rules that would have sent for this signal (they send nothing).
    shadow: list[Match] = field(default_factory=list)


def rule_variant(subscription_id: str, rule: CompiledRule) -> CompiledVariant:
    """Deterministic per (subscription, rule): a stable hash (8 bytes of SHA-256; a campaign's
    ``campaign_variant`` takes 7, and neither may change) picks a point on the cumulative
    weights, so a subscriber always sees the same variant."""
    if len(rule.variants) == 1:
        return rule.variants[0]  # what the hash would pick, without hashing
    total = sum(v.weight for v in rule.variants)
    digest = hashlib.sha256(f"{subscription_id}\0{rule.id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for variant in rule.variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    return rule.variants[-1]


def chosen_variant(subscription_id: str, m: Match) -> CompiledVariant:
    """The variant a match pushes: the one drawn for it (allocation: adaptive, when the caller
    passed counts), else the subscriber's fixed one."""
    return m.variant if m.variant is not None else rule_variant(subscription_id, m.rule)


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
    posteriors: Posteriors | None = None,
) -> list[Outcome]:
    """Apply a batch of signals; one Outcome per signal, in `at` order per
    subscription. `states` is updated in place (missing ones are created).
    `now=None` means "each signal is evaluated at its own time" (replay, backtest): then a
    signal is stale only if it has a `received_at` more than stale_after after its `at`.
    `arrival_order=True` applies signals exactly as given, so a late one is
    seen as out of order (replay of a recorded stream). `not_matched`, when
    given, gets the batch's (rule id, reason) counts of rules within reach
    that did not match (`whynot.not_matched_counts`). `posteriors`, when given, draws the
    variants of adaptive rules (`adaptive.draw_variants`); without it they take the fixed one.

    The whole batch at once: which signals apply (none older than its subscriber's last),
    which are stale, presence (`presence.batch_presence`) and which pairs fire are numpy
    over the batch; Python runs per signal with a firing rule (caps, quiet hours, the
    decision) and per entry, exit and outcome it returns."""
    ordered = list(signals) if arrival_order else sorted(signals, key=_BY_SUBSCRIPTION_AND_TIME)
    with collector_paused():  # an outcome a signal: allocation-heavy, no cycles
        ev = evaluate(ruleset, SignalBatch.build(ordered, profiles))
        out = _decide(ruleset, ev, ordered, profiles, states, now, posteriors)
        if not_matched is not None:  # at the end: a batch that raised counts nothing
            not_matched.update(not_matched_counts(ev))
    return out


def _decide(
    rs: Ruleset,
    ev: Evaluation,
    ordered: list[Signal],
    profiles: Mapping[str, Profile],
    states: MutableMapping[str, SubscriberState],
    now: datetime | None,
    posteriors: Posteriors | None = None,
) -> list[Outcome]:
    """The outcomes of a batch of signals in order, the subscribers' states updated."""
    sub, subs = _subscribers(ordered, states)
    at = [s.at for s in ordered]
    us = microseconds_of(at)
    before = [s.last_signal_at for s in subs]
    applied = _applied(sub, us, before)
    stale = _stale(rs, ordered, us, applied, now)
    _advance_last_signal(subs, sub, applied, at)
    pres = _presence(rs, ev, subs, sub, us, applied, stale, at, before)
    out = _outcomes(rs, ev, ordered, applied, stale, pres)
    firing = _firing_pairs(rs, ev, pres, applied, stale, out)
    if len(firing):
        _fire_signals(rs, ev, pres, firing, ordered, profiles, subs, sub, out, posteriors)
    return out


def _subscribers(
    ordered: list[Signal], states: MutableMapping[str, SubscriberState]
) -> tuple[npt.NDArray[np.intp], list[SubscriberState]]:
    """Each signal's subscriber code, and the state of each subscriber (created if missing)."""
    codes: dict[str, int] = {}
    sub = np.asarray(
        [codes.setdefault(s.subscription_id, len(codes)) for s in ordered], dtype=np.intp
    )
    subs: list[SubscriberState] = []
    for sid in codes:  # created in the order their subscribers first come
        state = states.get(sid)
        if state is None:
            state = states[sid] = SubscriberState(sid)
        subs.append(state)
    return sub, subs


def _stale(
    rs: Ruleset,
    ordered: list[Signal],
    us: npt.NDArray[np.int64],
    applied: npt.NDArray[np.bool_],
    now: datetime | None,
) -> npt.NDArray[np.bool_]:
    """Which applied signals are too old to push on (policy stale_after)."""
    stale_us = rs.policy.stale_after // _US
    if now is not None:
        return applied & (microseconds(now) - us > stale_us)
    # Each signal at its own time; a stored one is stale if it reached the server late.
    stale = np.zeros(len(ordered), dtype=bool)
    known = [(i, s.received_at) for i, s in enumerate(ordered) if s.received_at is not None]
    if known:
        late = [i for i, _ in known]
        stale[late] = microseconds_of([r for _, r in known]) - us[late] > stale_us
        stale &= applied
    return stale


def _advance_last_signal(
    subs: list[SubscriberState],
    sub: npt.NDArray[np.intp],
    applied: npt.NDArray[np.bool_],
    at: list[datetime],
) -> None:
    """Set each subscriber's last_signal_at to its last applied signal."""
    last = np.full(len(subs), -1, dtype=np.intp)
    app = np.flatnonzero(applied)
    np.maximum.at(last, sub[app], app)
    for c in np.flatnonzero(last >= 0).tolist():
        subs[c].last_signal_at = at[int(last[c])]


def _presence(
    rs: Ruleset,
    ev: Evaluation,
    subs: list[SubscriberState],
    sub: npt.NDArray[np.intp],
    us: npt.NDArray[np.int64],
    applied: npt.NDArray[np.bool_],
    stale: npt.NDArray[np.bool_],
    at: list[datetime],
    before: list[datetime | None],
) -> BatchPresence:
    """The batch's entries, exits and dwells; each subscriber keeps its presence after it."""
    # Presence expires (policy presence_timeout): a subscriber's signals are cut into
    # sessions at each gap longer than the timeout, and presence runs per session as if each
    # were a subscriber of its own: the first carries the stored presence in unless a gap
    # opens it, each later one starts outside every place (the expiry is silent: no leave).
    session, carries = _sessions(sub, us, applied, before, rs.policy.presence_timeout // _US)
    n_sessions = len(carries)
    carried: list[dict[tuple[str, str], Presence]] = [
        subs[c].presence if keep_in else {} for c, keep_in in carries
    ]
    pres = batch_presence(rs, ev, session, applied, stale, us, at, carried)
    # Each subscriber leaves with its last session's presence.
    for j in range(n_sessions):
        c = carries[j][0]
        if (j + 1 == n_sessions or carries[j + 1][0] != c) and carried[j] is not subs[c].presence:
            subs[c].presence.clear()
            subs[c].presence.update(carried[j])
    return pres


def _outcomes(
    rs: Ruleset,
    ev: Evaluation,
    ordered: list[Signal],
    applied: npt.NDArray[np.bool_],
    stale: npt.NDArray[np.bool_],
    pres: BatchPresence,
) -> list[Outcome]:
    """One outcome a signal, with its local offset and the places it entered and left."""
    applied_l = applied.tolist()
    stale_l = stale.tolist()
    out = [Outcome(sig, a, st) for sig, a, st in zip(ordered, applied_l, stale_l, strict=True)]
    start = ev.start
    with_pairs = np.flatnonzero(applied & (start[1:] > start[:-1]))
    for i, offset in zip(
        with_pairs.tolist(), ev.local_offset[start[with_pairs]].tolist(), strict=True
    ):
        out[i].local_offset_s = offset
    keys = rs.fence_keys
    came = np.flatnonzero(pres.entered)
    for i, f in zip(ev.sig[came].tolist(), ev.fence[came].tolist(), strict=True):
        out[i].entered.append(keys[f])
    for i, key in pres.left:
        out[i].left.append(key)
    return out


def _firing_pairs(
    rs: Ruleset,
    ev: Evaluation,
    pres: BatchPresence,
    applied: npt.NDArray[np.bool_],
    stale: npt.NDArray[np.bool_],
    out: list[Outcome],
) -> npt.NDArray[np.intp]:
    """The pairs that fire: matched, on a fresh applied signal, by the rule's trigger; the
    matched pairs that do not fire are noted as silent on their outcomes."""
    keys = rs.fence_keys
    trigger = np.asarray([_TRIGGER_CODE[r.trigger] for r in rs.rules], dtype=np.int8)
    trig = trigger[rs.fence_rule[ev.fence]]
    fresh = ev.matched & applied[ev.sig] & ~stale[ev.sig]
    silent = np.flatnonzero(
        (fresh & (trig == 0) & ~pres.entered) | (ev.matched & applied[ev.sig] & stale[ev.sig])
    )
    for i, f in zip(ev.sig[silent].tolist(), ev.fence[silent].tolist(), strict=True):
        key = keys[f]
        out[i].silent.append(key if key is not None else (rs.rules[rs.fence_rule[f]].id, ""))
    fires = np.where(trig == 0, pres.entered, np.where(trig == 1, pres.dwell_fires, True))
    fires &= fresh
    return np.flatnonzero(fires)


def _fire_signals(
    rs: Ruleset,
    ev: Evaluation,
    pres: BatchPresence,
    firing: npt.NDArray[np.intp],
    ordered: list[Signal],
    profiles: Mapping[str, Profile],
    subs: list[SubscriberState],
    sub: npt.NDArray[np.intp],
    out: list[Outcome],
    posteriors: Posteriors | None = None,
) -> None:
    """Decide, per signal with firing pairs, the push it makes or why it makes none."""
    drawn = None
    if posteriors is not None and adaptive_rules(rs):
        drawn = draw_variants(rs, rs.fence_rule[ev.fence[firing]], posteriors)
    matches = ev.matches(firing, drawn)
    fsig = ev.sig[firing]
    bounds = [0, *(np.flatnonzero(np.diff(fsig)) + 1).tolist(), len(firing)]
    keep = history_window(rs)
    fsig_l = fsig.tolist()
    fsub = sub[fsig].tolist()
    for a, b in itertools.pairwise(bounds):
        i = fsig_l[a]
        sid = ordered[i].subscription_id
        profile = profiles.get(sid) or Profile(id=sid)
        _fire(rs, ev, pres, matches[a:b], out[i], profile, subs[fsub[a]], keep)


_BY_SUBSCRIPTION_AND_TIME = operator.attrgetter("subscription_id", "at")
_TRIGGER_CODE: dict[str, int] = {"enter": 0, "dwell": 1, "inside": 2, "signal": 3}
_US = timedelta(microseconds=1)


def _sessions(
    sub: npt.NDArray[np.intp],
    us: npt.NDArray[np.int64],
    applied: npt.NDArray[np.bool_],
    before: list[datetime | None],
    timeout_us: int,
) -> tuple[npt.NDArray[np.intp], list[tuple[int, bool]]]:
    """Each signal's session: a new one begins at a subscriber's first signal and at each
    applied signal more than ``timeout_us`` after the subscriber's applied signal before it
    (``before``: the last one of an earlier batch). Returns the session code of each signal
    and, per session in code order, (its subscriber, whether it carries the subscriber's
    presence in: the first session, unless a gap opens it)."""
    n = len(sub)
    order = np.argsort(sub, kind="stable")  # processing order within each subscriber
    grouped = sub[order]
    new_sub = np.ones(n, dtype=bool)
    np.not_equal(grouped[1:], grouped[:-1], out=new_sub[1:])
    # The previous applied time within the subscriber, else its last before the batch.
    last_before = np.asarray(
        [-1 if t is None else microseconds(t) for t in before], dtype=np.int64
    ).reshape(len(before))
    app = applied[order]
    t = us[order]
    idx = np.where(app, np.arange(n), -1)
    group_floor = np.maximum.accumulate(np.where(new_sub, np.arange(n), 0)) - 1
    prev_idx = np.empty(n, dtype=np.intp)
    if n:
        prev_idx[0] = -1
        prev_idx[1:] = np.maximum.accumulate(idx)[:-1]
    within = prev_idx > group_floor  # an applied signal of the same subscriber came before
    prev_t = np.where(within, t[np.maximum(prev_idx, 0)], last_before[grouped])
    gap = app & (prev_t >= 0) & (t - prev_t > timeout_us)
    starts = new_sub | gap
    code_sorted = np.cumsum(starts) - 1
    session = np.empty(n, dtype=np.intp)
    session[order] = code_sorted
    heads = np.flatnonzero(starts)
    carries = [
        (c, first and not g)
        for c, first, g in zip(
            grouped[heads].tolist(), new_sub[heads].tolist(), gap[heads].tolist(), strict=True
        )
    ]
    return session, carries


def _applied(
    sub: npt.NDArray[np.intp], us: npt.NDArray[np.int64], last: list[datetime | None]
) -> npt.NDArray[np.bool_]:
    """A signal applies unless it is older than its subscriber's last applied one (before the
    batch or earlier in it): a running maximum per subscriber, on ranks of the times so that
    one pass over the signals grouped by subscriber does it."""
    n = len(sub)
    carried = [(c, microseconds(t)) for c, t in enumerate(last) if t is not None]
    known = [c for c, _ in carried]
    times = np.concatenate((us, np.asarray([t for _, t in carried], dtype=np.int64)))
    _, rank = np.unique(times, return_inverse=True)
    rank = rank.reshape(-1).astype(np.int64)
    floor = np.full(len(last), -1, dtype=np.int64)
    floor[known] = rank[n:]
    order = np.argsort(sub, kind="stable")
    grouped = sub[order].astype(np.int64) * (len(times) + 1) + rank[order]
    ok = (grouped == np.maximum.accumulate(grouped)) & (rank[order] >= floor[sub[order]])
    applied = np.empty(n, dtype=bool)
    applied[order] = ok
    return applied


def _fire(
    rs: Ruleset,
    ev: Evaluation,
    pres: BatchPresence,
    candidates: list[Match],
    outcome: Outcome,
    profile: Profile,
    state: SubscriberState,
    keep: timedelta,
) -> None:
    """Caps, gaps and quiet hours over one signal's firing pairs, best first: at most one
    decision, the suppressions before it, the shadow rules that would have sent."""
    sig = outcome.signal
    outcome.fired = candidates
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
    quiet = ev.quiet
    for m in candidates:
        shadow = m.rule.model.mode == "shadow"
        history = state.history
        if shadow:
            # As if it alone were live: the live sends and its own would-be sends count.
            history = history + [h for h in state.shadow_history if h.rule_id == m.rule.id]
        # Quiet hours in the local time of the match: a place's, or the subscriber's.
        reason = _suppressed(rs, m, sig.at, profile, history, bool(quiet[m.pair]))
        if reason is not None:
            outcome.suppressed.append(Suppression(m.rule.id, m.place_id, reason))
            continue
        if shadow:
            # Would have sent: counted, never sent, kept out of the live caps' history; a
            # live rule ranked below may still send for this signal.
            outcome.shadow.append(m)
            state.shadow_history.append(Sent(m.rule.id, m.place_id, sig.at))
            continue
        visit = pres.entered_at(m.pair) if m.rule.trigger in ("enter", "dwell") else None
        outcome.decision = _render(m, sig, profile, visit)
        state.history.append(Sent(m.rule.id, m.place_id, sig.at))
        break


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
    if (
        profile.resting_until is not None
        and rs.policy.fatigue is not None
        and is_resting(profile.resting_since, profile.resting_until, at)
    ):
        return FATIGUED
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


def _render(m: Match, sig: Signal, profile: Profile, visit: datetime | None) -> Decision:
    rule = m.rule
    variant = chosen_variant(sig.subscription_id, m)
    payload = render_payload(m, variant, profile, sig.context)
    msg = rule.model.message
    ttl = msg.ttl.total_seconds()
    if m.ttl_left_s is not None:
        ttl = min(ttl, m.ttl_left_s)
    if visit is not None:  # enter and dwell: once per visit, named by the time it began
        key = f"{sig.subscription_id}:{rule.id}:{m.place_id}:{int(visit.timestamp())}"
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
    for root, name in message.fields:
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
