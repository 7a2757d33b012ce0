"""The benchmarks still run: each `--quick` variant finishes and prints its figures.

Nothing here is timed: the figures' values depend on the machine and are not asserted.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conftest import PgServer
from tests.processes import REPO, run_benchmark


@pytest.mark.slow
def test_e2e_quick_prints_the_figures_of_momentcast_and_the_floor(pg_server: PgServer) -> None:
    # The session's server: the benchmark creates its own database there and drops it.
    out = run_benchmark("e2e.py", "--quick", database_url=pg_server.admin_dsn, timeout=600).stdout
    assert "p50 ms" in out and "p99 ms" in out and "cpu ms/push" in out, out
    number = r"(?:\d+(?:\.\d+)?|lost)"
    for target in ("momentcast", "floor"):
        for rate in (20, 50):
            row = rf"^{target}\s+{rate}\s+\d+\s+\d+\s+\d+(?:\s+{number}){{4}}\s+\d+\s+\d+\.\d+"
            assert re.search(row, out, re.MULTILINE), f"no {target} row at {rate}/s:\n{out}"
    assert re.search(r"^\s+20/s: \d+\.\d+ ms / \d+\.\d+ ms = \d+\.\dx$", out, re.MULTILINE), out
    assert "CPU per push <= 0.8 ms: " in out and "CPU per push <= 3x floor: " in out
    assert ">= 800 pushes/s sustained at p99 <= 250 ms:" in out


@pytest.mark.slow
def test_campaigns_quick_prints_the_fan_out_against_its_baseline(pg_server: PgServer) -> None:
    done = run_benchmark("campaigns.py", "--quick", database_url=pg_server.admin_dsn, timeout=300)
    for case in ("baseline", "plain", "templated", "local", "experiment"):
        assert re.search(rf"^{case}\s+5000\s+\d+\s+\d+\.\d+", done.stdout, re.MULTILINE), (
            done.stdout
        )
    assert "fan-out of 100k subscribers <= 10 s: " in done.stdout


@pytest.mark.slow
async def test_pipeline_small_run_accepts_every_signal_and_decides(pg_server: PgServer) -> None:
    # Its own database: the benchmark empties the tables it fills.
    dsn = await pg_server.create_database()
    try:
        args = ("--signals", "2000", "--rate", "200", "--seconds", "1")
        done = await asyncio.to_thread(
            run_benchmark, "pipeline.py", *args, database_url=dsn, timeout=300
        )
    finally:
        await pg_server.drop_database(dsn)
    out = done.stdout
    worker = re.search(r"^worker, database in the loop: 2000 .* \((\d+) deliveries", out, re.M)
    engine = re.search(r"^baseline, pure engine in memory: .* \((\d+) decisions\)$", out, re.M)
    assert worker and engine and worker[1] == engine[1] and int(worker[1]) > 0, out
    assert re.search(r"^end to end: 200/200 signals accepted", out, re.MULTILINE), out
    assert re.search(r"^202 -> delivery row: p50 \d+\.\d ms", out, re.MULTILINE), out


@pytest.mark.slow
def test_campaign_delivery_quick_prints_serve_and_the_floor(pg_server: PgServer) -> None:
    # The session's server: the benchmark creates its own database there and drops it.
    done = run_benchmark(
        "campaign_delivery.py", "--quick", database_url=pg_server.admin_dsn, timeout=600
    )
    out = done.stdout
    for case in ("serve, 1 process", "floor (no database)"):
        assert re.search(rf"^{re.escape(case)}\s+2000\s+\d+\.\d+\s+\d+\s+\d+$", out, re.M), out
    # Two processes: measured where serve has --processes, else said to be skipped.
    assert re.search(r"^serve, 2 processes(\s+2000\s|: skipped)", out, re.MULTILINE), out
    assert "serve, 1 process / floor: pushes/s x" in out, out
    assert "every push received: yes" in out, out


@pytest.mark.slow
async def test_push_baseline_tree_measures_another_checkout_in_the_same_run(
    pg_server: PgServer,
) -> None:
    # This checkout stands in for the baseline's (a worktree of main in real use).
    dsn = await pg_server.create_database()
    try:
        args = ["--messages", "300", "--subscribers", "30", "--naive", "1", "--no-node"]
        args += ["--concurrency", "32", "--baseline-tree", str(REPO), "--rounds", "1"]
        done = await asyncio.to_thread(
            run_benchmark, "push.py", *args, database_url=dsn, timeout=300
        )
    finally:
        await pg_server.drop_database(dsn)
    out = done.stdout
    round_line = r"^  round 1: this +\d+ pushes/s +\d+ us CPU/push \| baseline +\d+ pushes/s"
    assert re.search(round_line, out, re.MULTILINE), out
    assert re.search(r"^mean: .* pushes/s x\d+\.\d\d, CPU/push x\d+\.\d\d$", out, re.M), out
    assert re.search(r"^CPU per push of this process: \(a\) \d+ us, \(b\) \d+ us$", out, re.M)


@pytest.mark.slow
def test_engagement_small_run_prints_every_figure_with_its_verdict(pg_server: PgServer) -> None:
    args = ("--subscribers", "1500", "--days", "7")
    out = run_benchmark(
        "engagement.py", *args, database_url=pg_server.admin_dsn, timeout=300
    ).stdout
    assert re.search(
        r"^1500 subscribers in \d+ zones, \d+ never engage; 7 days: \d+ pushes", out, re.M
    ), out
    for figure, target in (
        ("send time: share of oracle uplift", ">= 80 %"),
        ("variants: adaptive / fixed regret", "<= 0.30x"),
        ("fatigue: fewer pushes to never-engagers", ">= 60 %"),
        ("fatigue: interactions lost", "<= 5 %"),
    ):
        row = rf"^{re.escape(figure)}\s+-?\d+\.\d+ ?(?:%|x)\s+.*{re.escape(target)}\s+(PASS|MISS)$"
        assert re.search(row, out, re.MULTILINE), f"no row {figure!r}:\n{out}"
