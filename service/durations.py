"""The one duration grammar of rule files and settings: a whole number and a unit.

Units are ``s``, ``m``, ``h``, ``d`` and ``w`` (``30s``, ``20m``, ``2h``, ``7d``, ``1w``); blanks
around the number and the unit are ignored. Rule files take exactly that, and more than zero:
``ttl: 30`` (30 what?) and a zero ttl, dwell or gap are mistakes there. Settings also take a
plain number of seconds (``90``) and zero, as they always did. Pure: no I/O.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# The rule-file form, also written into the JSON Schema for editors.
DURATION_PATTERN: Final = r"^\s*\d+\s*[smhdw]\s*$"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


def _seconds(text: str, *, unit_required: bool) -> int | None:
    match = _DURATION.match(text)
    if match is None or (unit_required and not match.group(2)):
        return None
    return int(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]


def parse_duration(value: object) -> timedelta:
    """A rule file's duration: text with a unit, longer than zero."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"duration must be text such as 30s, 20m, 2h or 7d, not {value!r}")
    seconds = _seconds(value, unit_required=True)
    if seconds is None:
        raise ValueError(
            f"bad duration {value!r}: use a number and a unit s, m, h, d or w (30s, 20m, 2h, 7d)"
        )
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be longer than zero")
    return _timedelta(seconds, value)


def parse_setting_duration(value: object) -> timedelta:
    """A setting's duration: the rule-file form or a plain number of seconds, zero included."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _timedelta(float(value), value)
    seconds = _seconds(value, unit_required=False) if isinstance(value, str) else None
    if seconds is None:
        raise ValueError(
            f"expected a duration such as 30s, 20m, 2h or 7d, or a number of seconds, got {value!r}"
        )
    return _timedelta(seconds, value)


def _timedelta(seconds: float, value: object) -> timedelta:
    # timedelta raises OverflowError past 999,999,999 days, which validation would not
    # turn into a message: `ttl: 99999999999999d` must be an error at its line.
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {value!r} is too long") from None
