"""Engagement arithmetic for /v1/stats and the dashboard: funnels, rates and A/B significance.

Pure functions over the counts the store reads, so the numbers can be checked against textbook
values without a database. The A/B verdict is deliberately conservative: a variant is only
called the winner when the difference is significant *and* every compared variant has reached
the sample size that a test with the chosen power needs for the observed difference. Looking
at a running test every day and stopping at the first p < 0.05 ("peeking") would otherwise
crown noise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from itertools import combinations
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.store.campaigns import CampaignCounts, CampaignRow
from service.store.engagement import EngagementCounts, Health
from service.store.experiments import ExperimentRow
from service.vocabulary import (
    NOT_MATCHED_COUNTER_PREFIX,
    SHADOW_SENT_COUNTER,
    SILENT_COUNTER_PREFIX,
    ExperimentPhase,
)

# Two-sided alpha 0.05 and power 0.8: the conventional defaults of A/B testing tools.
ALPHA = 0.05
Z_ALPHA_2 = 1.959963984540054  # the standard normal quantile at 1 - 0.05 / 2
Z_POWER = 0.8416212335729143  # the standard normal quantile at 0.8
# Below this many sends per variant the normal approximation behind the z-test is poor.
MIN_SAMPLE = 100

# The health of sending (DESIGN: Engagement that keeps permission): interactions per sent
# push over the last week. Browsers revoke the permission of senders whose pushes nobody
# opens, so a rule with at least LOW_ENGAGEMENT_SENT pushes in the window and an interaction
# rate under LOW_ENGAGEMENT_RATE is flagged (the dashboard warns).
HEALTH_WINDOW_DAYS = 7
HEALTH_WINDOW = timedelta(days=HEALTH_WINDOW_DAYS)
LOW_ENGAGEMENT_SENT = 500
LOW_ENGAGEMENT_RATE = 0.01


@dataclass
class Funnel:
    """What happened to one rule variant, from the engine's match to the conversion."""

    rule: str
    variant: str
    matched: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    # What a shadow rule would have sent (it sends nothing; never part of ``sent``).
    shadow_sent: int = 0
    # Signals within the rule's reach that did not match it, by the first failed condition;
    # per rule, so only on its entry with variant "" (such a signal was shown no variant).
    not_matched: dict[str, int] = field(default_factory=dict)
    # Signals the rule matched without sending, by reason (not_triggered, stale); per rule too.
    silent: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    failed: int = 0
    gone: int = 0
    expired: int = 0
    shown: int = 0
    clicked: int = 0
    # Of ``clicked``, those on an action button, by action (the rest clicked the notification).
    clicked_actions: dict[str, int] = field(default_factory=dict)
    dismissed: int = 0
    converted: int = 0

    @property
    def ctr(self) -> float | None:
        # Over sends, not over "shown": shown depends on the service worker reporting back,
        # which browsers may skip, while every variant shares the same notion of "sent".
        return rate(self.clicked, self.sent)

    @property
    def conversion_rate(self) -> float | None:
        return rate(self.converted, self.sent)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "variant": self.variant,
            "matched": self.matched,
            "suppressed": dict(sorted(self.suppressed.items())),
            "not_matched": dict(sorted(self.not_matched.items())),
            "silent": dict(sorted(self.silent.items())),
            "shadow_sent": self.shadow_sent,
            "sent": self.sent,
            "failed": self.failed,
            "gone": self.gone,
            "expired": self.expired,
            "shown": self.shown,
            "clicked": self.clicked,
            "clicked_actions": dict(sorted(self.clicked_actions.items())),
            "dismissed": self.dismissed,
            "converted": self.converted,
            "ctr": self.ctr,
            "conversion_rate": self.conversion_rate,
        }


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> ZTest | None:
    """Pooled two-proportion z-test of x1/n1 against x2/n2; None when it is undefined.

    z is negative when the first proportion is the smaller one.
    """
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if variance <= 0.0:
        # Both at 0 % or both at 100 %: no evidence of any difference.
        return ZTest(0.0, 1.0)
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return ZTest(z, normal_two_sided_p(z))


