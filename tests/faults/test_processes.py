"""`momentcast serve --processes N`: real processes sharing one port through SO_REUSEPORT.

Exactly one push per signal and per campaign member across the children; a child killed stops
the group with a non-zero exit and one log line; Ctrl-C stops every child and the embedded
PostgreSQL; `auto` follows the CPU affinity."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest

from service import supervisor
from service.testing import BrowserSubscription, PushService
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.faults.conftest import Proc, Stack
from tests.processes import REPO, http_get, start, wait_ready
from tests.security.logscan import Watch
from tests.worker.conftest import CAFE_A

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_METRICS = re.compile(r"^metrics on (http://\S+) \(process (\d+)\)$")
_SIGNAL_REQUESTS = re.compile(
    r'^momentcast_http_requests_total\{method="POST",route="/v1/signals",status="202"\} (\S+)$',
    re.M,
)
# Generous: two processes start on a machine that other test sessions load.
DEADLINE_S = 90


def _children(proc: Proc | psutil.Process) -> list[psutil.Process]:
    parent = proc if isinstance(proc, psutil.Process) else psutil.Process(proc.sp.proc.pid)
    return [c for c in parent.children() if "--child" in c.cmdline()]


def _gone(pid: int, timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def _logged(proc: Proc, text: str, count: int) -> list[str]:
    """The lines of ``proc``'s stderr holding ``text``, once ``count`` of them were read (the
    stream is drained by a thread, which may lag behind the process's exit)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in proc.err if text in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def _signal_requests(metrics_url: str) -> int:
    status, text = http_get(metrics_url)
    assert status == 200, text
    found = _SIGNAL_REQUESTS.search(text)
    return int(float(found.group(1))) if found else 0


async def _register(http: aiohttp.ClientSession, url: str, sub: BrowserSubscription) -> str:
    body = {"subscription": sub.to_json(), "location_consent": True}
    async with http.post(url + "/v1/subscriptions", json=body) as r:
        assert r.status == 201, await r.text()
        token: str = (await r.json())["token"]
        return token


async def _until(pool: asyncpg.Pool, sql: str, proc: Proc) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await pool.fetchval(sql):
        assert proc.alive(), proc.stderr()
        assert time.monotonic() < deadline, (
            f"not true after {DEADLINE_S}s: {sql}\n" + (proc.stderr()[-3000:])
        )
        await asyncio.sleep(0.2)


