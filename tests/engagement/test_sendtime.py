"""choose_hours, the pure hour choice of send-time optimisation: properties over random
histograms, profiles and windows (Hypothesis), and the rule's worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from service.engagement.sendtime import (
    DEFAULT_PRIOR_STRENGTH,
    choose_hours,
    circular_distance,
    nearest_allowed,
)

HOURS = np.arange(24)


def window(start: int, end: int) -> NDArray[np.bool_]:
    return np.isin(HOURS, range(start, end))


counts_st = hnp.arrays(
    np.int64,
    st.tuples(st.integers(0, 40), st.just(24)),
    elements=st.integers(0, 6),
)
profile_st = hnp.arrays(np.float64, 24, elements=st.floats(0, 100, allow_nan=False))
allowed_st = hnp.arrays(np.bool_, 24).filter(lambda a: bool(a.any()))


@settings(max_examples=300, deadline=None)
@given(counts_st, profile_st, allowed_st, st.integers(0, 23), st.integers(1, 8))
def test_an_hour_is_allowed_or_minus_one_iff_too_few_interactions(
    counts: NDArray[np.int64],
    profile: NDArray[np.float64],
    allowed: NDArray[np.bool_],
    fallback: int,
    minimum: int,
) -> None:
    hours = choose_hours(
        counts, profile, allowed=allowed, fallback_hour=fallback, min_interactions=minimum
    )
    assert hours.shape == (len(counts),) and hours.dtype == np.int64
    few = counts.sum(axis=1) < minimum
    assert ((hours == -1) == few).all()
    assert allowed[hours[~few]].all()


@settings(max_examples=300, deadline=None)
@given(counts_st, profile_st, allowed_st, st.integers(0, 23))
def test_subscribers_are_independent_of_their_order_and_of_each_other(
    counts: NDArray[np.int64],
    profile: NDArray[np.float64],
    allowed: NDArray[np.bool_],
    fallback: int,
) -> None:
    hours = choose_hours(counts, profile, allowed=allowed, fallback_hour=fallback)
    order = np.random.default_rng(len(counts)).permutation(len(counts))
    shuffled = choose_hours(counts[order], profile, allowed=allowed, fallback_hour=fallback)
    assert (shuffled == hours[order]).all()
    for i in range(min(3, len(counts))):  # one at a time: the same hour as in the batch
        alone = choose_hours(counts[i : i + 1], profile, allowed=allowed, fallback_hour=fallback)
        assert alone[0] == hours[i]


@settings(max_examples=300, deadline=None)
@given(
    counts_st.filter(lambda c: len(c) > 0),
    profile_st,
    allowed_st,
    st.integers(0, 23),
    st.data(),
)
def test_a_clear_mode_in_an_allowed_hour_wins(
    counts: NDArray[np.int64],
    profile: NDArray[np.float64],
    allowed: NDArray[np.bool_],
    fallback: int,
    data: st.DataObject,
) -> None:
    # A lead over every other hour larger than the prior's weight: no profile overturns it.
    mode = data.draw(st.sampled_from([int(h) for h in HOURS[allowed]]))
    counts = counts.copy()
    counts[:, mode] = counts.max(axis=1) + int(DEFAULT_PRIOR_STRENGTH) + 1
    hours = choose_hours(counts, profile, allowed=allowed, fallback_hour=fallback)
    assert (hours == mode).all()


@settings(max_examples=200, deadline=None)
@given(profile_st, allowed_st, st.integers(0, 23), st.integers(0, 23), st.integers(3, 20))
def test_a_mode_outside_the_allowed_hours_goes_to_the_nearest_allowed_hour(
    profile: NDArray[np.float64], allowed: NDArray[np.bool_], fallback: int, mode: int, n: int
) -> None:
    counts = np.zeros((1, 24), dtype=np.int64)
    counts[0, mode] = n + int(DEFAULT_PRIOR_STRENGTH) + 1
    [hour] = choose_hours(counts, profile, allowed=allowed, fallback_hour=fallback)
    best = circular_distance(HOURS[allowed], mode).min()
    assert circular_distance(np.array([hour]), mode)[0] == best
    # On a tie, the smaller hour.
    assert hour == min(int(h) for h in HOURS[allowed] if circular_distance(h, mode) == best)


def test_worked_cases_of_the_rule() -> None:
    allowed = window(8, 21)  # 08:00-21:00 with quiet hours 21:00-08:00
    flat = np.ones(24)
    counts = np.zeros((6, 24), dtype=np.int64)
    counts[0, 9] = 5  # a morning reader
    counts[1, 23] = 4  # a night owl: the window's last hour
    counts[2, 2] = 3  # 02:00 is 6 h from 20:00 and from 08:00: the smaller
    counts[3, 10] = 2  # fewer than 3: the fallback
    counts[4, [12, 18]] = [2, 2]  # a tie: the hour nearer the fallback (14)
    counts[5, [9, 19, 20]] = [1, 1, 1]  # a sparse history: the audience's evening decides
    profile = np.zeros(24)
    profile[19] = 10.0
    assert choose_hours(counts[:5], flat, allowed=allowed, fallback_hour=14).tolist() == [
        9,
        20,
        8,
        -1,
        12,
    ]
    assert choose_hours(counts[5:], profile, allowed=allowed, fallback_hour=14).tolist() == [19]
    # Without the audience (or with no history at all), the tie-break is the fallback's.
    assert choose_hours(counts[5:], np.zeros(24), allowed=allowed, fallback_hour=8)[0] == 9


def test_bad_input_is_refused() -> None:
    counts = np.ones((2, 24), dtype=np.int64)
    with pytest.raises(ValueError, match="no allowed hour"):
        choose_hours(counts, np.ones(24), allowed=np.zeros(24, bool), fallback_hour=12)
    with pytest.raises(ValueError, match="shape"):
        choose_hours(
            np.ones((2, 23), dtype=np.int64), np.ones(24), allowed=window(8, 21), fallback_hour=12
        )
    with pytest.raises(ValueError, match="fallback_hour"):
        choose_hours(counts, np.ones(24), allowed=window(8, 21), fallback_hour=24)
    # 00:00 and 01:00 are nearer 20:00 (4 and 5 hours) than 08:00; 02:00 is a tie: 08:00.
    assert nearest_allowed(window(8, 21)).tolist() == [
        20, 20, 8, 8, 8, 8, 8, 8, *range(8, 21), 20, 20, 20
    ]  # fmt: skip


def test_a_large_audience_is_one_vectorised_pass() -> None:
    rng = np.random.default_rng(7)
    counts = rng.poisson(0.3, size=(50_000, 24))
    hours = choose_hours(counts, counts.sum(axis=0), allowed=window(8, 21), fallback_hour=14)
    assert hours.shape == (50_000,)
    assert set(np.unique(hours).tolist()) <= {-1, *range(8, 21)}