def required_sample_size(
    p1: float, p2: float, *, z_alpha: float = Z_ALPHA_2, z_power: float = Z_POWER
) -> int | None:
    """Per-variant sample size for a two-sided test to detect p1 vs p2 with the given power.

    None when the two rates are equal: no finite sample distinguishes them.
    """
    delta = abs(p1 - p2)
    if delta == 0.0:
        return None
    mean = (p1 + p2) / 2.0
    root = z_alpha * math.sqrt(2.0 * mean * (1.0 - mean)) + z_power * math.sqrt(
        p1 * (1.0 - p1) + p2 * (1.0 - p2)
    )
    return math.ceil(root * root / (delta * delta))


@dataclass
class Comparison:
    a: str
    b: str
    rate_a: float | None
    rate_b: float | None
    difference: float | None
    z: float | None
    p_value: float | None
    alpha: float
    required_per_variant: int | None
    significant: bool
    winner: str | None
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare(a: Funnel, b: Funnel, alpha: float = ALPHA) -> Comparison:
    """Click-through of ``a`` against ``b``, with the reason a winner is or is not declared."""
    rate_a, rate_b = a.ctr, b.ctr
    test = two_proportion_z_test(a.clicked, a.sent, b.clicked, b.sent)
    if test is None or rate_a is None or rate_b is None:
        return Comparison(
            a.variant,
            b.variant,
            rate_a,
            rate_b,
            None,
            None,
            None,
            alpha,
            None,
            False,
            None,
            "no sends yet for one of the variants",
        )
    # Bonferroni alphas: the upper alpha/2 quantile of the standard normal distribution.
    z_alpha = Z_ALPHA_2 if alpha == ALPHA else NormalDist().inv_cdf(1.0 - alpha / 2.0)
    required = required_sample_size(rate_a, rate_b, z_alpha=z_alpha)
    significant = test.p_value < alpha
    smallest = min(a.sent, b.sent)
    winner = None
    if not significant:
        verdict = f"no significant difference (p = {test.p_value:.3g} >= {alpha:.3g})"
    elif smallest < MIN_SAMPLE:
        verdict = f"too few sends: {smallest} < {MIN_SAMPLE} per variant"
    elif required is not None and smallest < required:
        verdict = (
            f"significant (p = {test.p_value:.3g}) but underpowered: "
            f"{smallest} of {required} sends per variant needed"
        )
    else:
        winner = a.variant if rate_a > rate_b else b.variant
        verdict = f"{winner} wins (p = {test.p_value:.3g})"
    return Comparison(
        a.variant,
        b.variant,
        rate_a,
        rate_b,
        rate_a - rate_b,
        test.z,
        test.p_value,
        alpha,
        required,
        significant,
        winner,
        verdict,
    )


def experiment(rule: str, variants: Sequence[Funnel]) -> dict[str, Any]:
    """All pairwise comparisons of one rule's variants; Bonferroni keeps the family-wise
    error at ALPHA when there are more than two. The winner must win every pair."""
    pairs = list(combinations(sorted(variants, key=lambda f: f.variant), 2))
    alpha = ALPHA / max(1, len(pairs))
    comparisons = [compare(a, b, alpha) for a, b in pairs]
    names = [f.variant for f in variants]
    winner = None
    for name in names:
        involved = [c for c in comparisons if name in (c.a, c.b)]
        if involved and all(c.winner == name for c in involved):
            winner = name
    return {
        "rule": rule,
        "metric": "ctr",
        "variants": sorted(names),
        "comparisons": [c.as_dict() for c in comparisons],
        "winner": winner,
    }


def experiments(funnels: Iterable[Funnel]) -> list[dict[str, Any]]:
    """One experiment per rule that has two or more variants with data."""
    by_rule: dict[str, list[Funnel]] = {}
    for f in funnels:
        by_rule.setdefault(f.rule, []).append(f)
    return [experiment(rule, fs) for rule, fs in sorted(by_rule.items()) if len(fs) >= 2]


