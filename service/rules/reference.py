"""The executable specification of `engine.decide`: the per-signal engine, one plain Python
step per signal and per pair, as the engine was before it was vectorised.

This is the statement of what enter, leave, dwell and presence_timeout mean (see
`presence` for the rules in words). It is slow on purpose: it is written to be read and to
be obviously right, not to be fast. tests/rules/test_engine_equivalence.py runs random rule
sets and batches through both and requires equal outcomes, states and counters. Nothing in
the service imports it (tests/rules/test_reference.py checks that): the hot path is
`engine.decide` and `presence.batch_presence`.

The per-signal parts the vectorised engine kept as they were (`engine._suppressed` for caps,
gaps and quiet hours, `engine._render` for the decision) are shared, so what is checked is
what the vectorisation changed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import datetime, timedelta

import numpy as np

from .core import Evaluation, Match, collector_paused, evaluate
from .engine import (
    Outcome,
    Presence,
    Sent,
    SubscriberState,
    Suppression,
    _render,
    _suppressed,
    history_window,
)
from .ruleset import Ruleset
from .signals import Profile, Signal, SignalBatch
from .whynot import not_matched_counts

# How often the reference let presence expire (presence_timeout), counted so that the tests'
# generator can show it makes that happen.
EXPIRED: Counter[str] = Counter()


def reference_decide(
    ruleset: Ruleset,
    signals: Sequence[Signal],
    profiles: Mapping[str, Profile],
    states: MutableMapping[str, SubscriberState],
    now: datetime | None = None,
    arrival_order: bool = False,
    not_matched: Counter[tuple[str, str]] | None = None,
) -> list[Outcome]:
    """What `engine.decide` returns for the same arguments, one signal after another."""
    if arrival_order:
        ordered = list(signals)
    else:
        ordered = sorted(signals, key=lambda s: (s.subscription_id, s.at))
    ev = evaluate(ruleset, SignalBatch.build(ordered, profiles))
    keep = history_window(ruleset)
    out: list[Outcome] = []
    with collector_paused():
        for i, sig in enumerate(ordered):
            profile = profiles.get(sig.subscription_id) or Profile(id=sig.subscription_id)
            state = states.get(sig.subscription_id)
            if state is None:
                state = states[sig.subscription_id] = SubscriberState(sig.subscription_id)
            out.append(_apply(ruleset, ev, i, sig, profile, state, now, keep))
        if not_matched is not None:
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
    """One signal: older than the subscriber's last is not applied; a long silence lets
    presence expire; then presence moves, the matched pairs fire by their triggers and the
    first candidate not suppressed is the decision."""
    if state.last_signal_at is not None and sig.at < state.last_signal_at:
        return Outcome(signal=sig, applied=False)
    if (
        state.last_signal_at is not None
        and sig.at - state.last_signal_at > rs.policy.presence_timeout
    ):
        EXPIRED["presence"] += bool(state.presence)
        state.presence.clear()  # not seen for that long: outside every place again, silently
    state.last_signal_at = sig.at
    if now is not None:
        stale = now - sig.at > rs.policy.stale_after
    else:
        stale = sig.received_at is not None and sig.received_at - sig.at > rs.policy.stale_after
    outcome = Outcome(signal=sig, applied=True, stale=stale)
    pairs = ev.pair_range(i)
    if not pairs and not state.presence:
        return outcome
    if pairs:
        outcome.local_offset_s = float(ev.local_offset[pairs.start])
    entered = _move_presence(rs, ev, pairs, sig, state, outcome) if sig.located else set()
    candidates = _firing(ev, pairs, entered, sig, state, stale, outcome)
    outcome.fired = candidates
    if candidates:
        _choose(rs, ev, candidates, sig, profile, state, keep, outcome)
    return outcome


def _move_presence(
    rs: Ruleset,
    ev: Evaluation,
    pairs: range,
    sig: Signal,
    state: SubscriberState,
    outcome: Outcome,
) -> set[int]:
    """Enter and leave for one located fix; returns the pairs whose fences it entered.

    A fix within a fence's radius and precise enough for its gate enters it unless already
    inside. A fence the subscriber is inside of and the fix is not within reach of (no pair)
    is left, unless the fix is too imprecise for its gate; an entry whose rule or place is
    gone after a reload is dropped, silently."""
    entered: set[int] = set()
    seen: set[tuple[str, str]] = set()
    for k in pairs:
        key = rs.fence_keys[int(ev.fence[k])]
        if key is None:
            continue
        seen.add(key)
        if not ev.accurate[k] or not ev.inside[k]:
            continue
        if key not in state.presence:
            state.presence[key] = Presence(entered_at=sig.at)
            entered.add(k)
            outcome.entered.append(key)
    for key in [k for k in state.presence if k not in seen]:
        fence = rs.fence_by_ids.get(key)
        if fence is None:
            del state.presence[key]
            continue
        if sig.accuracy_m is not None and sig.accuracy_m > rs.fence_gate_list[fence]:
            continue
        del state.presence[key]
        outcome.left.append(key)
    return entered


def _firing(
    ev: Evaluation,
    pairs: range,
    entered: set[int],
    sig: Signal,
    state: SubscriberState,
    stale: bool,
    outcome: Outcome,
) -> list[Match]:
    """The matched pairs that fire by their rule's trigger: enter on the entering fix, dwell
    on the first fresh fix at least the dwell into the visit (once per visit), inside and
    signal on every fix. A stale signal fires nothing: its matches are silent."""
    candidates: list[Match] = []
    for k in pairs:
        if not ev.matched[k]:
            continue
        m = _match(ev, k)
        if m.rule.trigger == "enter":
            fires = k in entered
            if not fires and not stale:
                outcome.silent.append((m.rule.id, m.place_id))
        elif m.rule.trigger == "dwell":
            pres = state.presence[(m.rule.id, m.place_id)]
            fires = (
                not pres.dwell_fired
                and (sig.at - pres.entered_at).total_seconds() >= m.rule.dwell_s
            )
            if fires and not stale:
                pres.dwell_fired = True
        else:
            fires = True
        if stale:
            outcome.silent.append((m.rule.id, m.place_id))
        elif fires:
            candidates.append(m)
    return candidates


def _choose(
    rs: Ruleset,
    ev: Evaluation,
    candidates: list[Match],
    sig: Signal,
    profile: Profile,
    state: SubscriberState,
    keep: timedelta,
    outcome: Outcome,
) -> None:
    """The decision: candidates by priority, then nearest, then ids; the first one not
    suppressed (caps, gaps, quiet hours) is sent, a shadow rule's only recorded."""
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
            history = history + [h for h in state.shadow_history if h.rule_id == m.rule.id]
        reason = _suppressed(rs, m, sig.at, profile, history, bool(ev.quiet[m.pair]))
        if reason is not None:
            outcome.suppressed.append(Suppression(m.rule.id, m.place_id, reason))
            continue
        if shadow:
            outcome.shadow.append(m)
            state.shadow_history.append(Sent(m.rule.id, m.place_id, sig.at))
            continue
        visit = (
            state.presence[(m.rule.id, m.place_id)].entered_at
            if m.rule.trigger in ("enter", "dwell")
            else None
        )
        outcome.decision = _render(m, sig, profile, visit)
        state.history.append(Sent(m.rule.id, m.place_id, sig.at))
        break


def _match(ev: Evaluation, k: int) -> Match:
    """Pair ``k`` as a Match, built plainly from the evaluation's arrays."""
    rs = ev.ruleset
    f = int(ev.fence[k])
    p = int(rs.fence_place[f])
    ttl = float(ev.ttl_left[k])
    place = rs.places[p] if p >= 0 else None
    return Match(
        rule=rs.rules[int(rs.fence_rule[f])],
        place=place,
        place_id=place.id if place is not None else "",
        distance_m=float(ev.distance[k]) if place is not None else None,
        ttl_left_s=None if np.isnan(ttl) else ttl,
        pair=k,
    )
