"""Parsers for the small textual units marketers write: limits and time windows (durations
are service.durations, shared with the settings). Each raises ValueError with a message that
says how to fix it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from service.durations import parse_duration

_PERIODS = {"hour": 3600, "day": 86400, "week": 7 * 86400}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\w+)\s*$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")

LIMIT_PATTERN = r"^\s*\d+\s*/\s*(hour|day|week|\d+\s*[smhdw])\s*$"
WINDOW_PATTERN = r"^\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*$"


@dataclass(frozen=True)
class Limit:
    """At most `count` pushes per rolling `period` (rolling, so the result does
    not depend on which time zone a 'day' would start in)."""

    count: int
    period: timedelta
    text: str

    def __str__(self) -> str:
        return self.text


def parse_limit(value: object) -> Limit:
    if isinstance(value, Limit):
        return value
    if not isinstance(value, str):
        raise ValueError(f"limit must be text such as 1/day or 3/week, not {value!r}")
    m = _LIMIT.match(value)
    if not m:
        raise ValueError(f"bad limit {value!r}: write N/period, e.g. 1/day, 3/week, 2/hour, 1/12h")
    count = int(m.group(1))
    unit = m.group(2)
    if unit in _PERIODS:
        period = timedelta(seconds=_PERIODS[unit])
    else:
        try:
            period = parse_duration(unit)
        except ValueError:
            raise ValueError(
                f"bad limit {value!r}: the period must be hour, day, week or a duration such as 12h"
            ) from None
    if count < 1:
        raise ValueError(f"limit {value!r} allows nothing; remove the rule or use at least 1")
    return Limit(count=count, period=period, text=value.strip())


def _clock(text: str, whole: str) -> int:
    m = _CLOCK.match(text.strip())
    if not m:
        raise ValueError(f"bad time window {whole!r}: write HH:MM-HH:MM, e.g. 11:30-14:00")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours == 24 and minutes == 0:
        return 86400
    if hours > 23 or minutes > 59:
        raise ValueError(f"bad time window {whole!r}: {text.strip()} is not a time of day")
    return hours * 3600 + minutes * 60


@dataclass(frozen=True)
class Window:
    """A local time-of-day window in seconds after midnight; start > end means
    it crosses midnight (22:00-02:00)."""

    start: int
    end: int
    text: str

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end

    def contains(self, second_of_day: int) -> bool:
        if self.crosses_midnight:
            return second_of_day >= self.start or second_of_day < self.end
        return self.start <= second_of_day < self.end

    def seconds_left(self, second_of_day: int) -> int:
        """Seconds from `second_of_day` (inside the window) to its end."""
        end = self.end
        if self.crosses_midnight and second_of_day >= self.start:
            end += 86400
        return end - second_of_day


def parse_window(value: object) -> Window:
    if isinstance(value, Window):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 11:30 as the base-60 number 690.
        raise ValueError(f'bad time window: write it in quotes as "HH:MM-HH:MM" (got {value})')
    if not isinstance(value, str) or "-" not in value:
        raise ValueError(f"bad time window {value!r}: write HH:MM-HH:MM, e.g. 11:30-14:00")
    left, _, right = value.partition("-")
    start, end = _clock(left, value), _clock(right, value)
    if start == end:
        raise ValueError(f"bad time window {value!r}: start and end are the same time")
    if end == 86400:
        end = 0 if start > 0 else 86400
    return Window(start=start, end=end, text=value.strip())