def collect_funnels(counts: EngagementCounts) -> list[Funnel]:
    """Every (rule, variant) seen in deliveries, events or counters, with its numbers."""
    funnels: dict[tuple[str, str], Funnel] = {}

    def get(rule: str, variant: str) -> Funnel:
        key = (rule, variant)
        if key not in funnels:
            funnels[key] = Funnel(rule, variant)
        return funnels[key]

    for d in counts.deliveries:
        f = get(d.rule_id, d.variant)
        f.sent, f.failed, f.gone, f.expired = d.sent, d.failed, d.gone, d.expired
    for e in counts.events:
        setattr(get(e.rule_id, e.variant), e.type, e.n)
    for a in counts.actions:
        get(a.rule_id, a.variant).clicked_actions[a.action] = a.n
    for c in counts.counters:
        f = get(c.rule_id, c.variant)
        if c.counter == "matched":
            f.matched += c.n
        elif c.counter == SHADOW_SENT_COUNTER:
            f.shadow_sent += c.n
        elif c.counter.startswith(NOT_MATCHED_COUNTER_PREFIX):
            reason = c.counter.removeprefix(NOT_MATCHED_COUNTER_PREFIX)
            f.not_matched[reason] = f.not_matched.get(reason, 0) + c.n
        elif c.counter.startswith(SILENT_COUNTER_PREFIX):
            reason = c.counter.removeprefix(SILENT_COUNTER_PREFIX)
            f.silent[reason] = f.silent.get(reason, 0) + c.n
        elif c.counter.startswith("suppressed:"):
            reason = c.counter.removeprefix("suppressed:")
            f.suppressed[reason] = f.suppressed.get(reason, 0) + c.n
    return [funnels[k] for k in sorted(funnels)]


@dataclass(frozen=True)
class VariantPlan:
    """How a loaded rule allocates its variants, as the statistics need it (the caller maps the
    rule set onto these: this module imports no rules)."""

    rule: str
    variants: tuple[str, ...]
    weights: tuple[int, ...]
    adaptive: bool
    min_share: float


# prob_best is Monte Carlo: a fixed seed gives the same figures on every look at unchanged counts.
_STATS_SEED = 0


