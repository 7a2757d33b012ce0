"""Presence over a whole batch: which fixes enter and leave which fences and where a dwell
fires, worked out per (subscriber, fence) for all the batch's pairs at once.

The rules, as for one fix after another of a subscriber (only applied fixes with a location
count; a context signal says nothing about where the subscriber is):
- a fix within a fence's radius whose accuracy passes the fence's gate enters it, unless the
  subscriber is already inside (a visit goes on);
- a fix not within the fence's reach (radius + hysteresis) leaves it, unless the fix is too
  imprecise for the fence's gate; a fix in the hysteresis band or too imprecise changes
  nothing;
- an entry whose rule or place is gone after a reload is dropped on the subscriber's first
  fix, silently;
- a dwell fires on the first fresh matched fix of a visit at least the rule's dwell after
  the visit began, once per visit.

Per (subscriber, fence) the *events* are the fixes within its reach (the batch's pairs) and,
for a subscriber already inside, the visit carried in. Between two events the fence is left
at the first fix precise enough for its gate, if there is one; so the state after each event
is a running maximum (the last entry after the last leave), not a loop over fixes.

`batch_presence` runs it in named stages, each numpy over the whole batch: the order of the
fixes, the events (with the visits carried in), the gaps and where they leave, the visits,
the dwell, the leaves and the carry-out. Presence expiry (policy presence_timeout) is cut
before it: the engine splits each subscriber's signals into sessions (`engine._sessions`).

The executable specification is `service.rules.reference`: the same rules stated one fix
after another, slow on purpose; tests/rules/test_engine_equivalence.py holds the two equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
import numpy.typing as npt

from .core import Evaluation
from .places import FloatArray, IntArray
from .ruleset import Ruleset

Mask = npt.NDArray[np.bool_]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(slots=True)
class Presence:
    entered_at: datetime
    dwell_fired: bool = False


def microseconds(at: datetime) -> int:
    """An aware instant as whole microseconds since the epoch: exact, unlike a float."""
    return (at - _EPOCH) // _US


def microseconds_of(times: Sequence[datetime]) -> npt.NDArray[np.int64]:
    """`microseconds` of each of ``times`` (inlined: one call a signal adds up)."""
    return np.asarray([(t - _EPOCH) // _US for t in times], dtype=np.int64).reshape(len(times))


@dataclass
class BatchPresence:
    """What presence did over one batch, per pair of its Evaluation and per fix."""

    entered: Mask  # per pair: its fix entered the fence
    dwell_fires: Mask  # per pair: its (fresh, matched) fix fires the fence's dwell
    left: list[tuple[int, tuple[str, str]]]  # (fix, key), per fix in the subscriber's key order
    _visit_row: IntArray  # per pair: its visit's first event row, -1 when none
    _row_src: IntArray  # per event row: its pair, or -1 - j for carried-in visit j
    _carried: list[Presence]
    _at: Sequence[datetime]
    _pair_sig: IntArray

    def entered_at(self, k: int) -> datetime:
        """When the visit that pair ``k``'s fix is part of began."""
        src = int(self._row_src[int(self._visit_row[k])])
        if src < 0:
            return self._carried[-1 - src].entered_at
        return self._at[int(self._pair_sig[src])]


def batch_presence(
    rs: Ruleset,
    ev: Evaluation,
    sub: IntArray,
    applied: Mask,
    stale: Mask,
    us: npt.NDArray[np.int64],
    at: Sequence[datetime],
    carried: Sequence[dict[tuple[str, str], Presence]],
) -> BatchPresence:
    """``sub`` is each fix's subscriber code (an index into ``carried``, the presence each
    subscriber comes in with, updated in place to what it leaves with), ``us`` its time in
    microseconds, ``at`` its time. The stages below run one after another, each numpy over
    the whole batch."""
    n_pairs = len(ev.sig)
    order = _order_fixes(ev, sub, applied, len(carried))
    carried_in = _carried_in(rs, carried, order)
    events = _events(rs, ev, sub, applied, order, carried_in)
    gaps = _gaps(rs, ev, order, events)
    visits = _visits(events, gaps, len(carried_in.entries))
    fire_rows, visit_fired = _dwell(rs, ev, stale, us, events, visits, carried_in)
    left = _leaves(rs, order, events, gaps, visits)
    _carry_out(rs, ev, at, carried, carried_in, events, gaps, visits, visit_fired)

    entered = np.zeros(n_pairs, dtype=bool)
    entered[events.source[visits.enters]] = True
    dwell_fires = np.zeros(n_pairs, dtype=bool)
    dwell_fires[events.source[fire_rows]] = True
    visit_row = np.full(n_pairs, -1, dtype=np.intp)
    visit_row[events.pairs] = visits.visit[events.pair_rows]
    return BatchPresence(
        entered, dwell_fires, left, visit_row, events.source, carried_in.entries, at, ev.sig
    )


