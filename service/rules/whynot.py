"""Why a rule did not match: per signal for `rules replay`, counted over a whole batch for the
worker's `not_matched` counters and the backtest.

Only rules *within reach* of a signal are named: a rule with a place within its radius plus
the policy's hysteresis of the fix, and every location-free rule. For each such rule that did
not match, the reason is the first failed condition of its best pair (`Evaluation.reasons`):
a condition reason (`daypart`, `topics`, `attributes.tier`, `context.weather`, ...),
`accuracy` (the fix is too imprecise for the place), or `no_place` (within reach, but outside
the radius). Pure, like the rest of the core.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .core import ACCURACY, NO_PLACE, Evaluation

__all__ = ["not_matched_counts", "why_not"]


def why_not(ev: Evaluation, i: int, *, places_only: bool = False) -> dict[str, str]:
    """The rules within reach of signal ``i`` that did not match it, each with its reason,
    in rule order; ``places_only`` leaves out the location-free rules (every signal is within
    their reach, so a trace of positions would name them on every line)."""
    rs = ev.ruleset
    pairs = ev.pair_range(i)
    if not len(pairs):
        return {}
    near = {int(r) for r in rs.fence_rule[ev.fence[pairs.start : pairs.stop]]}
    reasons = ev.reasons(i)
    out: dict[str, str] = {}
    for rule in rs.rules:
        if rule.index in near and not (places_only and rule.location_free):
            reason = reasons[rule.id]
            if reason is not None:
                out[rule.id] = reason
    return out


def not_matched_counts(ev: Evaluation) -> Counter[tuple[str, str]]:
    """Per (rule id, reason): how many signals of the batch had that rule within reach and did
    not match it - the sum of :func:`why_not` over every signal, computed with one sort of the
    pairs instead of a loop.

    Each pair gets a rank (0 matched, 1 accuracy, 1 + c for condition code c, the highest for
    outside the radius); the lowest rank of each (signal, rule) is its verdict."""
    out: Counter[tuple[str, str]] = Counter()
    n = len(ev.sig)
    if n == 0:
        return out
    rs = ev.ruleset
    n_rules = len(rs.rules)
    outside = len(rs.reason_names) + 1
    span = outside + 1
    code = ev.code.astype(np.int64)
    rank = np.where(ev.inside, np.where(code > 0, code + 1, 1), outside)
    rank[ev.matched] = 0
    rule = rs.fence_rule[ev.fence].astype(np.int64)
    key = (ev.sig.astype(np.int64) * n_rules + rule) * span + rank
    key.sort()
    group = key // span
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(group[1:], group[:-1], out=first[1:])
    best = key[first]
    verdict = best % span
    failed = verdict > 0
    cell = (best[failed] // span % n_rules) * span + verdict[failed]
    counts = np.bincount(cell, minlength=n_rules * span)
    for c in np.flatnonzero(counts):
        r, v = divmod(int(c), span)
        reason = ACCURACY if v == 1 else NO_PLACE if v == outside else rs.reason_names[v - 1]
        out[(rs.rules[r].id, reason)] = int(counts[c])
    return out