def allocation_stats(
    plans: Iterable[VariantPlan], counts: Mapping[tuple[str, str], tuple[int, int]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (rule, variant): ``allocation``, ``share`` and ``prob_best``; the last two for rules
    with two variants or more, from ``counts`` ((sent, interacted) of the last 30 days).

    ``share`` is the expected share of the rule's next pushes: the weight's for fixed
    allocation; for adaptive, ``thompson_shares`` of the arms (weight over 0), the share
    Thompson sampling gives them on the same counts the worker draws from. ``prob_best``: the
    probability that the variant has the highest interaction rate, for fixed rules too."""
    # numpy only here: importing the API (which imports this module) loads no numpy.
    import numpy as np

    from service.engagement.bayes import prob_best, thompson_shares

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for plan in plans:
        allocation = "adaptive" if plan.adaptive else "fixed"
        n = len(plan.variants)
        if n < 2:
            for v in plan.variants:
                out[(plan.rule, v)] = {"allocation": allocation, "share": None, "prob_best": None}
            continue
        pairs = [counts.get((plan.rule, v), (0, 0)) for v in plan.variants]
        sent = np.asarray([max(t, 0) for t, _ in pairs], dtype=np.int64)
        hits = np.minimum(np.asarray([max(k, 0) for _, k in pairs], dtype=np.int64), sent)
        best = prob_best(hits, sent, rng=np.random.default_rng(_STATS_SEED))
        weights = np.asarray(plan.weights, dtype=np.float64)
        share = weights / weights.sum()
        on = np.flatnonzero(weights > 0)
        if plan.adaptive and len(on) >= 2:
            share = np.zeros(n)
            share[on] = thompson_shares(
                hits[on],
                sent[on],
                min_share=plan.min_share,
                rng=np.random.default_rng(_STATS_SEED),
            )
        for i, v in enumerate(plan.variants):
            out[(plan.rule, v)] = {
                "allocation": allocation,
                "share": round(float(share[i]), 4),
                "prob_best": round(float(best[i]), 4),
            }
    return out


def stats(
    counts: EngagementCounts,
    plans: Sequence[VariantPlan] = (),
    variant_counts: Mapping[tuple[str, str], tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """The body of /v1/stats (see :class:`Stats`). With the loaded rules' ``plans`` (and their
    ``variant_counts`` of the last 30 days), every variant of a loaded rule has a row, with its
    allocation, share and prob_best."""
    funnels = collect_funnels(counts)
    known = {(f.rule, f.variant) for f in funnels}
    missing = [(p.rule, v) for p in plans for v in p.variants if (p.rule, v) not in known]
    if missing:  # a variant with no traffic yet: a row of zeros, its share and prob_best
        funnels = sorted([*funnels, *(Funnel(r, v) for r, v in missing)], key=_funnel_key)
    extra = allocation_stats(plans, variant_counts or {})
    none = {"allocation": None, "share": None, "prob_best": None}
    # A variant named "" holds what belongs to a rule, not to a variant (not_matched), and
    # suppressions of rules that no longer exist; it is no arm of an A/B test.
    arms = [f for f in funnels if f.variant]
    return {
        "rules": [f.as_dict() | extra.get((f.rule, f.variant), none) for f in funnels],
        "experiments": experiments(arms),
        "campaigns": campaign_results(counts.campaigns) if counts.campaigns else [],
        "signals": asdict(counts.signals),
        "subscribers": asdict(counts.subscribers),
        "health": health(counts.health),
    }


def interaction_rate(interacted: int, sent: int) -> float:
    """Interactions per sent push, from 0 to 1; 0 when nothing was sent (no push, nothing
    for a browser to hold against the sender)."""
    return round(interacted / sent, 4) if sent > 0 else 0.0


def health(h: Health) -> dict[str, Any]:
    """The ``health`` of /v1/stats (see :class:`HealthStats`)."""
    sent = sum(r.sent for r in h.rules)
    interacted = sum(r.interacted for r in h.rules)
    return {
        "window_days": HEALTH_WINDOW_DAYS,
        "sent": sent,
        "interacted": interacted,
        "interaction_rate": interaction_rate(interacted, sent),
        "resting_subscribers": h.resting,
        "rules": [
            {
                "rule": r.rule_id,
                "sent": r.sent,
                "interacted": r.interacted,
                "interaction_rate": interaction_rate(r.interacted, r.sent),
                "low_engagement": r.rule_id != ""
                and r.sent >= LOW_ENGAGEMENT_SENT
                and r.interacted < LOW_ENGAGEMENT_RATE * r.sent,
            }
            for r in h.rules
        ],
    }


def _funnel_key(f: Funnel) -> tuple[str, str]:
    return (f.rule, f.variant)


# Campaigns: the same funnel per variant, and the same A/B statistics, as rules.
_CAMPAIGN_EVENTS = ("shown", "clicked", "dismissed", "converted")


def _send_at(row: CampaignRow) -> Any:
    if row.send_at is not None:
        return row.send_at.isoformat().replace("+00:00", "Z")
    if row.optimal is not None:
        o = row.optimal
        return {
            "optimal": o["date"],
            "window": o["window"],
            "fallback": o["fallback"],
            "late": row.late,
        }
    assert row.send_local is not None
    return {"local": row.send_local.strftime("%Y-%m-%dT%H:%M"), "late": row.late}


def _campaign_counts(f: Funnel, extra: dict[str, int]) -> dict[str, Any]:
    return {
        "queued": extra.get("queued", 0),
        "sent": f.sent,
        "failed": f.failed,
        "gone": f.gone,
        "expired": f.expired,
        "cancelled": extra.get("cancelled", 0),
        "suppressed": dict(sorted(f.suppressed.items())),
        "shown": f.shown,
        "clicked": f.clicked,
        "dismissed": f.dismissed,
        "converted": f.converted,
        "ctr": f.ctr,
        "conversion_rate": f.conversion_rate,
    }


def campaign_results(counts: CampaignCounts) -> list[dict[str, Any]]:
    """Each campaign with its totals, its variants' funnels and their A/B comparison (see
    :class:`CampaignResult`); every variant appears, pushes or not."""
    funnels: dict[tuple[str, str], Funnel] = {}
    extra: dict[tuple[str, str], dict[str, int]] = {}

    def get(campaign: str, variant: str) -> Funnel:
        key = (campaign, variant)
        if key not in funnels:
            funnels[key] = Funnel(campaign, variant)
            extra[key] = {}
        return funnels[key]

    for d in counts.deliveries:
        f = get(d.campaign_id, d.variant)
        f.sent, f.failed, f.gone, f.expired = d.sent, d.failed, d.gone, d.expired
        extra[(d.campaign_id, d.variant)] = {"queued": d.queued, "cancelled": d.cancelled}
    for e in counts.events:
        if e.type in _CAMPAIGN_EVENTS:
            setattr(get(e.campaign_id, e.variant), e.type, e.n)
    for s in counts.suppressions:
        f = get(s.campaign_id, s.variant)
        f.suppressed[s.reason] = f.suppressed.get(s.reason, 0) + s.n
    tests = {e.campaign_id: e for e in counts.experiments}
    out = []
    for row in counts.campaigns:
        names = [str(name) for name in row.programs["variants"]]
        arms = [get(row.id, name) for name in names]
        total = Funnel(row.id, "")
        queued = cancelled = 0
        for f in arms:
            for name in ("sent", "failed", "gone", "expired", *_CAMPAIGN_EVENTS):
                setattr(total, name, getattr(total, name) + getattr(f, name))
            for reason, n in f.suppressed.items():
                total.suppressed[reason] = total.suppressed.get(reason, 0) + n
            queued += extra[(row.id, f.variant)].get("queued", 0)
            cancelled += extra[(row.id, f.variant)].get("cancelled", 0)
        out.append(
            {
                "id": row.id,
                "description": row.description,
                "status": row.status,
                "send_at": _send_at(row),
                "created_at": row.created_at.isoformat(),
                "audience": row.audience_n,
                **_campaign_counts(total, {"queued": queued, "cancelled": cancelled}),
                "variants": [
                    {"variant": f.variant, **_campaign_counts(f, extra[(row.id, f.variant)])}
                    for f in arms
                ],
                "experiment": _campaign_experiment(row, arms, tests.get(row.id)),
                "schedule": row.schedule,
            }
        )
    return out


def _campaign_experiment(
    row: CampaignRow, arms: Sequence[Funnel], test: ExperimentRow | None
) -> dict[str, Any] | None:
    """The A/B comparison of a campaign's variants and, for a campaign with ``experiment``,
    its phase, winner and every variant's probability of being best (service/campaigns/
    experiment.py): stored once decided, from the sent pushes so far while testing."""
    if len(arms) < 2:
        return None
    out = experiment(row.id, arms)
    if test is None:
        return out
    if test.decided_at is not None and test.prob_best is not None:
        stored = test.prob_best  # jsonb keeps no key order: the campaign's order again
        prob = {f.variant: float(stored[f.variant]) for f in arms if f.variant in stored}
    else:
        successes = [min(getattr(f, test.metric), f.sent) for f in arms]
        prob = prob_best_of(row.id, [f.variant for f in arms], successes, [f.sent for f in arms])
    return {
        **out,
        "metric": test.metric,
        "winner": test.winner,
        "phase": "decided" if test.decided_at is not None else "testing",
        "prob_best": prob,
        "test_share": test.test_share,
        "decide_after_s": int(test.decide_after.total_seconds()),
        "started_at": _iso(test.started_at),
        "decide_at": _iso(test.decide_at),
        "decided_at": _iso(test.decided_at),
    }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def prob_best_of(
    campaign_id: str, names: Sequence[str], successes: Sequence[int], sent: Sequence[int]
) -> dict[str, float]:
    """Each variant's probability of having the highest rate of successes per sent push under
    Beta(1 + successes, 1 + sent - successes), to 4 decimals (service.engagement.bayes; its
    draws seeded by the campaign's id, so the same counts give the same answer in every
    process). Identical posteriors (no pushes sent yet, or the same counts) are exactly
    equally likely best."""
    if len(set(zip(successes, sent, strict=True))) == 1:
        return {name: round(1 / len(names), 4) for name in names}
    import numpy as np

    from service.engagement.bayes import prob_best

    seed = int.from_bytes(hashlib.sha256(campaign_id.encode()).digest()[:8], "big")
    p = prob_best(successes, sent, rng=np.random.default_rng(seed))
    return {name: round(float(x), 4) for name, x in zip(names, p, strict=True)}


def best_variant(prob_best: dict[str, float]) -> str:
    """The variant most likely best; a tie goes to the first in the campaign's order."""
    names = list(prob_best)
    return max(names, key=lambda name: (prob_best[name], -names.index(name)))


