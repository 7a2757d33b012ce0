"""benchmarks/push.py still runs against the WAN-like receiver: https on a CA made at run time,
50 ms per answer, and every baseline it prints. Nothing here is timed."""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from tests.processes import run_benchmark


@pytest.mark.slow
async def test_push_benchmark_over_tls_prints_every_figure_and_ratio(database_url: str) -> None:
    # The npm baseline needs node and npm (the benchmark runs `npm ci` when it must).
    node = shutil.which("node") is not None and shutil.which("npm") is not None
    args = ["--tls", "--latency", "0.05", "--messages", "600", "--subscribers", "50"]
    args += ["--naive", "3", "--concurrency", "64", "--node" if node else "--no-node"]
    # database_url: a fresh database of the session's.
    done = await asyncio.to_thread(
        run_benchmark, "push.py", *args, database_url=database_url, timeout=300
    )
    out = done.stdout
    assert "receiver: https (run-time CA), 50 ms per answer" in out, out
    for case in ("(a) sender", "(b) floor", "(c) pywebpush") + (
        ("(d) npm web-push",) if node else ()
    ):
        assert re.search(rf"^{re.escape(case)}.*\s\d+(\.\d+)? pushes/s$", out, re.MULTILINE), out
    for ratio in ("a/b", "a/c") + (("a/d",) if node else ()):
        assert re.search(rf"^{ratio} = \d+\.\d+", out, re.MULTILINE), out
    assert re.search(r"^a >= 5000/s: (yes|no)$", out, re.MULTILINE), out
