"""The Beta/Thompson arithmetic of service/engagement/bayes.py, by properties and by numbers
worked out independently (closed forms for two Beta variables)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engagement.bayes import (
    check_min_share,
    prob_best,
    thompson_pick,
    thompson_shares,
)


@st.composite
def arms(draw: st.DrawFn, max_arms: int = 5) -> tuple[list[int], list[int]]:
    n = draw(st.integers(min_value=1, max_value=max_arms))
    trials = draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
    successes = [draw(st.integers(0, t)) for t in trials]
    return successes, trials


def p_b_beats_a(a: tuple[int, int], b: tuple[int, int]) -> float:
    """P(X_b > X_a) for X ~ Beta(alpha, beta) with integer parameters: Evan Miller's closed
    form, an independent check of the Monte Carlo estimate."""
    (aa, ba), (ab, bb) = a, b
    total = 0.0
    for i in range(ab):
        total += math.exp(
            math.lgamma(aa + i)
            + math.lgamma(ba + bb)
            + math.lgamma(1 + i + bb)
            + math.lgamma(aa + ba)
            - math.log(bb + i)
            - math.lgamma(1 + i)
            - math.lgamma(aa + ba + bb + i)
            - math.lgamma(bb)
            - math.lgamma(aa)
            - math.lgamma(ba)
        )
    return total


@settings(max_examples=60, deadline=None)
@given(arms())
def test_prob_best_is_a_distribution_over_the_variants(counts: tuple[list[int], list[int]]) -> None:
    s, t = counts
    p = prob_best(s, t, draws=4000, rng=np.random.default_rng(1))
    assert p.shape == (len(s),)
    assert (p >= 0).all()
    assert math.isclose(float(p.sum()), 1.0, abs_tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(arms(max_arms=4), st.permutations(range(4)))
def test_prob_best_follows_the_variants_when_they_are_reordered(
    counts: tuple[list[int], list[int]], order: list[int]
) -> None:
    s, t = counts
    perm = [i for i in order if i < len(s)]
    p = prob_best(s, t, draws=20000, rng=np.random.default_rng(2))
    q = prob_best(
        [s[i] for i in perm], [t[i] for i in perm], draws=20000, rng=np.random.default_rng(3)
    )
    assert np.allclose(p[perm], q, atol=0.03)


@pytest.mark.parametrize(
    ("a", "b"),
    [((3, 100), (8, 100)), ((0, 0), (0, 0)), ((20, 1000), (30, 1000)), ((5, 10), (1, 10))],
)
def test_two_variants_match_the_closed_form(a: tuple[int, int], b: tuple[int, int]) -> None:
    exact = p_b_beats_a((1 + a[0], 1 + a[1] - a[0]), (1 + b[0], 1 + b[1] - b[0]))
    p = prob_best([a[0], b[0]], [a[1], b[1]], draws=200_000, rng=np.random.default_rng(4))
    assert p[1] == pytest.approx(exact, abs=0.01)


@settings(max_examples=60, deadline=None)
@given(arms(), st.floats(0.0, 1.0))
def test_thompson_shares_sum_to_one_and_keep_every_floor(
    counts: tuple[list[int], list[int]], fraction: float
) -> None:
    s, t = counts
    min_share = fraction / len(s)  # every floor that can hold
    shares = thompson_shares(s, t, min_share=min_share, draws=4000, rng=np.random.default_rng(5))
    assert math.isclose(float(shares.sum()), 1.0, abs_tol=1e-9)
    assert (shares >= min_share - 1e-12).all()


def test_floors_that_cannot_all_hold_are_refused() -> None:
    with pytest.raises(ValueError, match="over 1"):
        check_min_share(0.4, 3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        check_min_share(-0.1, 2)
    with pytest.raises(ValueError, match="successes <= trials"):
        prob_best([5], [4])


def test_thompson_picks_follow_the_shares() -> None:
    s, t = [10, 60, 30], [1000, 1000, 1000]
    rng = np.random.default_rng(6)
    picks = thompson_pick(s, t, 100_000, min_share=0.1, rng=rng)
    observed = np.bincount(picks, minlength=3) / picks.size
    expected = thompson_shares(s, t, min_share=0.1, draws=200_000, rng=np.random.default_rng(7))
    assert np.allclose(observed, expected, atol=0.01)
    assert observed[0] >= 0.1 - 0.01  # the clear loser keeps its floor
    assert observed[1] > 0.75  # the clear winner takes the rest


@settings(max_examples=40, deadline=None)
@given(arms(), st.integers(0, 300), st.integers(0, 2**32 - 1))
def test_thompson_picks_are_valid_indices_and_reproducible(
    counts: tuple[list[int], list[int]], size: int, seed: int
) -> None:
    s, t = counts
    first = thompson_pick(s, t, size, min_share=0.5 / len(s), rng=np.random.default_rng(seed))
    again = thompson_pick(s, t, size, min_share=0.5 / len(s), rng=np.random.default_rng(seed))
    assert first.shape == (size,)
    assert ((first >= 0) & (first < len(s))).all()
    assert (first == again).all()


def test_no_traffic_is_an_even_race() -> None:
    p = prob_best([0, 0, 0, 0], [0, 0, 0, 0], draws=100_000, rng=np.random.default_rng(8))
    assert np.allclose(p, 0.25, atol=0.01)