# The shape of stats() for /openapi.json (GET /v1/stats and GET /v1/dashboard).


class RuleStats(BaseModel):
    rule: str
    variant: str
    matched: int
    suppressed: dict[str, int]
    not_matched: dict[str, int] = Field(
        description="signals within the rule's reach that did not match it, by the first "
        "failed condition (daypart, topics, context.weather, no_place, ...); per rule, on its "
        "entry with variant ''"
    )
    silent: dict[str, int] = Field(
        description="signals the rule matched without sending, by reason: not_triggered (an "
        "enter rule, the subscriber already inside), stale (older than stale_after); per "
        "rule, on its entry with variant ''"
    )
    shadow_sent: int = Field(
        description="what the rule would have sent in mode: shadow (it sent nothing)"
    )
    sent: int
    failed: int
    gone: int
    expired: int
    shown: int
    clicked: int
    clicked_actions: dict[str, int] = Field(
        description="of clicked, the clicks on an action button, by action"
    )
    dismissed: int
    converted: int
    ctr: float | None = Field(description="clicked / sent")
    conversion_rate: float | None = Field(description="converted / sent")
    allocation: Literal["fixed", "adaptive"] | None = Field(
        None, description="the loaded rule's allocation (null: not a loaded rule's variant)"
    )
    share: float | None = Field(
        None,
        description="the expected share of the rule's next pushes that go to this variant: "
        "its weight's for fixed allocation; for adaptive, what Thompson sampling with the "
        "min_share floor gives on the last 30 days' counts. Null for a rule with one variant",
    )
    prob_best: float | None = Field(
        None,
        description="the probability that this variant has the highest interaction rate "
        "(clicked or converted per sent push, last 30 days; Beta posteriors), for every rule "
        "with two variants or more",
    )


