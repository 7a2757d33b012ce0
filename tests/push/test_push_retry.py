"""The retry policy on its own: what each push-service answer means and how long to wait."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from service.push.retry import (
    MAX_RETRY_AFTER,
    MIN_RATE_LIMIT_PAUSE,
    Action,
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
