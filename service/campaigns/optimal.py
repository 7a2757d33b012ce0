"""``send_at: {"optimal": DATE, "window", "fallback", "late"}``: the body's form, its checked
value, the local hours a subscriber's push may go at, and the plan's summary (``schedule``).

Pure: no I/O, no clock. The hour choice itself is service/engagement/sendtime.py; the plan of
a whole audience and its fan-out are service/campaigns/sendtime.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from service.rules.units import Window, parse_window
from service.vocabulary import Late

DEFAULT_WINDOW = "08:00-21:00"
HOUR_S = 3600
DAY_S = 86400

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CLOCK = re.compile(r"^(\d{2}):(\d{2})$")


def _date(value: object) -> object:
    if isinstance(value, str):
        if not _DATE.match(value):
            raise ValueError(f"{value!r}: write the day as YYYY-MM-DD, e.g. 2026-12-08")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date") from None
    return value


def _window(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"write the window as text HH:MM-HH:MM, e.g. {DEFAULT_WINDOW}")
    window = parse_window(value)
    if window.crosses_midnight and window.end != 0:  # end 0: up to 24:00, the day's end
        raise ValueError(
            f"{value!r}: the window lies within the day (start before end), e.g. {DEFAULT_WINDOW}"
        )
    return value.strip()


def _clock_text(value: object) -> object:
    if not isinstance(value, str) or not (m := _CLOCK.match(value)):
        raise ValueError(f"{value!r}: write the fallback as HH:MM, e.g. 12:00")
    if int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{value!r} is not a time of day")
    return value


class OptimalMoment(BaseModel):
    """Each subscriber at their own best local hour of one day (send-time optimisation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimal: Annotated[date, BeforeValidator(_date)] = Field(
        description="YYYY-MM-DD, the day in each subscriber's time zone",
        json_schema_extra={"pattern": _DATE.pattern},
    )
    window: Annotated[str, BeforeValidator(_window)] = Field(
        DEFAULT_WINDOW, description="HH:MM-HH:MM, the local hours a push may go at"
    )
    fallback: Annotated[str, BeforeValidator(_clock_text)] | None = Field(
        None,
        description="HH:MM, inside the window: for subscribers with fewer than 3 interactions "
        "in 90 days (default: the window's middle)",
    )
    late: Late = Field(
        "skip",
        description="Where a subscriber's moment has passed when the campaign is created: skip "
        "(missed_local_time) or send at once",
    )


@dataclass(frozen=True)
class Optimal:
    """A checked ``send_at.optimal``."""

    day: date
    window: Window
    fallback_s: int  # seconds after local midnight

    @classmethod
    def of(cls, spec: OptimalMoment) -> Optimal:
        window = parse_window(spec.window)
        if spec.fallback is None:
            # The window's middle, on the minute.
            end = window.end or DAY_S  # 24:00
            fallback = (window.start + (end - window.start) // 2) // 60 * 60
        else:
            h, m = spec.fallback.split(":")
            fallback = int(h) * HOUR_S + int(m) * 60
        return cls(spec.optimal, window, fallback)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Optimal:
        """As stored in campaigns.optimal (see :meth:`as_json`)."""
        h, m = str(value["fallback"]).split(":")
        return cls(
            date.fromisoformat(value["date"]),
            parse_window(value["window"]),
            int(h) * HOUR_S + int(m) * 60,
        )

    def as_json(self) -> dict[str, str]:
        return {"date": self.day.isoformat(), "window": self.window.text, "fallback": self.clock}

    @property
    def clock(self) -> str:
        return f"{self.fallback_s // HOUR_S:02d}:{self.fallback_s % HOUR_S // 60:02d}"

    @property
    def fallback_hour(self) -> int:
        return self.fallback_s // HOUR_S

    @property
    def fallback_minute(self) -> int:
        """Minutes after local midnight: how the fan-out groups the fallback's subscribers."""
        return self.fallback_s // 60

    @property
    def fallback_moment(self) -> datetime:
        """The fallback as a naive local date and time (the campaign's send_local)."""
        return datetime.combine(self.day, time()) + timedelta(seconds=self.fallback_s)

    @property
    def first_utc(self) -> datetime:
        """Local midnight of the day as UTC wall-clock time (for the earliest zone, subtract
        the widest offset)."""
        return datetime.combine(self.day, time(), tzinfo=UTC)

    def allowed(self, quiet: Window | None) -> NDArray[np.bool_]:
        """The local hours whose start lies inside the window and outside quiet hours."""
        starts = [h * HOUR_S for h in range(24)]
        return np.array(
            [
                self.window.contains(s) and not (quiet is not None and quiet.contains(s))
                for s in starts
            ],
            dtype=bool,
        )

    def errors(self, quiet: Window | None) -> list[tuple[str, str]]:
        """What is wrong with the window and fallback together (and with the policy's quiet
        hours, when known): (field, message) pairs."""
        out: list[tuple[str, str]] = []
        if not self.window.contains(self.fallback_s):
            out.append(
                ("send_at.fallback", f"{self.clock} lies outside the window {self.window.text}")
            )
        if not self.allowed(None).any():
            out.append(("send_at.window", f"{self.window.text} holds no whole hour (HH:00)"))
        elif not self.allowed(quiet).any():
            assert quiet is not None
            out.append(
                (
                    "send_at.window",
                    f"{self.window.text} lies wholly inside the policy's quiet hours "
                    f"{quiet.text}: no hour is left to send at",
                )
            )
        return out


def schedule(hours: NDArray[np.int64], audience: int, fallback_hour: int) -> dict[str, Any]:
    """The plan's summary: ``personal`` (members with their own hour), ``fallback`` (the rest
    of the audience) and ``by_local_hour`` {"HH": n} (the fallback's members under its hour)."""
    chosen = hours[hours >= 0]
    personal = int(chosen.size)
    fallback = max(0, audience - personal)
    per_hour = np.bincount(chosen, minlength=24)
    per_hour[fallback_hour] += fallback
    return {
        "personal": personal,
        "fallback": fallback,
        "by_local_hour": {f"{h:02d}": int(n) for h, n in enumerate(per_hour) if n},
    }