@dataclass(slots=True)
class _FixOrder:
    """The fixes that move presence (applied, with a location), each subscriber's in
    processing order, one subscriber after another; a fix's place in it is its rank."""

    fixes: IntArray  # per rank: the fix's signal
    rank: IntArray  # per signal: its rank, -1 when it moves no presence
    first_fix: IntArray  # per subscriber: the rank of its first fix
    end_fix: IntArray  # per subscriber: one past the rank of its last fix


def _order_fixes(ev: Evaluation, sub: IntArray, applied: Mask, n_subs: int) -> _FixOrder:
    """Stage 1, the order: only applied fixes with a location move presence (a context
    signal says nothing about where the subscriber is)."""
    located = ~np.isnan(ev.batch.lat)
    moving = np.flatnonzero(applied & located)
    fixes = moving[np.argsort(sub[moving], kind="stable")]
    rank = np.full(len(applied), -1, dtype=np.intp)
    rank[fixes] = np.arange(len(fixes))
    codes = np.arange(n_subs)
    fix_subscriber = sub[fixes]
    first_fix = np.searchsorted(fix_subscriber, codes)
    end_fix = np.searchsorted(fix_subscriber, codes, side="right")
    return _FixOrder(fixes, rank, first_fix, end_fix)


@dataclass(slots=True)
class _CarriedIn:
    """The visits carried in by subscribers with a fix in the batch, in the order they came;
    visit ``j`` is event source ``-1 - j``."""

    touched: list[int]  # the subscribers with a fix that came in with some presence
    subscriber: IntArray
    fence: list[int]
    entered_us: list[int]
    dwell_fired: list[bool]
    entries: list[Presence]  # the carried entries themselves, kept when the visit goes on


def _carried_in(
    rs: Ruleset, carried: Sequence[dict[tuple[str, str], Presence]], order: _FixOrder
) -> _CarriedIn:
    """Stage 2a, the visits carried in: Python per carried entry of a subscriber with a fix.
    An entry whose rule or place is gone after a reload is dropped here, silently."""
    moved = order.end_fix > order.first_fix
    touched = [c for c in np.flatnonzero(moved).tolist() if carried[c]]
    subscribers: list[int] = []
    fences: list[int] = []
    entered_us: list[int] = []
    dwell_fired: list[bool] = []
    entries: list[Presence] = []
    for c in touched:
        for key, presence in carried[c].items():
            fence = rs.fence_by_ids.get(key)
            if fence is None:
                continue  # rule or place gone after a reload: dropped
            subscribers.append(c)
            fences.append(fence)
            entered_us.append(microseconds(presence.entered_at))
            dwell_fired.append(presence.dwell_fired)
            entries.append(presence)
    subscriber = np.asarray(subscribers, dtype=np.intp)
    return _CarriedIn(touched, subscriber, fences, entered_us, dwell_fired, entries)


@dataclass(slots=True)
class _Events:
    """The events, one row each, sorted by entity (subscriber, fence), then by rank: the
    pairs of fences with a place, and the visits carried in, each just before its
    subscriber's first fix."""

    entity: npt.NDArray[np.int64]  # subscriber * number of fences + fence
    position: IntArray  # the event's rank (a carried-in visit: its first fix's, minus one)
    source: IntArray  # the event's pair, or -1 - j for carried-in visit j
    fence: IntArray
    subscriber: IntArray
    is_pair: Mask
    pair_rows: IntArray  # the rows of pairs
    pairs: IntArray  # their pairs
    carried_rows: IntArray  # the rows of carried-in visits
    carried_index: IntArray  # their visits' index in _CarriedIn
    first: Mask  # the entity's first row
    last: Mask  # the entity's last row
    floor: IntArray  # the row just before the entity's first
    sets: Mask  # the row puts the subscriber inside: an entering fix or a carried-in visit


