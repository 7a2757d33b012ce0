"""Rule files, places, local time and the vectorised evaluation core."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .core import Evaluation, Match, evaluate
from .holder import RulesHolder
from .loader import MAX_PAYLOAD_BYTES, RuleLoadError, load_ruleset
from .models import json_schema
from .ruleset import CompiledRule, Ruleset
from .signals import Profile, Signal, SignalBatch


def simulate(
    ruleset: Ruleset, signal: Signal, profile: Profile, now: datetime | None = None
) -> dict[str, Any]:
    """Explain one signal (POST /v1/simulate); see service.engine.simulate."""
    # Imported here: the engine builds on this package, not the other way round.
    from service.engine import simulate as run

    return run(ruleset, signal, profile, now)


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "CompiledRule",
    "Evaluation",
    "Match",
    "Profile",
    "RuleLoadError",
    "RulesHolder",
    "Ruleset",
    "Signal",
    "SignalBatch",
    "evaluate",
    "json_schema",
    "load_ruleset",
    "simulate",
]
