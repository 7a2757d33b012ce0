"""What to do after one push attempt: the HTTP-status policy and the backoff, with no I/O.

The sender asks :meth:`RetryPolicy.verdict` what a push service's answer means and how long to
wait before the next try; everything here is pure and unit-tested on its own (model:
procrastinate's ``retry.py``). The push services' answers (docs/push.md):

- 200/201/202: accepted.
- 404/410: the subscription is gone; stop and retire it.
- 401/403: *our* VAPID key or subject is refused; alarm, never delete subscribers.
- 429: the push service throttles us; the whole origin waits (Retry-After, else backoff).
- 3xx: refused (push services never redirect; following one would let anybody steer our POSTs).
- 5xx, timeouts, connection errors: transient; retry with backoff until the attempts run out.
- 400, 413 and other client errors: the same request would fail the same way.

A 429's pause holds for the whole origin and for every sender process: :class:`OriginBackoff`
is what one process knows of an origin's pause, and how a 429, an accepted push or what other
processes wrote to the database change it.
"""

from __future__ import annotations

import email.utils
import enum
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

# Retry-After beyond this is treated as this: a push should not wait for a day.
MAX_RETRY_AFTER = 3600.0
# A throttled origin pauses at least this long, whatever Retry-After says.
MIN_RATE_LIMIT_PAUSE = 1.0


class Action(enum.Enum):
    SENT = "sent"
    GONE = "gone"
    AUTH_REJECTED = "auth_rejected"
    RATE_LIMITED = "rate_limited"
    REDIRECT_REFUSED = "redirect_refused"
    RETRY = "retry"
    FAIL = "fail"


def classify(status: int | None) -> Action:
    """What a push service's HTTP status means; ``None`` is a timeout or connection error."""
    if status is None or status >= 500:
        return Action.RETRY
    if status in (200, 201, 202):
        return Action.SENT
    if status in (404, 410):
        return Action.GONE
    if status in (401, 403):
        return Action.AUTH_REJECTED
    if status == 429:
        return Action.RATE_LIMITED
    if 300 <= status < 400:
        return Action.REDIRECT_REFUSED
    return Action.FAIL


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER)


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter, capped, for a bounded number of attempts."""

    max_attempts: int = 8
    base: float = 2.0  # seconds before the second attempt, before jitter
    cap: float = 3600.0
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based). The jitter in
        [0.5, 1] keeps the retries of one outage from arriving together."""
        ceiling = min(self.cap, self.base * 2.0 ** (attempt - 1))
        return ceiling * self.rng.uniform(0.5, 1.0)

    def retry_delay(self, attempts: int) -> float | None:
        """Seconds until the next try after ``attempts`` transient failures, or None: give up."""
        if attempts >= self.max_attempts:
            return None
        return self.backoff(attempts)

    def rate_limit_pause(self, retry_after: str | None, strikes: int, now: datetime) -> float:
        """How long a whole origin pauses after its ``strikes``-th 429 in a row. A 429 uses up
        no attempts: the message's ttl bounds how long it keeps trying."""
        delay = parse_retry_after(retry_after, now)
        if delay is None:
            delay = self.backoff(strikes)
        return max(delay, MIN_RATE_LIMIT_PAUSE)


@dataclass(frozen=True, slots=True)
class OriginBackoff:
    """How one push-service origin is throttling us: nothing may be sent to it before
    ``until`` (seconds on the caller's clock), after ``strikes`` 429s in a row."""

    until: float = 0.0
    strikes: int = 0

    def remaining(self, now: float) -> float:
        """Seconds of pause left at ``now``; 0 when the origin may be sent to."""
        return max(0.0, self.until - now)

    def strike(self, now: float) -> int:
        """Which 429 in a row one that arrives at ``now`` is. While the origin is paused it
        answers a request sent before the pause began: the same strike, or every request in
        flight together would count as one more (and a pause would grow to the cap)."""
        return self.strikes if self.until > now else self.strikes + 1

    def throttled(self, pause: float, now: float) -> OriginBackoff:
        """After a 429 that asks for ``pause`` seconds: the longer of the running pause and
        the new one (a shorter Retry-After never shortens a pause), at :meth:`strike`."""
        return OriginBackoff(max(self.until, now + pause), self.strike(now))

    def accepted(self, now: float) -> OriginBackoff:
        """After an accepted push: no strikes. While the origin is paused nothing changes: the
        push was sent before the pause began, and the 429s after it are the news."""
        return self if self.until > now else replace(self, strikes=0)

    def learned(self, shared: OriginBackoff, *, keep_strikes: bool) -> OriginBackoff:
        """Merged with what the database holds (every process's 429s): the longer pause; the
        shared strikes, unless this process has news about them it has not written yet."""
        strikes = self.strikes if keep_strikes else shared.strikes
        return OriginBackoff(max(self.until, shared.until), strikes)
