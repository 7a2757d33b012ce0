"""The layers as a process sees them: importing the producer side loads nothing of the engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("shapely", "numpy", "tzfpy", "service.rules.engine", "service.rules.loader")


@pytest.mark.parametrize("module", ["service.ingest", "service.api"])
def test_importing_the_producer_side_loads_no_engine(module: str) -> None:
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == [], f"importing {module} loaded {out.stdout.strip()}"
