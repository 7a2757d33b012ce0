"""Signal ingest benchmark: durable 202 vs a bare aiohttp handler, same run, same machine.

    .venv/bin/python -m benchmarks.ingest [--duration 10] [--connections 64] [--dsn URL] [--ids]

Load generator: ``wrk`` (Debian package ``wrk``; ``apt-get install wrk``) on loopback, with a
Lua script that rotates over many device tokens. Each server is one process pinned to CPU 0,
wrk is pinned to CPU 1 (PostgreSQL floats). Without ``--dsn`` an embedded PostgreSQL is
started in a temporary directory, with its default durable settings (fsync on).

(a) ``POST /v1/signals`` with one signal: the real app, 202 only after the group COMMIT.
(b) a bare aiohttp handler that parses the same JSON with ``json.loads`` and answers 202.
(c) ``POST /v1/signals`` with 500-signal batches, reported in signals/s.

``--ids`` gives every signal of (a) and (c) a unique client ``id``, as the browser SDK does (the
server then checks each against the stored ones); (b) parses the same bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEVICES = 200
SIGNAL = {
    "lat": 52.52,
    "lon": 13.405,
    "accuracy_m": 12.0,
    "moment": "go",
    "context": {"screen": "map"},
}
BATCH = 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def _use_loop(loop: str) -> None:
    """Both servers run on the same event loop, so the ratio compares like with like."""
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- servers (run as child processes) --------------------------------------------------------


def serve_app(dsn: str, port: int, data_dir: str, loop: str) -> None:
    """(a) the real momentcast API, with rate limits out of the way."""
    from aiohttp import web

    from service.api import create_app
    from service.context import Context, Keys
    from service.settings import Settings
    from service.store import Store
    from service.store.db import create_pool

    _pin(0)
    _use_loop(loop)
    if "MC_BENCH_IN_FLIGHT" in os.environ:  # for tuning experiments only
        from service import ingest

        ingest.MAX_IN_FLIGHT = int(os.environ["MC_BENCH_IN_FLIGHT"])
    settings = Settings(
        _env_file=None,
        database_url=dsn,
        data_dir=Path(data_dir),  # type: ignore[call-arg]
        admin_token="bench-admin-token-" + "x" * 16,
        signal_rate_burst=10**9,
        signal_rate_per_second=10**9,
    )

    async def main() -> None:
        pool = await create_pool(dsn, min_size=2, max_size=4)
        ctx = Context(settings=settings, store=Store(pool), keys=Keys.load(settings))
        runner = web.AppRunner(create_app(ctx), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_bare(port: int, loop: str) -> None:
    """(b) the floor: parse the same JSON, answer 202, store nothing."""
    from aiohttp import web

    _pin(0)
    _use_loop(loop)

    async def handler(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        n = len(body["signals"]) if "signals" in body else 1
        return web.json_response({"accepted": n}, status=202)

    app = web.Application()
    app.router.add_post("/v1/signals", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=1024)


# --- load generation ------------------------------------------------------------------------

LUA = """
local tokens = {%(tokens)s}
local body = %(body)s
local run = "%(run)s"
local i = 0
request = function()
  i = i + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer " .. tokens[(i %% #tokens) + 1]
  -- With --ids the body holds @ID@ placeholders: a new id for each signal of each request.
  local b = body
  if %(ids)s then
    local k = 0
    b = body:gsub("@ID@", function() k = k + 1; return run .. "-" .. i .. "-" .. k end)
  end
  return wrk.format("POST", "/v1/signals", headers, b)
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def run_wrk(
    url: str, tokens: list[str], body: str, duration: int, connections: int, workdir: Path
) -> dict[str, float]:
    script = workdir / f"wrk-{time.monotonic_ns()}.lua"
    script.write_text(
        LUA
        % {
            "tokens": ", ".join(f'"{t}"' for t in tokens),
            "body": _lua_string(body),
            "run": time.monotonic_ns(),  # ids stay unique across the runs of one database
            "ids": "true" if "@ID@" in body else "false",
        }
    )
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        url + "/v1/signals",
    ]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "1", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return _parse_wrk(out)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _parse_wrk(out: str) -> dict[str, float]:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not m:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{out}")
        return float(m.group(1)) * _UNITS[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if not rps or not total:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "requests": float(total.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


# --- orchestration --------------------------------------------------------------------------


async def _prepare(dsn: str) -> list[str]:
    from service import tokens
    from service.store import migrations
    from service.store.db import connect

    await migrations.migrate(dsn)
    conn = await connect(dsn)
    try:
        await conn.execute("TRUNCATE signals, subscriptions CASCADE")
        device_tokens = [tokens.new_token() for _ in range(DEVICES)]
        await conn.executemany(
            # Location consent given: without it every located signal is a 403.
            "INSERT INTO subscriptions (endpoint, p256dh, auth, token_hash, consent_at) "
            "VALUES ($1, 'bench', 'bench', $2, now())",
            [
                (f"https://fcm.googleapis.com/fcm/send/bench-{i}", tokens.hash_token(t))
                for i, t in enumerate(device_tokens)
            ],
        )
    finally:
        await conn.close()
    return device_tokens


async def _count(dsn: str) -> int:
    from service.store.db import connect

    conn = await connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM signals"))
    finally:
        await conn.close()


def _start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.ingest", *args], cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server {args[0]} exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server {args[0]} did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench(
    dsn: str, duration: int, connections: int, workdir: Path, loop: str, ids: bool = False
) -> dict[str, Any]:
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    device_tokens = asyncio.run(_prepare(dsn))
    signal = {"id": "@ID@", **SIGNAL} if ids else SIGNAL
    single = json.dumps(signal)
    batch = json.dumps({"signals": [signal] * BATCH})
    results: dict[str, Any] = {}

    port = _free_port()
    bare = _start(["serve-bare", str(port), loop], port)
    try:
        run_wrk(f"http://127.0.0.1:{port}", device_tokens, single, 2, connections, workdir)
        results["bare"] = run_wrk(
            f"http://127.0.0.1:{port}", device_tokens, single, duration, connections, workdir
        )
    finally:
        _stop(bare)

    port = _free_port()
    app = _start(["serve-app", dsn, str(port), str(workdir / "data"), loop], port)
    try:
        run_wrk(f"http://127.0.0.1:{port}", device_tokens, single, 2, connections, workdir)
        before = asyncio.run(_count(dsn))
        results["durable"] = run_wrk(
            f"http://127.0.0.1:{port}", device_tokens, single, duration, connections, workdir
        )
        results["durable"]["rows"] = asyncio.run(_count(dsn)) - before
        before = asyncio.run(_count(dsn))
        results["batch"] = run_wrk(
            f"http://127.0.0.1:{port}",
            device_tokens,
            batch,
            duration,
            max(2, connections // 8),
            workdir,
        )
        results["batch"]["rows"] = asyncio.run(_count(dsn)) - before
    finally:
        _stop(app)
    return results


def report(
    results: dict[str, Any], duration: int, connections: int, loop: str, ids: bool = False
) -> None:
    bare, durable, batch = results["bare"], results["durable"], results["batch"]
    ratio = durable["rps"] / bare["rps"]
    signals_per_s = batch["rps"] * BATCH
    print(
        f"wrk -t1 -c{connections} -d{duration}s on loopback; servers pinned to CPU 0, "
        f"both on the {loop} event loop; "
        + ("a unique id in every signal" if ids else "signals without ids")
    )
    print(f"{'':34} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in (
        ("(a) POST /v1/signals, durable 202", durable),
        ("(b) bare aiohttp, json.loads, 202", bare),
    ):
        print(
            f"{name:34} {r['rps']:10.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8.0f}"
        )
    print(
        f"ratio a/b: {ratio:.2f}  (target >= 0.6); p99 (a): {durable['p99_ms']:.2f} ms "
        f"(target <= 20)"
    )
    print(
        f"(a) rows committed during the run: {durable['rows']:.0f} "
        f"(wrk counted {durable['requests']:.0f} answers)"
    )
    # Every 202 must be a stored row: rows can only exceed answers by what was in flight.
    for name, r, per in (("(a)", durable, 1), ("(c)", batch, BATCH)):
        if r["non_2xx"] or r["rows"] < r["requests"] * per:
            print(
                f"CHECK FAILED {name}: {r['non_2xx']:.0f} non-2xx answers, "
                f"{r['rows']:.0f} rows for {r['requests'] * per:.0f} accepted signals"
            )
    print(
        f"(c) batches of {BATCH}: {batch['rps']:.0f} req/s = {signals_per_s:,.0f} signals/s, "
        f"p50 {batch['p50_ms']:.1f} ms, p99 {batch['p99_ms']:.1f} ms, "
        f"non-2xx {batch['non_2xx']:.0f} (target >= 100,000 signals/s)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve-app":
        serve_app(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "serve-bare":
        serve_bare(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--dsn", help="PostgreSQL URL (default: a temporary embedded server)")
    parser.add_argument("--json", action="store_true", help="print raw figures as JSON")
    parser.add_argument(
        "--ids", action="store_true", help="a unique client id in every signal, as the SDK sends"
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="the event loop of both servers (default: uvloop, as momentcast api/serve run)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
        workdir = Path(tmp)
        embedded = None
        dsn = args.dsn
        if dsn is None:
            from service.store.db import EmbeddedPostgres

            embedded = EmbeddedPostgres(workdir / "pg")
            dsn = embedded.start()
        try:
            results = bench(dsn, args.duration, args.connections, workdir, args.loop, args.ids)
        finally:
            if embedded is not None:
                embedded.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    report(results, args.duration, args.connections, args.loop, args.ids)


if __name__ == "__main__":
    main()