class VariantComparison(BaseModel):
    a: str
    b: str
    rate_a: float | None
    rate_b: float | None
    difference: float | None = Field(description="rate_a - rate_b")
    z: float | None
    p_value: float | None = Field(description="two-sided, pooled two-proportion z-test")
    alpha: float = Field(description="0.05, Bonferroni-divided over the comparisons")
    required_per_variant: int | None = Field(
        description="sends per variant needed for 80 % power at the observed rates"
    )
    significant: bool
    winner: str | None
    verdict: str


class Experiment(BaseModel):
    rule: str
    metric: str
    variants: list[str]
    comparisons: list[VariantComparison]
    winner: str | None = Field(description="declared only when significant and powered")


class CampaignExperiment(Experiment):
    """A campaign's variants compared; with ``experiment`` in its body, the test and its
    decision too (service/campaigns/experiment.py)."""

    metric: str = Field(
        description="ctr (the comparisons' click-through); with `experiment`, what the "
        "winner is chosen on: clicked or converted"
    )
    winner: str | None = Field(
        description="with `experiment`: the decided winner, the rest of the audience gets it "
        "(null while testing); else as rules': declared only when significant and powered"
    )
    phase: ExperimentPhase | None = Field(
        None, description="with `experiment`: testing, then decided (null without)"
    )
    prob_best: dict[str, float] | None = Field(
        None,
        description="per variant, the probability that its rate of the metric per sent push "
        "is the highest (Beta posteriors): as decided, or from the test pushes sent so far",
    )
    test_share: float | None = None
    decide_after_s: int | None = None
    started_at: str | None = Field(None, description="when the test pushes started going")
    decide_at: str | None = Field(None, description="when the winner is (or was) due")
    decided_at: str | None = None