async def test_two_processes_send_exactly_one_push_per_signal_and_campaign_member(
    stack: Stack, clean_db: asyncpg.Pool, log_privacy: Watch
) -> None:
    pool = clean_db
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        serve = stack.start("serve", "--processes", "2", MOMENTCAST_METRICS_PORT="0")
        assert len(_children(serve)) == 2
        metrics = [_METRICS.match(line) for line in serve.sp.stdout_lines]
        metrics_urls = [m.group(1) for m in metrics if m]
        assert len(metrics_urls) == 2, serve.sp.stdout_lines
        walkers = [push.subscribe() for _ in range(30)]
        members = [push.subscribe() for _ in range(20)]
        # A fresh connection per request, so that the kernel picks a child for each.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            tokens = [await _register(http, serve.url, sub) for sub in walkers + members]
            for token in tokens:
                log_privacy.remember(token)
            for token in tokens[: len(walkers)]:
                async with http.post(
                    serve.url + "/v1/signals",
                    json={"lat": CAFE_A[0], "lon": CAFE_A[1], "accuracy_m": 5},
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    assert r.status == 202, await r.text()
            await pool.execute(
                "UPDATE subscriptions SET topics = '{food}' WHERE endpoint = ANY($1::text[])",
                [sub.endpoint for sub in members],
            )
            campaign = {
                "id": "flash",
                "audience": {"topics": ["food"]},
                "message": {"title": "Flash sale"},
                "send_at": datetime.now(UTC).isoformat(),
                "ttl": "1h",
            }
            async with http.post(serve.url + "/v1/campaigns", json=campaign, headers=ADMIN) as r:
                assert r.status == 201, await r.text()
        await _until(pool, "SELECT count(*) = 50 FROM deliveries WHERE status = 'sent'", serve)
        await asyncio.sleep(2)  # a second push would be sent by now
        # SO_REUSEPORT spread the connections: both children took signals.
        per_child = [_signal_requests(url) for url in metrics_urls]
        assert sum(per_child) == len(walkers) and min(per_child) > 0, per_child
        assert serve.stop(signal.SIGTERM) == 0, serve.stderr()
    finally:
        await push.close()
    received = Counter(sub.id for sub in walkers + members for _ in sub.received)
    assert received == Counter({sub.id: 1 for sub in walkers + members})
    titles = Counter(m["notification"]["title"] for sub in members for m in sub.messages())
    assert titles == Counter({"Flash sale": len(members)})
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 50
    stack.check_logs(log_privacy.secrets)


async def test_a_child_killed_stops_the_group_with_an_error_and_one_line(
    stack: Stack, clean_db: asyncpg.Pool
) -> None:
    serve = stack.start("serve", "--processes", "2")
    first, second = sorted(_children(serve), key=lambda c: c.cmdline()[-1])
    second.kill()
    code = serve.sp.proc.wait(DEADLINE_S)
    assert code == 1, serve.stderr()
    assert _gone(first.pid), "the other child outlived its group"
    killed = _logged(serve, "was killed by", 1)
    assert len(killed) == 1, serve.stderr()
    assert killed[0].endswith(
        f"process 1 (pid {second.pid}) was killed by SIGKILL; stopping the other processes"
    ), killed


def test_ctrl_c_stops_every_child_and_the_embedded_postgres(short_tmp: Path) -> None:
    data = short_tmp / "data"
    serve = Proc(
        start(
            ["serve", "--processes", "2"],
            {
                "MOMENTCAST_DATA_DIR": str(data),
                "MOMENTCAST_PORT": "0",
                "MOMENTCAST_RULES_DIR": str(REPO / "rules"),
            },
        )
    )
    try:
        serve.sp.wait_banner(DEADLINE_S)
        assert serve.sp.url is not None
        wait_ready(serve.sp.url, DEADLINE_S)
        children = _children(serve)
        assert len(children) == 2
        postmaster = int((data / "pg" / "postmaster.pid").read_text().split()[0])
        # One embedded server for the group, started by the parent.
        assert [line for line in serve.sp.stdout_lines if "processes)" in line], (
            serve.sp.stdout_lines
        )
        serve.sp.proc.send_signal(signal.SIGINT)
        code = serve.sp.proc.wait(DEADLINE_S)
    finally:
        if serve.alive():
            serve.sp.proc.kill()
    assert code == 0, serve.stderr()
    assert all(_gone(child.pid) for child in children)
    assert _gone(postmaster), "the embedded PostgreSQL outlived Ctrl-C"
    assert not (data / "pg" / "postmaster.pid").exists()
    stopping = _logged(serve, "momentcast stopping: SIGINT", 3)
    assert len(stopping) == 3, serve.err  # the parent and each child


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two usable cores",
)
async def test_auto_starts_one_process_per_usable_core(
    stack: Stack, clean_db: asyncpg.Pool
) -> None:
    taskset = shutil.which("taskset")
    if taskset is None:
        pytest.skip("no taskset")
    cores = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0))[:2])
    sp = start(
        ["serve"],
        stack.env(MOMENTCAST_PROCESSES="auto"),
        executable=(taskset, "-c", cores, sys.executable, "-m", "service"),
    )
    serve = Proc(sp)
    stack.procs.append(serve)
    serve.sp.wait_banner(DEADLINE_S)
    assert any(line.endswith("(2 processes)") for line in serve.sp.stdout_lines)
    assert len(_children(psutil.Process(sp.proc.pid))) == 2
    assert serve.stop(signal.SIGTERM) == 0, serve.stderr()


async def test_more_connections_than_the_server_allows_are_warned_of_before_the_start(
    short_tmp: Path, database_url: str, clean_db: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(short_tmp / "data", database_url)
    await supervisor.prepare(settings, database_url, 1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The server allows 100 or so: 200 processes of 10 + 3 connections are too many.
    await supervisor.prepare(settings, database_url, 200)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith(
        "200 processes may open 2600 database connections (MOMENTCAST_DB_POOL_MAX 10 + 3 for "
        "LISTEN each) and the server allows "
    ), warning


async def test_a_rule_set_with_errors_stops_the_group_with_exit_2(
    stack: Stack, clean_db: asyncpg.Pool
) -> None:
    (stack.rules / "broken.yaml").write_text("priority: [1, 2\n")
    serve = start(["serve", "--processes", "2"], stack.env())
    _, err = serve.proc.communicate(timeout=DEADLINE_S)
    assert serve.proc.returncode == 2, err
    errors = [line for line in err.splitlines() if "configuration error" in line]
    assert errors and all("MOMENTCAST_RULES_DIR: " in line for line in errors), err
    stopped = [line for line in err.splitlines() if "service.supervisor" in line]
    assert len(stopped) == 1 and "exited with code 2" in stopped[0], err
