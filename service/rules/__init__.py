"""Rule files, places, local time and the vectorised evaluation core."""

from __future__ import annotations

from service.errors import RuleLoadError

from .core import Evaluation, Match, evaluate
from .engine import simulate
from .loader import load_ruleset
from .models import json_schema
from .ruleset import CompiledRule, Ruleset
from .signals import Profile, Signal, SignalBatch

__all__ = [
    "CompiledRule",
    "Evaluation",
    "Match",
    "Profile",
    "RuleLoadError",
    "Ruleset",
    "Signal",
    "SignalBatch",
    "evaluate",
    "json_schema",
    "load_ruleset",
    "simulate",
]
