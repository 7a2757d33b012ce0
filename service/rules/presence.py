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
    microseconds, ``at`` its time."""
    n_subs = len(carried)
    n_pairs = len(ev.sig)
    located = ~np.isnan(ev.batch.lat)
    # The fixes that move presence, each subscriber's in processing order, one after another.
    fixes = np.flatnonzero(applied & located)
    seq = fixes[np.argsort(sub[fixes], kind="stable")]
    rank = np.full(len(applied), -1, dtype=np.intp)
    rank[seq] = np.arange(len(seq))
    codes = np.arange(n_subs)
    seq_sub = sub[seq]
    first_fix = np.searchsorted(seq_sub, codes)
    end_fix = np.searchsorted(seq_sub, codes, side="right")
    moved = end_fix > first_fix

    # Events: the visits carried in (by subscribers with a fix) and the pairs of placed fences.
    c_sub: list[int] = []
    c_fence: list[int] = []
    c_us: list[int] = []
    c_fired: list[bool] = []
    c_obj: list[Presence] = []
    touched = [c for c in np.flatnonzero(moved).tolist() if carried[c]]
    for c in touched:
        for key, pres in carried[c].items():
            f = rs.fence_by_ids.get(key)
            if f is None:
                continue  # rule or place gone after a reload: dropped
            c_sub.append(c)
            c_fence.append(f)
            c_us.append(microseconds(pres.entered_at))
            c_fired.append(pres.dwell_fired)
            c_obj.append(pres)
    n_c = len(c_obj)
    pair_rows = np.flatnonzero((rs.fence_place[ev.fence] >= 0) & applied[ev.sig])
    n_fences = np.int64(len(rs.fence_rule))
    c_sub_a = np.asarray(c_sub, dtype=np.intp)
    entity = np.concatenate(
        (
            c_sub_a.astype(np.int64) * n_fences + np.asarray(c_fence, dtype=np.int64),
            sub[ev.sig[pair_rows]].astype(np.int64) * n_fences + ev.fence[pair_rows],
        )
    )
    # A carried-in visit sits just before its subscriber's first fix.
    pos = np.concatenate((first_fix[c_sub_a] - 1, rank[ev.sig[pair_rows]]))
    src = np.concatenate((-1 - np.arange(n_c, dtype=np.intp), pair_rows))
    order = np.lexsort((pos, entity))
    entity, pos, src = entity[order], pos[order], src[order]
    m = len(order)
    row = np.arange(m, dtype=np.intp)
    is_pair = src >= 0
    pr = np.flatnonzero(is_pair)  # rows of pairs
    cr = np.flatnonzero(~is_pair)  # rows of carried-in visits
    k = src[pr]  # their pairs
    carried_j = -1 - src[cr]
    fence = (entity % n_fences).astype(np.intp)
    esub = (entity // n_fences).astype(np.intp)
    first = np.ones(m, dtype=bool)
    np.not_equal(entity[1:], entity[:-1], out=first[1:])
    last = np.ones(m, dtype=bool)
    last[:-1] = first[1:]
    floor = np.maximum.accumulate(np.where(first, row, 0)) - 1  # each entity's row before
    sets = np.ones(m, dtype=bool)
    sets[pr] = (ev.inside & ev.accurate)[k]

    # The fence is left in the gap before each event after an entity's first, and after its
    # last event, at the first fix there precise enough for its gate.
    gate = rs.fence_gate[fence]
    acc = ev.batch.accuracy[seq]
    gap_rows = np.flatnonzero(~first)
    gap_left = _first_precise(acc, pos[gap_rows - 1], pos[gap_rows], gate[gap_rows])
    clear = np.zeros(m, dtype=bool)
    clear[gap_rows] = gap_left >= 0
    tail_rows = np.flatnonzero(last)
    tail_left = _first_precise(acc, pos[tail_rows], end_fix[esub[tail_rows]], gate[tail_rows])

    # Inside after an event: an entry (or the carried-in visit) since the last leave.
    last_set = np.maximum.accumulate(np.where(sets, row, floor))
    last_clear = np.maximum.accumulate(np.where(clear, row, floor))
    inside_after = (last_set > floor) & (last_set >= last_clear)
    inside_before = np.zeros(m, dtype=bool)
    inside_before[gap_rows] = inside_after[gap_rows - 1] & ~clear[gap_rows]
    enters = sets & is_pair & ~inside_before
    visit = np.maximum.accumulate(np.where(enters | ~is_pair, row, floor))
    # Dict order of a subscriber's entries: the carried-in ones as they came, then by entry.
    stamp = src.copy()
    stamp[cr] = carried_j - n_c

    # Dwell: the first fresh matched fix of a visit at least the dwell after its start.
    rule = rs.fence_rule[fence]
    is_dwell = np.asarray([r.trigger == "dwell" for r in rs.rules], dtype=bool)
    dwell_s = np.asarray([r.dwell_s for r in rs.rules], dtype=np.float64)
    start_us = np.zeros(m, dtype=np.int64)
    start_us[pr] = us[ev.sig[k]]
    start_us[cr] = np.asarray(c_us, dtype=np.int64)[carried_j]
    fired_before = np.zeros(m, dtype=bool)
    fired_before[cr] = np.asarray(c_fired, dtype=bool)[carried_j]
    ready = pr[is_dwell[rule[pr]] & ev.matched[k] & ~stale[ev.sig[k]]]
    elapsed = (us[ev.sig[src[ready]]] - start_us[visit[ready]]).astype(np.float64) / 1e6
    ready = ready[elapsed >= dwell_s[rule[ready]]]
    v = visit[ready]
    first_ready = np.ones(len(v), dtype=bool)
    np.not_equal(v[1:], v[:-1], out=first_ready[1:])
    fire_rows = ready[first_ready & ~fired_before[v]]
    visit_fired = fired_before.copy()
    visit_fired[visit[fire_rows]] = True
    for r in visit[fire_rows].tolist():
        if not is_pair[r]:
            c_obj[-1 - int(src[r])].dwell_fired = True  # on the carried entry itself

    entered = np.zeros(n_pairs, dtype=bool)
    entered[src[enters]] = True
    dwell_fires = np.zeros(n_pairs, dtype=bool)
    dwell_fires[src[fire_rows]] = True
    visit_row = np.full(n_pairs, -1, dtype=np.intp)
    visit_row[k] = visit[pr]

    # Leaves: in a gap after an event the subscriber was inside after, or after the last.
    g_sel = (gap_left >= 0) & inside_after[gap_rows - 1]
    t_sel = (tail_left >= 0) & inside_after[tail_rows]
    leave_fix = np.concatenate((seq[gap_left[g_sel]], seq[tail_left[t_sel]]))
    leave_row = np.concatenate((gap_rows[g_sel] - 1, tail_rows[t_sel]))
    lo = np.lexsort((stamp[visit[leave_row]], leave_fix))
    # Events are of fences with a place, whose keys are never None.
    keys = cast(list[tuple[str, str]], rs.fence_keys)
    left = [
        (i, keys[f])
        for i, f in zip(leave_fix[lo].tolist(), fence[leave_row[lo]].tolist(), strict=True)
    ]

    # What each subscriber with a fix keeps: the visits still on after their entity's last
    # event, in dict order.
    stays = tail_rows[(tail_left < 0) & inside_after[tail_rows]]
    vrow = visit[stays]
    so = np.lexsort((stamp[vrow], esub[stays]))
    for c in touched:  # the others came in with no presence
        carried[c].clear()
    vrow = vrow[so]
    began = src[vrow]  # the pair that began each visit kept, or -1 - j when carried in
    fix_of = np.full(len(began), -1, dtype=np.intp)
    fix_of[began >= 0] = ev.sig[began[began >= 0]]
    for c, f, b, i, fired in zip(
        esub[stays[so]].tolist(),
        fence[stays[so]].tolist(),
        began.tolist(),
        fix_of.tolist(),
        visit_fired[vrow].tolist(),
        strict=True,
    ):
        carried[c][keys[f]] = c_obj[-1 - b] if b < 0 else Presence(at[i], fired)
    return BatchPresence(entered, dwell_fires, left, visit_row, src, c_obj, at, ev.sig)


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