class CampaignCountsModel(BaseModel):
    queued: int = Field(description="in the outbox, not sent yet")
    sent: int
    failed: int
    gone: int
    expired: int = Field(description="the ttl ran out first (in quiet hours, or unsent)")
    cancelled: int
    suppressed: dict[str, int] = Field(
        description="audience members not sent to, by reason: missed_local_time, global_cap, "
        "min_gap"
    )
    shown: int
    clicked: int
    dismissed: int
    converted: int
    ctr: float | None = Field(description="clicked / sent")
    conversion_rate: float | None = Field(description="converted / sent")


class CampaignVariantResult(CampaignCountsModel):
    variant: str


class Schedule(BaseModel):
    """An optimal campaign's plan (send_at.optimal), fixed when it was created."""

    personal: int = Field(description="audience members sent at their own best local hour")
    fallback: int = Field(description="audience members sent at the fallback")
    by_local_hour: dict[str, int] = Field(
        description='members per local hour ("HH"), the fallback\'s under its hour',
        examples=[{"09": 120, "14": 800, "19": 300}],
    )


class CampaignResult(CampaignCountsModel):
    id: str
    description: str
    status: str = Field(description="scheduled, sending, done or cancelled")
    send_at: str | dict[str, str] = Field(
        description="the RFC 3339 instant, {local, late} in each subscriber's time zone, or "
        "{optimal, window, fallback, late}"
    )
    created_at: str
    audience: int = Field(description="active, unpaused subscriptions in it at creation")
    variants: list[CampaignVariantResult]
    experiment: CampaignExperiment | None = Field(
        description="with two or more variants: the A/B comparison as rules'; with "
        "`experiment` also its phase, winner and prob_best"
    )
    schedule: Schedule | None = Field(
        None, description="send_at.optimal only: the plan made when the campaign was created"
    )


class SignalStats(BaseModel):
    stored: int = Field(
        description="signals received and stored since the deployment began (duplicates not "
        "counted), a running total: retention and roll-ups do not lower it"
    )
    stale: int = Field(
        description="of those, signals older than the policy's stale_after when the worker "
        "took them in: they updated presence and triggered nothing (a running total)"
    )
    duplicates: int = Field(
        description="signals not stored because their client-chosen id was already stored "
        "(retries; a running total)"
    )
    quarantined: int = Field(description="signals held in quarantine now")


class SubscriberStats(BaseModel):
    active: int = Field(description="subscriptions that can be sent to: not paused, not gone")
    paused: int = Field(description="not gone, paused by the subscriber")
    gone: int = Field(description="the push service says the subscription no longer exists")
    location_consent: int = Field(
        description="of active and paused, those that consented to location use"
    )


class RuleHealth(BaseModel):
    rule: str = Field(description="the rule's id; '' for campaigns' pushes")
    sent: int = Field(description="its pushes sent in the window (test pushes aside)")
    interacted: int = Field(description="of those, the ones clicked or converted")
    interaction_rate: float = Field(description="interacted / sent")
    low_engagement: bool = Field(
        description=f"a rule with at least {LOW_ENGAGEMENT_SENT} pushes sent and an "
        f"interaction rate under {LOW_ENGAGEMENT_RATE:.0%}: the dashboard warns"
    )


class HealthStats(BaseModel):
    window_days: int = Field(description=f"the window: the last {HEALTH_WINDOW_DAYS} days")
    sent: int = Field(description="pushes sent in the window, rules' and campaigns' (no test)")
    interacted: int = Field(
        description="of those, the pushes with an interaction (a clicked or converted event)"
    )
    interaction_rate: float = Field(
        description="interacted / sent, a fraction from 0 to 1; 0 when nothing was sent"
    )
    resting_subscribers: int = Field(
        description="subscribers the fatigue guard rests now (0 while policy.yaml has no fatigue)"
    )
    rules: list[RuleHealth] = Field(description="the same per rule, rules with a push sent")


class Stats(BaseModel):
    rules: list[RuleStats]
    experiments: list[Experiment]
    campaigns: list[CampaignResult] = Field(default_factory=list)
    signals: SignalStats
    subscribers: SubscriberStats
    health: HealthStats
