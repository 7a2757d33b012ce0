"""Adaptive rule variants (`allocation: adaptive`): each push's variant drawn by Thompson
sampling over the rule's interactions per sent push of the last 30 days, every variant keeping
at least `min_share` of the pushes.

Pure, like the rest of the engine: the caller reads the counts (the worker: once per batch at
most, see service/worker.py) and passes them in with the numpy Generator the draws come from,
so a test that seeds it gets the same variants every run. The arithmetic is
service/engagement/bayes.py's; this module only maps rules and matches onto it. Without
counts (simulate, replay, backtest, preview) an adaptive rule shows the variant the weights
give (`rule_variant`): deterministic, and what a rule with no history yet starts near.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from service.engagement.bayes import thompson_pick
from service.vocabulary import ADAPTIVE_WINDOW_DAYS

from .ruleset import CompiledRule, CompiledVariant, Ruleset

# How far back the interactions per sent push count (DESIGN: the last 30 days).
WINDOW = timedelta(days=ADAPTIVE_WINDOW_DAYS)


@dataclass(frozen=True)
class Posteriors:
    """What adaptive allocation decides from: per (rule id, variant name) the pushes sent in
    the last 30 days and how many of them got an interaction (missing: none), and the
    Generator of the draws."""

    counts: Mapping[tuple[str, str], tuple[int, int]]  # (sent, interacted)
    rng: np.random.Generator


def adaptive_rules(ruleset: Ruleset) -> list[CompiledRule]:
    """The rules whose variants are drawn: the counts are read for these alone."""
    return [r for r in ruleset.rules if r.model.allocation == "adaptive"]


def arms(rule: CompiledRule) -> list[int]:
    """Indices (in ``rule.variants``) of the variants adaptive allocation draws among: weight 0
    turns a variant off, as it does under fixed allocation."""
    return [i for i, v in enumerate(rule.variants) if v.weight > 0]


def arm_counts(
    rule: CompiledRule, counts: Mapping[tuple[str, str], tuple[int, int]]
) -> tuple[list[int], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The rule's arms and, per arm, (interactions, sent pushes): a variant new to the rule
    file starts at 0 of 0, a variant no longer in it is not drawn."""
    idx = arms(rule)
    sent = np.zeros(len(idx), dtype=np.int64)
    hits = np.zeros(len(idx), dtype=np.int64)
    for j, i in enumerate(idx):
        n, k = counts.get((rule.id, rule.variants[i].name), (0, 0))
        sent[j] = max(n, 0)
        hits[j] = min(max(k, 0), sent[j])  # a rolled-up day estimates; never over its sends
    return idx, hits, sent


def draw_variants(
    ruleset: Ruleset, rule_of: npt.NDArray[np.intp], posteriors: Posteriors
) -> list[CompiledVariant | None] | None:
    """For firing pairs whose rules are ``rule_of`` (rule indices), the variant drawn for
    each pair of an adaptive rule (None for the others), or None when there is none: one
    vectorised draw per adaptive rule for all of its pairs in the batch, however many signals
    they are of."""
    out: list[CompiledVariant | None] | None = None
    for rule in adaptive_rules(ruleset):
        at = np.flatnonzero(rule_of == rule.index)
        if not len(at):
            continue
        idx, hits, sent = arm_counts(rule, posteriors.counts)
        picks = thompson_pick(
            hits, sent, len(at), min_share=rule.model.min_share, rng=posteriors.rng
        )
        if out is None:
            out = [None] * len(rule_of)
        variants = [rule.variants[i] for i in idx]
        for k, p in zip(at.tolist(), picks.tolist(), strict=True):
            out[k] = variants[p]
    return out
