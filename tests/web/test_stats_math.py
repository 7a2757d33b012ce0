"""The significance arithmetic of /v1/stats against textbook values (no scipy needed)."""

from __future__ import annotations

import math

import pytest

from service.stats import (
    MIN_SAMPLE,
    Funnel,
    compare,
    experiment,
    normal_two_sided_p,
    required_sample_size,
    stats,
    two_proportion_z_test,
)
from service.store.engagement import DeliveryCounts, EngagementCounts, EventCount, RuleCounter


def arm(variant: str, clicked: int, sent: int) -> Funnel:
    return Funnel("promo", variant, sent=sent, clicked=clicked)


def test_z_test_textbook_200_of_1000_vs_250_of_1000() -> None:
    test = two_proportion_z_test(200, 1000, 250, 1000)
    assert test is not None
    # pooled p = 0.225, se = sqrt(0.225 * 0.775 * 2 / 1000) = 0.018675
    assert test.z == pytest.approx(-2.6774, abs=1e-4)
    assert test.p_value == pytest.approx(0.00742, abs=1e-5)


def test_z_test_is_antisymmetric_and_p_is_symmetric() -> None:
    ab = two_proportion_z_test(30, 120, 45, 130)
    ba = two_proportion_z_test(45, 130, 30, 120)
    assert ab is not None and ba is not None
    assert ab.z == pytest.approx(-ba.z)
    assert ab.p_value == pytest.approx(ba.p_value)


@pytest.mark.parametrize(
    ("z", "p"),
    [(1.959964, 0.05), (2.575829, 0.01), (1.644854, 0.10), (0.0, 1.0), (3.290527, 0.001)],
)
def test_two_sided_p_of_normal_quantiles(z: float, p: float) -> None:
    assert normal_two_sided_p(z) == pytest.approx(p, rel=1e-5)
    assert normal_two_sided_p(-z) == pytest.approx(p, rel=1e-5)


def test_degenerate_inputs() -> None:
    assert two_proportion_z_test(0, 0, 5, 10) is None
    same = two_proportion_z_test(0, 50, 0, 80)
    assert same is not None and (same.z, same.p_value) == (0.0, 1.0)
    assert required_sample_size(0.1, 0.1) is None


def test_required_sample_size_textbook() -> None:
    # 20 % vs 25 %, two-sided alpha 0.05, power 0.8: 1094 per group (Fleiss' formula
    # without continuity correction; tables print 1091-1094 depending on rounding).
    assert required_sample_size(0.20, 0.25) == 1094
    # 10 % vs 15 %: 686 per group.
    assert required_sample_size(0.10, 0.15) == 686
    # A smaller effect needs more: the size grows roughly with 1 / delta^2.
    assert required_sample_size(0.20, 0.22) > 3.5 * required_sample_size(0.20, 0.24)  # type: ignore[operator]


def test_significant_but_underpowered_declares_no_winner() -> None:
    result = compare(arm("a", 200, 1000), arm("b", 250, 1000))
    assert result.significant
    assert result.p_value == pytest.approx(0.00742, abs=1e-5)
    assert result.required_per_variant == 1094
    assert result.winner is None
    assert "underpowered" in result.verdict


def test_powered_and_significant_declares_the_better_variant() -> None:
    result = compare(arm("a", 240, 1200), arm("b", 300, 1200))
    assert result.significant and result.required_per_variant is not None
    assert result.required_per_variant <= 1200
    assert result.winner == "b"
    assert result.difference == pytest.approx(0.2 - 0.25)


def test_tiny_samples_never_win_even_with_huge_effects() -> None:
    result = compare(arm("a", 0, 40), arm("b", 30, 40))
    assert result.significant
    assert result.winner is None
    assert str(MIN_SAMPLE) in result.verdict


def test_not_significant() -> None:
    result = compare(arm("a", 100, 1000), arm("b", 110, 1000))
    assert not result.significant and result.winner is None
    assert result.p_value is not None and result.p_value > 0.05


def test_three_variants_use_bonferroni_and_need_every_pair() -> None:
    # c beats a and b clearly; a vs b is a tie. Alpha per pair is 0.05 / 3.
    exp = experiment("promo", [arm("a", 200, 3000), arm("b", 205, 3000), arm("c", 330, 3000)])
    assert all(c["alpha"] == pytest.approx(0.05 / 3) for c in exp["comparisons"])
    assert exp["winner"] == "c"
    # A result at p = 0.03 is significant alone but not under the corrected alpha.
    pair = compare(arm("a", 200, 2000), arm("b", 240, 2000), alpha=0.05 / 3)
    assert 0.0167 < pair.p_value < 0.05  # type: ignore[operator]
    assert not pair.significant


def test_ctr_is_over_sends() -> None:
    f = Funnel("r", "a", sent=40, shown=30, clicked=10, converted=2)
    assert f.ctr == pytest.approx(0.25)
    assert f.conversion_rate == pytest.approx(0.05)
    assert Funnel("r", "a").ctr is None
    assert math.isclose(f.as_dict()["ctr"], 0.25)


def test_stats_merges_the_counts_into_funnels() -> None:
    counts = EngagementCounts(
        deliveries=[DeliveryCounts("promo", "a", sent=10, failed=1, gone=0, expired=2)],
        events=[EventCount("promo", "a", "clicked", 4), EventCount("promo", "b", "shown", 3)],
        counters=[
            RuleCounter("promo", "a", "matched", 12),
            RuleCounter("promo", "a", "suppressed:cap", 2),
            RuleCounter("promo", "a", "suppressed:cap", 1),
            RuleCounter("gone-rule", "", "suppressed:quiet_hours", 5),
        ],
    )
    body = stats(counts)
    rules = {(r["rule"], r["variant"]): r for r in body["rules"]}
    assert list(rules) == [("gone-rule", ""), ("promo", "a"), ("promo", "b")]
    a = rules["promo", "a"]
    assert (a["matched"], a["sent"], a["failed"], a["expired"], a["clicked"]) == (12, 10, 1, 2, 4)
    assert a["suppressed"] == {"cap": 3} and a["ctr"] == pytest.approx(0.4)
    assert rules["promo", "b"]["shown"] == 3 and rules["promo", "b"]["ctr"] is None
    # The variant "" is no arm: only promo's a and b are compared.
    assert [(e["rule"], e["variants"]) for e in body["experiments"]] == [("promo", ["a", "b"])]
