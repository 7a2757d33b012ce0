"""The fatigue guard (rules/policy.yaml ``fatigue: {after: 5, rest: 14d}``), as pure functions.

A subscriber who got ``after`` sent pushes in a row (rules' and campaigns'; test pushes and
shadow rules' would-be sends are no pushes) without an interaction (a ``clicked`` or
``converted`` event, a click link too) rests: rule and campaign pushes to them are suppressed
with reason ``fatigued`` until ``rest`` has passed; then the count starts again from zero.

Where the state lives, and why there: one row per subscription (``push_fatigue``, migration
0019) with the count of unanswered sent pushes and the current rest, maintained set-based by
the statements that already run - the sender's ``push_record`` (one upsert per batch, no
Python per push) and the events' ``event_record``/``event_click`` (an interaction resets it).
Deciding then costs a join on a primary key: the worker reads the rest with its batch
(``batch_of``), the campaign fan-out in its one statement. Deriving it at decision time from
the deliveries would read every push since the last interaction for each subscriber a batch
touches (and the fan-out for a whole audience), and could not see past DELIVERY_RETENTION.

The SQL (service/store/sql/deliveries.sql ``push_record``, engagement.sql) does what
:func:`after_sent` and :func:`after_interaction` do here; tests/worker/test_fatigue.py holds
them equal, and a benchmark can run the rule without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

__all__ = ["Streak", "after_interaction", "after_sent", "is_resting"]


@dataclass(frozen=True, slots=True)
class Streak:
    """One subscription's guard state: sent pushes since the count last started, and its
    latest rest (kept after it ended: the backtest names the rest of the period it covers)."""

    unanswered: int = 0
    resting_since: datetime | None = None
    resting_until: datetime | None = None


def is_resting(
    resting_since: datetime | None, resting_until: datetime | None, at: datetime
) -> bool:
    """Whether a push decided at ``at`` falls in the rest [resting_since, resting_until)."""
    if resting_until is None or at >= resting_until:
        return False
    return resting_since is None or resting_since <= at


def after_sent(streak: Streak, sent: int, now: datetime, after: int, rest: timedelta) -> Streak:
    """The state once ``sent`` more pushes were sent at ``now`` (one batch of the sender). A
    push sent while resting (queued before the rest began) does not count; the ``after``-th
    starts a rest and the count starts again from zero."""
    if sent <= 0 or is_resting(streak.resting_since, streak.resting_until, now):
        return streak
    total = streak.unanswered + sent
    if total >= after:
        return Streak(0, now, now + rest)
    return replace(streak, unanswered=total)


def after_interaction(streak: Streak, now: datetime) -> Streak:
    """An interaction resets the count and ends a rest under way: a subscriber who clicked
    the push that started the rest was not tired of them."""
    until = streak.resting_until
    if until is not None and until > now:
        until = now
    return Streak(0, streak.resting_since, until)
