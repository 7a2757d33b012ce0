"""share and prob_best of /v1/stats (service.stats.allocation_stats), pure: what the counts of
the last 30 days give each variant of a fixed and of an adaptive rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.stats import VariantPlan, allocation_stats


def plan(weights: list[int], adaptive: bool, min_share: float = 0.1) -> VariantPlan:
    names = tuple(f"v{i}" for i in range(len(weights)))
    return VariantPlan("r", names, tuple(weights), adaptive, min_share)


@settings(max_examples=80, deadline=None)
@given(
    arms=st.lists(
        st.tuples(st.integers(1, 100), st.integers(0, 10_000), st.integers(0, 10_000)),
        min_size=2,
        max_size=6,
    ),
    off=st.integers(0, 2),
    floor=st.floats(0.01, 0.5),
)
def test_adaptive_shares_sum_to_1_and_keep_every_floor(
    arms: list[tuple[int, int, int]], off: int, floor: float
) -> None:
    # Up to two variants turned off (weight 0), as long as two stay on.
    weights = [w for w, _, _ in arms]
    for i in range(min(off, len(weights) - 2)):
        weights[i] = 0
    on = [i for i, w in enumerate(weights) if w > 0]
    floor = min(floor, 1.0 / len(on))
    p = plan(weights, True, floor)
    counts = {("r", v): (sent, hits) for v, (_, sent, hits) in zip(p.variants, arms, strict=True)}
    out = allocation_stats([p], counts)
    shares = [out[("r", v)]["share"] for v in p.variants]
    best = [out[("r", v)]["prob_best"] for v in p.variants]
    # Rounded to 4 decimals each: the sums are 1 within that.
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    assert sum(best) == pytest.approx(1.0, abs=1e-3)
    for i, share in enumerate(shares):
        assert share >= floor - 1e-4 if i in on else share == 0.0
    assert {out[("r", v)]["allocation"] for v in p.variants} == {"adaptive"}


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(st.integers(0, 100), min_size=2, max_size=5).filter(lambda w: sum(w) > 0),
    clicks=st.integers(0, 50),
)
def test_fixed_shares_are_the_weights(weights: list[int], clicks: int) -> None:
    p = plan(weights, False)
    out = allocation_stats([p], {("r", "v0"): (100, clicks)})
    for v, w in zip(p.variants, weights, strict=True):
        assert out[("r", v)]["share"] == pytest.approx(w / sum(weights), abs=1e-4)
        assert out[("r", v)]["allocation"] == "fixed"


def test_one_variant_has_no_share_and_the_same_counts_give_the_same_figures() -> None:
    one = VariantPlan("solo", ("default",), (1,), False, 0.1)
    assert allocation_stats([one], {}) == {
        ("solo", "default"): {"allocation": "fixed", "share": None, "prob_best": None}
    }
    p = plan([1, 1, 1], True)
    counts = {("r", "v0"): (400, 12), ("r", "v1"): (400, 36), ("r", "v2"): (50, 1)}
    first = allocation_stats([p], counts)
    assert allocation_stats([p], counts) == first  # a fixed seed: the page does not flicker
    # The worked example of docs/rules.md (treat, discount, story).
    assert [first[("r", v)]["share"] for v in p.variants] == [0.1001, 0.7617, 0.1382]
    assert [first[("r", v)]["prob_best"] for v in p.variants] == [0.0001, 0.9453, 0.0546]
