"""The fatigue guard's pure rule (service/engagement/fatigue.py): what the sender's and the events'
statements do (tests/campaigns/test_fatigue.py holds them equal), and what a benchmark runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from service.engagement.fatigue import Streak, after_interaction, after_sent, is_resting

T0 = datetime(2026, 12, 1, tzinfo=UTC)
REST = timedelta(days=14)


def test_the_pure_rule() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    rest = timedelta(days=14)
    s = Streak()
    for i in range(4):
        s = after_sent(s, 1, t0 + timedelta(hours=i), 5, rest)
    assert s == Streak(4)
    s = after_interaction(s, t0 + timedelta(hours=5))
    assert s == Streak(0)
    s = after_sent(s, 5, t0 + timedelta(hours=6), 5, rest)  # one batch may reach it
    began = t0 + timedelta(hours=6)
    assert s == Streak(0, began, began + rest)
    assert is_resting(s.resting_since, s.resting_until, began + rest - timedelta(seconds=1))
    assert not is_resting(s.resting_since, s.resting_until, began + rest)
    assert not is_resting(s.resting_since, s.resting_until, began - timedelta(seconds=1))
    assert after_sent(s, 1, began + timedelta(days=1), 5, rest) == s  # queued: not counted
    after_rest = after_sent(s, 1, began + rest, 5, rest)
    assert after_rest.unanswered == 1 and after_rest.resting_until == began + rest
    ended = after_interaction(s, began + timedelta(days=2))
    assert ended == Streak(0, began, began + timedelta(days=2))
    assert not is_resting(ended.resting_since, ended.resting_until, began + timedelta(days=3))


# A subscriber's history: each step some hours after the last, a sent push or an interaction.
STEPS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=24 * 20), st.sampled_from(["sent", "click"])),
    max_size=60,
)


@given(after=st.integers(min_value=1, max_value=8), steps=STEPS)
def test_never_more_than_after_unanswered_pushes_reach_a_subscriber_who_is_not_resting(
    after: int, steps: list[tuple[int, str]]
) -> None:
    s = Streak()
    now = T0
    reached = 0  # pushes sent since the last interaction or the end of the last rest
    rest_end: datetime | None = None
    for hours, kind in steps:
        now += timedelta(hours=hours)
        if rest_end is not None and now >= rest_end:
            reached, rest_end = 0, None  # the rest has passed: the count starts again
        if kind == "click":
            s = after_interaction(s, now)
            reached, rest_end = 0, None
            assert s.unanswered == 0
            assert not is_resting(s.resting_since, s.resting_until, now)
            continue
        resting_before = is_resting(s.resting_since, s.resting_until, now)
        s = after_sent(s, 1, now, after, REST)
        assert 0 <= s.unanswered < after
        if resting_before:
            continue  # queued before the rest: sent, not counted
        reached += 1
        if reached == after:
            # The after-th in a row: a rest of exactly REST begins now.
            assert (s.resting_since, s.resting_until) == (now, now + REST)
            assert is_resting(s.resting_since, s.resting_until, now + REST - timedelta(seconds=1))
            assert not is_resting(s.resting_since, s.resting_until, now + REST)
            rest_end = now + REST
            reached = 0
        else:
            assert s.unanswered == reached
            assert not is_resting(s.resting_since, s.resting_until, now)


@given(
    after=st.integers(min_value=2, max_value=10),
    a=st.integers(min_value=0, max_value=10),
    b=st.integers(min_value=0, max_value=10),
)
def test_a_batch_counts_as_its_pushes_one_by_one_below_the_limit(
    after: int, a: int, b: int
) -> None:
    """One batch of n sent pushes is n single ones, as long as no rest begins within it."""
    if a + b >= after:
        return
    one_by_one = Streak()
    for _ in range(a + b):
        one_by_one = after_sent(one_by_one, 1, T0, after, REST)
    assert after_sent(after_sent(Streak(), a, T0, after, REST), b, T0, after, REST) == one_by_one
