"""benchmarks/push.py still runs against the WAN-like receiver: https on a CA made at run time,
50 ms per answer, and every baseline it prints. Nothing here is timed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.processes import REPO


@pytest.mark.slow
async def test_push_benchmark_over_tls_prints_every_figure_and_ratio(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTCAST_")}
    env["MOMENTCAST_BENCH_DATABASE_URL"] = database_url  # a fresh database of the session's
    # The npm baseline needs node and npm (the benchmark runs `npm ci` when it must).
    node = shutil.which("node") is not None and shutil.which("npm") is not None
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "push.py"),
        "--tls",
        "--latency",
        "0.05",
        "--messages",
        "600",
        "--subscribers",
        "50",
        "--naive",
        "3",
        "--concurrency",
        "64",
        "--node" if node else "--no-node",
    ]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "receiver: https (run-time CA), 50 ms per answer" in out, out
    for case in ("(a) sender", "(b) floor", "(c) pywebpush") + (
        ("(d) npm web-push",) if node else ()
    ):
        assert re.search(rf"^{re.escape(case)}.*\s\d+(\.\d+)? pushes/s$", out, re.MULTILINE), out
    for ratio in ("a/b", "a/c") + (("a/d",) if node else ()):
        assert re.search(rf"^{ratio} = \d+\.\d+", out, re.MULTILINE), out
    assert re.search(r"^a >= 5000/s: (yes|no)$", out, re.MULTILINE), out