def _events(
    rs: Ruleset,
    ev: Evaluation,
    sub: IntArray,
    applied: Mask,
    order: _FixOrder,
    carried_in: _CarriedIn,
) -> _Events:
    """Stage 2, the events: per (subscriber, fence) the fixes within its reach (the batch's
    pairs) and, for a subscriber already inside, the visit carried in. Only these can enter a
    fence; the fixes between them can only leave it."""
    n_carried = len(carried_in.entries)
    placed_pairs = np.flatnonzero((rs.fence_place[ev.fence] >= 0) & applied[ev.sig])
    n_fences = np.int64(len(rs.fence_rule))
    entity = np.concatenate(
        (
            carried_in.subscriber.astype(np.int64) * n_fences
            + np.asarray(carried_in.fence, dtype=np.int64),
            sub[ev.sig[placed_pairs]].astype(np.int64) * n_fences + ev.fence[placed_pairs],
        )
    )
    position = np.concatenate(
        (order.first_fix[carried_in.subscriber] - 1, order.rank[ev.sig[placed_pairs]])
    )
    source = np.concatenate((-1 - np.arange(n_carried, dtype=np.intp), placed_pairs))
    by_entity = np.lexsort((position, entity))
    entity, position, source = entity[by_entity], position[by_entity], source[by_entity]
    n_rows = len(by_entity)
    row = np.arange(n_rows, dtype=np.intp)
    is_pair = source >= 0
    pair_rows = np.flatnonzero(is_pair)
    carried_rows = np.flatnonzero(~is_pair)
    pairs = source[pair_rows]
    first = np.ones(n_rows, dtype=bool)
    np.not_equal(entity[1:], entity[:-1], out=first[1:])
    last = np.ones(n_rows, dtype=bool)
    last[:-1] = first[1:]
    sets = np.ones(n_rows, dtype=bool)
    sets[pair_rows] = (ev.inside & ev.accurate)[pairs]
    return _Events(
        entity=entity,
        position=position,
        source=source,
        fence=(entity % n_fences).astype(np.intp),
        subscriber=(entity // n_fences).astype(np.intp),
        is_pair=is_pair,
        pair_rows=pair_rows,
        pairs=pairs,
        carried_rows=carried_rows,
        carried_index=-1 - source[carried_rows],
        first=first,
        last=last,
        floor=np.maximum.accumulate(np.where(first, row, 0)) - 1,
        sets=sets,
    )


@dataclass(slots=True)
class _Gaps:
    """Where each entity's fence would be left: in the gap before each of its events after
    the first, and in the tail after its last event."""

    gap_rows: IntArray  # the rows after their entity's first: each has a gap before it
    gap_leave: IntArray  # per gap row: the rank of the fix that leaves in it, -1 when none
    clears: Mask  # per row: the fence is left in the gap before it
    tail_rows: IntArray  # each entity's last row
    tail_leave: IntArray  # per tail row: the rank of the fix that leaves after it, -1 if none


def _gaps(rs: Ruleset, ev: Evaluation, order: _FixOrder, events: _Events) -> _Gaps:
    """Stage 3, gaps and leaves: between two events (and after the last) every fix of the
    subscriber is out of the fence's reach, so the fence is left at the first of them
    precise enough for its gate, if there is one."""
    gate = rs.fence_gate[events.fence]
    accuracy = ev.batch.accuracy[order.fixes]
    position = events.position
    gap_rows = np.flatnonzero(~events.first)
    gap_leave = _first_precise(accuracy, position[gap_rows - 1], position[gap_rows], gate[gap_rows])
    clears = np.zeros(len(position), dtype=bool)
    clears[gap_rows] = gap_leave >= 0
    tail_rows = np.flatnonzero(events.last)
    tail_end = order.end_fix[events.subscriber[tail_rows]]
    tail_leave = _first_precise(accuracy, position[tail_rows], tail_end, gate[tail_rows])
    return _Gaps(gap_rows, gap_leave, clears, tail_rows, tail_leave)


@dataclass(slots=True)
class _Visits:
    """The state after each event and the visit it is part of."""

    inside_after: Mask  # per row: the subscriber is inside the fence after the event
    enters: Mask  # per row: the event's fix enters the fence
    visit: IntArray  # per row: the first row of the visit it is part of (when inside)
    stamp: IntArray  # per row: where its visit sits in the subscriber's presence dict


def _visits(events: _Events, gaps: _Gaps, n_carried: int) -> _Visits:
    """Stage 4, visits: inside after an event means an entry (or the visit carried in) since
    the last leave, so the state is a running maximum per entity, not a loop over fixes. A
    fix within the radius and precise enough enters unless the subscriber is already inside
    (a visit goes on)."""
    row = np.arange(len(events.source), dtype=np.intp)
    floor = events.floor
    last_set = np.maximum.accumulate(np.where(events.sets, row, floor))
    last_clear = np.maximum.accumulate(np.where(gaps.clears, row, floor))
    inside_after = (last_set > floor) & (last_set >= last_clear)
    gap_rows = gaps.gap_rows
    inside_before = np.zeros(len(row), dtype=bool)
    inside_before[gap_rows] = inside_after[gap_rows - 1] & ~gaps.clears[gap_rows]
    enters = events.sets & events.is_pair & ~inside_before
    visit = np.maximum.accumulate(np.where(enters | ~events.is_pair, row, floor))
    # Dict order of a subscriber's entries: the carried-in ones as they came, then by entry.
    stamp = events.source.copy()
    stamp[events.carried_rows] = events.carried_index - n_carried
    return _Visits(inside_after, enters, visit, stamp)


def _dwell(
    rs: Ruleset,
    ev: Evaluation,
    stale: Mask,
    us: npt.NDArray[np.int64],
    events: _Events,
    visits: _Visits,
    carried_in: _CarriedIn,
) -> tuple[IntArray, Mask]:
    """Stage 5, dwell: a dwell fires on the first fresh matched fix of a visit at least the
    rule's dwell after the visit began, once per visit. Returns the rows that fire and, per
    row, whether its visit has fired (before the batch or in it); a carried-in entry whose
    visit fires is marked on the entry itself."""
    n_rows = len(events.source)
    pair_rows, pairs = events.pair_rows, events.pairs
    carried_rows, carried_index = events.carried_rows, events.carried_index
    visit = visits.visit
    rule = rs.fence_rule[events.fence]
    is_dwell = np.asarray([r.trigger == "dwell" for r in rs.rules], dtype=bool)
    dwell_s = np.asarray([r.dwell_s for r in rs.rules], dtype=np.float64)
    start_us = np.zeros(n_rows, dtype=np.int64)
    start_us[pair_rows] = us[ev.sig[pairs]]
    start_us[carried_rows] = np.asarray(carried_in.entered_us, dtype=np.int64)[carried_index]
    fired_before = np.zeros(n_rows, dtype=bool)
    fired_before[carried_rows] = np.asarray(carried_in.dwell_fired, dtype=bool)[carried_index]
    ready = pair_rows[is_dwell[rule[pair_rows]] & ev.matched[pairs] & ~stale[ev.sig[pairs]]]
    elapsed_us = us[ev.sig[events.source[ready]]] - start_us[visit[ready]]
    ready = ready[elapsed_us.astype(np.float64) / 1e6 >= dwell_s[rule[ready]]]
    ready_visit = visit[ready]
    first_ready = np.ones(len(ready_visit), dtype=bool)
    np.not_equal(ready_visit[1:], ready_visit[:-1], out=first_ready[1:])
    fire_rows = ready[first_ready & ~fired_before[ready_visit]]
    visit_fired = fired_before.copy()
    visit_fired[visit[fire_rows]] = True
    for r in visit[fire_rows].tolist():
        if not events.is_pair[r]:
            carried_in.entries[-1 - int(events.source[r])].dwell_fired = True
    return fire_rows, visit_fired


def _leaves(
    rs: Ruleset, order: _FixOrder, events: _Events, gaps: _Gaps, visits: _Visits
) -> list[tuple[int, tuple[str, str]]]:
    """Stage 6, the leaves: a gap's leaving fix leaves if the subscriber was inside after
    the event before it. Returns (fix, key) per fix, in the subscriber's dict order."""
    inside_after = visits.inside_after
    gap_rows, tail_rows = gaps.gap_rows, gaps.tail_rows
    in_gap = (gaps.gap_leave >= 0) & inside_after[gap_rows - 1]
    in_tail = (gaps.tail_leave >= 0) & inside_after[tail_rows]
    leave_fix = np.concatenate(
        (order.fixes[gaps.gap_leave[in_gap]], order.fixes[gaps.tail_leave[in_tail]])
    )
    leave_row = np.concatenate((gap_rows[in_gap] - 1, tail_rows[in_tail]))
    by_fix = np.lexsort((visits.stamp[visits.visit[leave_row]], leave_fix))
    keys = _placed_keys(rs)
    return [
        (i, keys[f])
        for i, f in zip(
            leave_fix[by_fix].tolist(), events.fence[leave_row[by_fix]].tolist(), strict=True
        )
    ]


def _carry_out(
    rs: Ruleset,
    ev: Evaluation,
    at: Sequence[datetime],
    carried: Sequence[dict[tuple[str, str], Presence]],
    carried_in: _CarriedIn,
    events: _Events,
    gaps: _Gaps,
    visits: _Visits,
    visit_fired: Mask,
) -> None:
    """Stage 7, carry-out: each subscriber with a fix keeps the visits still on after its
    entities' last events, in dict order; a visit that was carried in keeps its entry. The
    subscribers without a fix keep what they came with."""
    tail_rows = gaps.tail_rows
    stays = tail_rows[(gaps.tail_leave < 0) & visits.inside_after[tail_rows]]
    stay_visit = visits.visit[stays]
    in_dict_order = np.lexsort((visits.stamp[stay_visit], events.subscriber[stays]))
    for c in carried_in.touched:  # the others came in with no presence
        carried[c].clear()
    stay_visit = stay_visit[in_dict_order]
    began = events.source[stay_visit]  # the pair that began each visit, or -1 - j
    fix_of = np.full(len(began), -1, dtype=np.intp)
    fix_of[began >= 0] = ev.sig[began[began >= 0]]
    keys = _placed_keys(rs)
    for c, f, b, i, fired in zip(
        events.subscriber[stays[in_dict_order]].tolist(),
        events.fence[stays[in_dict_order]].tolist(),
        began.tolist(),
        fix_of.tolist(),
        visit_fired[stay_visit].tolist(),
        strict=True,
    ):
        carried[c][keys[f]] = carried_in.entries[-1 - b] if b < 0 else Presence(at[i], fired)


def _placed_keys(rs: Ruleset) -> list[tuple[str, str]]:
    """The fences' keys; events are of fences with a place, whose keys are never None."""
    return cast(list[tuple[str, str]], rs.fence_keys)


def _first_precise(
    acc: FloatArray, after: IntArray, before: IntArray, gate: FloatArray
) -> IntArray:
    """Per query the first fix strictly between ranks ``after`` and ``before`` whose accuracy
    passes ``gate`` (unknown accuracy passes), -1 when none does. Usually the very next fix
    does; the others are walked on from there."""
    nxt = after + 1
    out = np.full(len(after), -1, dtype=np.intp)
    has = nxt < before
    if not len(acc):
        return out
    probe = acc[np.minimum(nxt, len(acc) - 1)]
    ok = has & ~(probe > gate)
    out[ok] = nxt[ok]
    rest = np.flatnonzero(has & ~ok)
    if len(rest):
        accs = acc.tolist()
        for q, a, b, g in zip(
            rest.tolist(),
            nxt[rest].tolist(),
            before[rest].tolist(),
            gate[rest].tolist(),
            strict=True,
        ):
            for r in range(a + 1, b):
                if not accs[r] > g:
                    out[q] = r
                    break
    return out
