"""The retry policy on its own: what each push-service answer means and how long to wait."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from service.push.retry import (
    MAX_RETRY_AFTER,
    MIN_RATE_LIMIT_PAUSE,
    Action,
    OriginBackoff,
    RetryPolicy,
    classify,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, Action.SENT),
        (201, Action.SENT),
        (202, Action.SENT),
        (404, Action.GONE),
        (410, Action.GONE),
        (401, Action.AUTH_REJECTED),
        (403, Action.AUTH_REJECTED),
        (429, Action.RATE_LIMITED),
        (301, Action.REDIRECT_REFUSED),
        (307, Action.REDIRECT_REFUSED),
        (500, Action.RETRY),
        (503, Action.RETRY),
        (None, Action.RETRY),
        (400, Action.FAIL),
        (413, Action.FAIL),
        (204, Action.FAIL),
    ],
)
def test_each_answer_has_one_meaning(status: int | None, action: Action) -> None:
    assert classify(status) is action


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base=2.0, cap=30.0, rng=random.Random(7))
    for attempt in range(1, 12):
        ceiling = min(30.0, 2.0 * 2 ** (attempt - 1))
        delays = [policy.backoff(attempt) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling * 0.2  # jittered, not fixed


def test_retries_stop_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, base=1.0, rng=random.Random(1))
    assert policy.retry_delay(1) is not None
    assert policy.retry_delay(2) is not None
    assert policy.retry_delay(3) is None
    assert policy.retry_delay(4) is None


def test_rate_limit_pause_honours_retry_after() -> None:
    policy = RetryPolicy(rng=random.Random(1))
    assert policy.rate_limit_pause("120", 1, NOW) == 120.0
    assert policy.rate_limit_pause("Tue, 01 Dec 2026 12:00:30 GMT", 1, NOW) == 30.0
    # Far beyond the cap, or already past: bounded both ways.
    assert policy.rate_limit_pause("999999", 1, NOW) == MAX_RETRY_AFTER
    assert policy.rate_limit_pause("0", 1, NOW) == MIN_RATE_LIMIT_PAUSE


def test_rate_limit_pause_without_retry_after_grows_with_strikes() -> None:
    policy = RetryPolicy(base=2.0, cap=3600.0, rng=random.Random(3))
    first = [policy.rate_limit_pause(None, 1, NOW) for _ in range(50)]
    fifth = [policy.rate_limit_pause(None, 5, NOW) for _ in range(50)]
    assert max(first) <= 2.0
    assert min(fifth) >= 16.0
    assert policy.rate_limit_pause("not a date", 1, NOW) <= 2.0


def test_a_429_lengthens_a_pause_and_never_shortens_it() -> None:
    state = OriginBackoff().throttled(30.0, now=100.0)
    assert state == OriginBackoff(130.0, 1)
    assert state.remaining(120.0) == 10.0 and state.remaining(200.0) == 0.0
    # More 429s during the pause (requests that were in flight): the longer pause wins, and
    # they are the same strike.
    assert state.throttled(2.0, now=101.0) == OriginBackoff(130.0, 1)
    assert state.throttled(60.0, now=101.0) == OriginBackoff(161.0, 1)
    assert state.strike(now=101.0) == 1
    # The first 429 after the pause is the next strike.
    assert state.strike(now=131.0) == 2
    assert state.throttled(5.0, now=131.0) == OriginBackoff(136.0, 2)


def test_an_accepted_push_resets_the_strikes_once_the_pause_is_over() -> None:
    # Accepted during the pause: sent before it began; the strikes stand.
    assert OriginBackoff(130.0, 3).accepted(now=120.0) == OriginBackoff(130.0, 3)
    assert OriginBackoff(130.0, 3).accepted(now=140.0) == OriginBackoff(130.0, 0)


def test_what_other_senders_wrote_is_merged_in() -> None:
    mine = OriginBackoff(110.0, 1)
    shared = OriginBackoff(150.0, 4)
    assert mine.learned(shared, keep_strikes=False) == OriginBackoff(150.0, 4)
    # A pause of ours that is longer than the shared one (not written yet) stays.
    assert OriginBackoff(200.0, 5).learned(shared, keep_strikes=True) == OriginBackoff(200.0, 5)
    # The database no longer lists the origin: its strikes were reset by an accepted push.
    assert mine.learned(OriginBackoff(), keep_strikes=False) == OriginBackoff(110.0, 0)
