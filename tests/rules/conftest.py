"""Fixtures for the pure rules/engine tests (no database)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from service.rules import Ruleset, load_ruleset
from tests.rules.rulekit import POLICY, write_dir


@pytest.fixture
def make_rules(tmp_path: Path) -> Callable[..., Ruleset]:
    def make(
        rules: dict[str, str],
        policy: str = POLICY,
        places: dict[str, list[dict[str, object]]] | None = None,
    ) -> Ruleset:
        return load_ruleset(write_dir(tmp_path / "rules", rules, policy, places))

    return make
