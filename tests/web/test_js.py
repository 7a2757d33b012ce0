"""Runs the JavaScript unit tests (tests/web/js/*.test.mjs) with node's built-in runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).parent / "js"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_sdk_and_service_worker_unit_tests() -> None:
    files = sorted(str(p) for p in JS_DIR.glob("*.test.mjs"))
    assert len(files) >= 2
    result = subprocess.run(
        ["node", "--test", "--test-reporter=tap", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in summary, summary
