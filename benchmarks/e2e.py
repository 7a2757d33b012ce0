"""End-to-end benchmark (not a test): signal -> push through `momentcast serve`, against a floor.

Processes, all on loopback:

  * `momentcast serve` (API, worker and sender in one process), started as operators start
    it, against PostgreSQL: MOMENTCAST_BENCH_DATABASE_URL or MOMENTCAST_DATABASE_URL names a
    server, on which a throwaway database is created and dropped afterwards; without either,
    an embedded PostgreSQL in a temporary directory.
  * the receiver: the package's strict test push service in its own process. It checks the
    RFC 8030 headers and the VAPID token, decrypts every push (RFC 8291) with the browser-side
    key and timestamps it (CLOCK_MONOTONIC, which all processes of the machine share).
  * the floor, the baseline in the same run: a bare aiohttp process that parses the signal,
    encrypts one push (service.webpush.encryption.encrypt, a cached VAPID header) and POSTs it
    to the same receiver; no database, no rules, no outbox.
  * this process: registers N subscribers through the public API (with location consent),
    then, per rate, posts single signals at that fixed rate for --seconds, first to serve and
    then to the floor, each signal producing exactly one push (a place rule with trigger
    `inside`, no caps, no quiet hours, every signal within the place's radius).

Per rate and per target it reports signal -> push latency (from just before the POST to the
receiver's timestamp of the decrypted push; a push that never arrives counts as infinitely
late), the throughput sustained while posting (pushes received per second in the posting
window, after a short ramp), and CPU seconds per push of the target process (utime + stime),
of PostgreSQL (embedded only), of the receiver and of this process. Each phase is bounded:
posting for --seconds, then at most --drain seconds for the remaining pushes.

    .venv/bin/python benchmarks/e2e.py [--rates 50,250,500,800,1000] [--seconds 10]
    .venv/bin/python benchmarks/e2e.py --quick          # a few seconds: the smoke test's run
    .venv/bin/python benchmarks/e2e.py --profile        # and serve's CPU per push by stage

Targets (issue 13, this 2-core machine): CPU per push <= 0.8 ms and <= 3x the floor's;
p99 <= 100 ms at 250 pushes/s; >= 800 pushes/s sustained at p99 <= 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import psutil
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.webpush.vapid import (  # noqa: E402
    generate_private_key,
    parse_private_key,
    private_key_to_b64url,
    public_key_b64url,
)

PLACE = (52.52035, 13.4071)  # lat, lon
POLICY = "stale_after: 7d\nhysteresis_m: 30\n"
RULE = """\
description: every signal near the place pushes (no caps, no quiet hours)
priority: 5
trigger: inside
where: {places: places/cafe.geojson, radius_m: 300}
message:
  title: "Near {place.name}"
  body: "{place.name} is {distance_m} m away"
  url: "https://example.com/offers/{place.id}"
  ttl: 20m
"""
PLACES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"id": "cafe-1", "name": "Cafe Spreeblick"},
            "geometry": {"type": "Point", "coordinates": [PLACE[1], PLACE[0]]},
        }
    ],
}
ADMIN_TOKEN = "e2e-admin-token-" + "x" * 16
SUBJECT = "mailto:bench@momentcast.example.com"
READY_TIMEOUT = 120.0


def _percentile(ordered: list[float], total: int, p: float) -> float:
    """p-th percentile over ``total`` samples of which ``ordered`` arrived (the rest: inf)."""
    if total == 0:
        return math.nan
    index = min(total - 1, math.ceil(p / 100 * total) - 1)
    return ordered[index] if index < len(ordered) else math.inf


# --- the receiver process ------------------------------------------------------------------


def _push_service_class() -> Any:
    """The strict test push service, wherever the package keeps it (service.testing, or
    tests.pushservice before it moved there)."""
    for name in ("service.testing", "tests.pushservice"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if hasattr(module, "PushService"):
            return module.PushService
    raise RuntimeError("no strict test push service in service.testing or tests.pushservice")


def _delivery_id(message: dict[str, Any]) -> Any:
    """``data.delivery_id`` of a push, declarative (``notification.data``) or not (``data``)."""
    notification = message.get("notification")
    holder = notification if isinstance(notification, dict) else message
    return holder["data"]["delivery_id"]


async def receiver_main(args: argparse.Namespace) -> None:
    service = await _push_service_class()(args.vapid_public).start()
    subs = [service.subscribe() for _ in range(args.subscribers)]
    _reply({"origin": service.origin, "subscriptions": [s.to_json() for s in subs]})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).strip():
            if line == b"collect":
                got = []
                for sub in subs:
                    for r in sub.received:
                        got.append([_delivery_id(r.json()), r.at])
                    sub.received.clear()
                rejected = Counter(f"{status} {reason}" for status, reason in service.rejections)
                service.rejections.clear()
                _reply({"received": got, "rejected": dict(rejected)})
    finally:
        await service.close()


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# --- the floor process ---------------------------------------------------------------------


async def floor_main(args: argparse.Namespace) -> None:
    from service.webpush.encryption import encrypt
    from service.webpush.endpoints import origin
    from service.webpush.message import build_headers
    from service.webpush.vapid import VapidSigner

    config = json.loads(Path(args.config).read_text())
    subscribers: dict[str, dict[str, str]] = config["subscribers"]
    signer = VapidSigner(parse_private_key(config["vapid_private_key"]), SUBJECT)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    pending: set[asyncio.Task[None]] = set()
    sent = Counter[int]()

    async def push(sub: dict[str, str], seq: str, lat: float, lon: float) -> None:
        message = {
            "web_push": 8030,
            "notification": {
                "title": "Near Cafe Spreeblick",
                "body": f"Cafe Spreeblick is {round(abs(lat - PLACE[0]) * 111_320)} m away",
                "navigate": f"http://127.0.0.1/c/floor-{seq}/open?t=x",
                "lang": "en",
                "data": {
                    "delivery_id": f"floor-{seq}",
                    "rule": "near",
                    "variant": "",
                    "url": "https://example.com/offers/cafe-1",
                    "events_url": "http://127.0.0.1/v1/events",
                    "event_token": "x",
                },
            },
            "mutable": True,
        }
        plaintext = json.dumps(message, separators=(",", ":")).encode()
        body = encrypt(plaintext, sub["p256dh"], sub["auth"])
        headers = build_headers(
            authorization=signer.authorization(origin(sub["endpoint"])), ttl=1200
        )
        async with session.post(sub["endpoint"], data=body, headers=headers) as resp:
            await resp.read()
            sent[resp.status] += 1

    async def signals(request: web.Request) -> web.Response:
        sub = subscribers.get(request.headers.get("Authorization", "")[7:])
        if sub is None:
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        body = json.loads(await request.read())
        lat, lon = float(body["lat"]), float(body["lon"])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return web.json_response({"error": {"code": "invalid"}}, status=422)
        task = asyncio.create_task(push(sub, str(body["context"]["seq"]), lat, lon))
        pending.add(task)
        task.add_done_callback(pending.discard)
        return web.json_response({"accepted": 1}, status=202)

    app = web.Application()
    app.router.add_post("/v1/signals", signals)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    _reply({"url": f"http://127.0.0.1:{runner.addresses[0][1]}"})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await reader.read()  # until the benchmark closes stdin (or exits)
    finally:
        await runner.cleanup()
        await session.close()
        print(f"floor pushes by status: {dict(sent)}", file=sys.stderr)


# --- the benchmark process -----------------------------------------------------------------


@dataclass
class Helper:
    """A child process speaking JSON lines on stdin/stdout."""

    proc: asyncio.subprocess.Process
    stderr_path: Path

    @classmethod
    async def start(cls, role: str, tmp: Path, *extra: str) -> Helper:
        stderr_path = tmp / f"{role}.stderr"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            role,
            *extra,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_path.open("w"),
            limit=2**27,
        )
        return cls(proc, stderr_path)

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), READY_TIMEOUT)
        if not line:
            raise RuntimeError(f"helper exited: {self.stderr_path.read_text()[-2000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Serve:
    """`momentcast serve` as a real process; stdout and stderr go to files (never a full pipe)."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTCAST_")}
        full_env.update(env)
        self.stdout_path = tmp / "serve.stdout"
        self.stderr_path = tmp / "serve.stderr"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env=full_env,
            cwd=REPO,
            stdout=self.stdout_path.open("w"),
            stderr=self.stderr_path.open("w"),
        )
        self.url = ""

    async def ready(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.stderr_path.read_text()[-3000:]}")
            out = self.stdout_path.read_text()
            if "admin token:" in out:
                for line in out.splitlines():
                    if line.startswith("momentcast listening on "):
                        self.url = line.split()[-1]
                        return self.url
            await asyncio.sleep(0.1)
        raise RuntimeError("serve printed no banner in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def runqueue_wait_seconds(pid: int) -> float:
    """Time the threads of ``pid`` were ready to run but waited for a CPU (/proc schedstat)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return math.nan
    return total / 1e9


async def wake_up_cpu_us(gap: float, n: int = 100) -> float:
    """CPU microseconds this process spends per wake-up of its event loop after ``gap``
    seconds asleep, with nothing else to do: what every wait of a stage for the network or
    the database costs on top of the work once the process goes idle between requests."""
    schedstat = Path("/proc/self/schedstat")
    if not schedstat.exists():
        return math.nan
    before = int(schedstat.read_text().split()[0])
    for _ in range(n):
        await asyncio.sleep(gap)
    return (int(schedstat.read_text().split()[0]) - before) / n / 1000


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process)."""
    t = psutil.cpu_times()
    extra = ("irq", "softirq", "steal")  # Linux; guest time is already inside user and nice
    return float(t.user + t.nice + t.system + sum(getattr(t, name, 0.0) for name in extra))


class PostgresCpu:
    """CPU of an embedded PostgreSQL: the postmaster and all its children (backends included)."""

    def __init__(self, pgdata: Path | None) -> None:
        self.postmaster: psutil.Process | None = None
        if pgdata is not None:
            pid = int((pgdata / "postmaster.pid").read_text().split()[0])
            self.postmaster = psutil.Process(pid)

    def seconds(self) -> float:
        if self.postmaster is None:
            return math.nan
        procs = [self.postmaster, *self.postmaster.children(recursive=True)]
        return cpu_seconds([p.pid for p in procs])


@dataclass
class Phase:
    target: str
    rate: int
    seconds: float
    posted: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    post_rate: float = 0.0
    pushes: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    sustained: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    # CPU the rest of the machine used meanwhile (other people's work), in cores.
    others_cores: float = 0.0
    # Share of the phase the target was ready to run but waited for a core.
    target_waited: float = 0.0
    # PostgreSQL transactions committed or rolled back in the database, per push.
    xacts: float = math.nan
    # With --profile: py-spy's samples of the target by pipeline stage (see stage_of).
    stages: Counter[str] = field(default_factory=Counter)
    # momentcast: the worker's batches (one processed_at each) and the sender's records (one
    # finished_at each) that the phase's pushes went through: how well wake-ups coalesce.
    worker_batches: int = 0
    sender_batches: int = 0

    def p(self, q: float) -> float:
        return _percentile(self.latencies_ms, self.posted, q)

    @property
    def lost(self) -> int:
        return self.posted - self.pushes

    def cpu_ms(self, who: str) -> float:
        return self.cpu.get(who, math.nan) / self.pushes * 1000 if self.pushes else math.nan


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time, Content-Length bodies."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.answer is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:  # every answer of both targets has one; anything else ends the connection
            self.answer.set_exception(ConnectionError("answer without Content-Length"))
            assert self.transport is not None
            self.transport.close()
            return
        length = int(head[at + 15 :].split(b"\r\n", 1)[0])
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        if b"connection: close" in head:
            self.closed = True
        self.answer.set_result(int(head[9:12]))

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.answer


class RawClient:
    """The load generator's HTTP client: prebuilt requests on a pool of keep-alive connections.

    An aiohttp ClientSession costs this process about 0.4 ms of CPU per request; this costs a
    fraction of that, which leaves the shared cores to the processes being measured.
    """

    def __init__(self, url: str, limit: int = 256) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.host, self.port = parts.hostname, parts.port
        self.idle: list[_HttpConnection] = []
        self.open = 0
        self.limit = limit
        self.freed = asyncio.Condition()

    def signal_request(self, token: str, body: bytes) -> bytes:
        head = (
            f"POST /v1/signals HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(self, data: bytes, timeout: float = 60.0) -> int:
        conn = await self._acquire()
        try:
            status = await asyncio.wait_for(conn.request(data), timeout)
        except BaseException:
            conn.closed = True
            raise
        finally:
            await self._release(conn)
        return status

    async def _acquire(self) -> _HttpConnection:
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self.open -= 1
            if self.open < self.limit:
                self.open += 1
                try:
                    _, conn = await asyncio.get_running_loop().create_connection(
                        _HttpConnection, self.host, self.port
                    )
                except BaseException:
                    self.open -= 1
                    raise
                return conn
            async with self.freed:
                await self.freed.wait()

    async def _release(self, conn: _HttpConnection) -> None:
        if conn.closed:
            self.open -= 1
            if conn.transport is not None:
                conn.transport.close()
        else:
            self.idle.append(conn)
        async with self.freed:
            self.freed.notify()

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


@dataclass
class Bench:
    args: argparse.Namespace
    clients: dict[str, RawClient]
    receiver: Helper
    db: asyncpg.Connection
    tokens: list[str]
    targets: dict[str, tuple[str, int]]  # name -> (url, pid)
    pg: PostgresCpu
    seq: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(13))
    rejected: Counter[str] = field(default_factory=Counter)  # by the receiver, this phase

    def _body(self, seq: int) -> bytes:
        lat = PLACE[0] + self.rng.uniform(-50, 50) / 111_320
        lon = PLACE[1] + self.rng.uniform(-50, 50) / 68_000
        signal_ = {"lat": lat, "lon": lon, "accuracy_m": 10, "context": {"seq": str(seq)}}
        return json.dumps(signal_).encode()

    async def _collect(self) -> list[list[Any]]:
        answer = await self.receiver.ask("collect")
        self.rejected.update(answer["rejected"])
        got: list[list[Any]] = answer["received"]
        return got

    async def _xacts(self) -> int:
        count: int = await self.db.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        return count

    def _ours(self) -> float:
        """CPU seconds of every process of the benchmark (PostgreSQL when it is embedded)."""
        pids = [pid for _, pid in self.targets.values()] + [self.receiver.proc.pid, os.getpid()]
        pg = self.pg.seconds()
        return cpu_seconds(pids) + (0.0 if math.isnan(pg) else pg)

    async def settle(self, pid: int, limit: float = 60.0) -> None:
        """Wait until the target is idle (what a phase left behind is done), within limit."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = cpu_seconds([pid])
            await asyncio.sleep(0.5)
            if cpu_seconds([pid]) - before < 0.05:
                return

    async def phase(self, target: str, rate: int, seconds: float) -> Phase:
        _, pid = self.targets[target]
        await self.settle(pid)
        await self._collect()  # pushes a previous phase left behind are not this phase's
        self.rejected = Counter()
        result = Phase(target, rate, seconds)
        posted: dict[str, float] = {}
        n = max(1, int(rate * seconds))
        client = self.clients[target]
        requests = []
        for i in range(n):
            self.seq += 1
            token = self.tokens[i % len(self.tokens)]
            requests.append((self.seq, client.signal_request(token, self._body(self.seq))))
        who = {
            "target": [pid],
            "receiver": [self.receiver.proc.pid],
            "generator": [os.getpid()],
        }
        cpu0 = {name: cpu_seconds(pids) for name, pids in who.items()}
        pg0 = self.pg.seconds()
        ours0, busy0, wall0 = self._ours(), machine_busy_seconds(), time.monotonic()
        waited0 = runqueue_wait_seconds(pid)
        xacts0 = await self._xacts()
        profiler = profile_path = None
        if self.args.profile_tool and target == "momentcast":
            profile_path = self.args.profile / f"serve-{rate}.txt"
            profiler = await asyncio.create_subprocess_exec(
                self.args.profile_tool,
                *("record", "--pid", str(pid), "--duration", str(math.ceil(seconds))),
                *("--rate", "100", "--nonblocking", "--format", "raw"),
                *("--output", str(profile_path)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        async def post(seq: int, request: bytes) -> None:
            sent_at = time.monotonic()
            try:
                status = await client.send(request)
            except (OSError, TimeoutError) as exc:
                result.failed[type(exc).__name__] += 1
                return
            if status == 202:
                posted[str(seq)] = sent_at
            else:
                result.failed[str(status)] += 1

        tasks = []
        t0 = time.monotonic()
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(*requests[i])))
        result.post_rate = n / max(1e-9, time.monotonic() - t0)
        await asyncio.gather(*tasks)
        result.posted = len(posted)
        if profiler is not None and profile_path is not None:
            await profiler.wait()
            result.stages = read_profile(profile_path)

        received: list[list[Any]] = []
        deadline = time.monotonic() + self.args.drain
        while True:
            received += await self._collect()
            mine = sum(1 for r in received if isinstance(r[0], int) == (target == "momentcast"))
            if mine >= result.posted or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        result.cpu = {name: cpu_seconds(pids) - cpu0[name] for name, pids in who.items()}
        result.cpu["postgres"] = self.pg.seconds() - pg0
        ours = self._ours() - ours0
        wall = time.monotonic() - wall0
        result.others_cores = (machine_busy_seconds() - busy0 - ours) / wall
        result.target_waited = (runqueue_wait_seconds(pid) - waited0) / wall
        if target == "momentcast":
            await asyncio.sleep(1.2)  # backends report their counters when idle, <= 1/s
            result.xacts = await self._xacts() - xacts0 - 1
        result.rejected = self.rejected

        if target == "momentcast":
            ids = [r[0] for r in received if isinstance(r[0], int)]
            rows = await self.db.fetch(
                "SELECT d.id, s.context->>'seq' AS seq, s.processed_at, d.finished_at"
                " FROM deliveries d JOIN signals s ON s.id = d.signal_id"
                " WHERE d.id = ANY($1::bigint[])",
                ids,
            )
            seq_of = {r["id"]: r["seq"] for r in rows}
            # now() is one per transaction: each batch stamps its rows with one value.
            result.worker_batches = len({r["processed_at"] for r in rows})
            result.sender_batches = len({r["finished_at"] for r in rows})
            arrivals = [(seq_of.get(r[0]), r[1]) for r in received if isinstance(r[0], int)]
        else:
            arrivals = [
                (r[0].removeprefix("floor-"), r[1])
                for r in received
                if isinstance(r[0], str) and r[0].startswith("floor-")
            ]
        seen: set[str] = set()
        window = (t0 + min(1.0, seconds / 5), t0 + seconds)
        in_window = 0
        for seq, at in arrivals:
            if seq is None or seq not in posted or seq in seen:
                continue
            seen.add(seq)
            result.latencies_ms.append((at - posted[seq]) * 1000)
            if window[0] <= at <= window[1]:
                in_window += 1
        result.pushes = len(seen)
        result.latencies_ms.sort()
        result.sustained = in_window / (window[1] - window[0])
        return result


# Which stage of the pipeline a sampled stack is working for: the first of these files it
# passes through from its root (the event loop runs every stage's tasks, so the coroutine at
# the bottom of the stack names its stage; the database calls a stage makes count as its).
STAGES = (
    ("API", ("service/api/", "aiohttp/web_")),
    ("ingest writer", ("service/ingest.py",)),
    ("worker", ("service/worker.py", "service/rules/")),
    ("sender", ("service/push/", "service/webpush/", "aiohttp/client", "aiohttp/connector")),
)
# The event loop itself (its wake-ups too) and the callbacks of asyncpg and asyncio.
OTHER_STAGE = "loop and driver"


def stage_of(stack: str) -> str:
    for frame in stack.split(";"):
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                return stage
    return OTHER_STAGE


def read_profile(path: Path) -> Counter[str]:
    """Samples by stage from py-spy's raw (collapsed stack) output. py-spy samples a thread
    only while the kernel runs it, so the shares are shares of CPU time; samples in the
    loop's poll (``selectors`` on asyncio, ``Runner.run`` on uvloop, whose loop is C) are the
    CPU of waking up from it, which is most of the loop's share at low rates."""
    stages: Counter[str] = Counter()
    if not path.exists():
        return stages
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stages[stage_of(stack)] += int(count)
    return stages


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


def _ms(value: float) -> str:
    if math.isinf(value):
        return "lost"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def print_table(phases: list[Phase], embedded: bool) -> None:
    head = (
        f"{'target':<10} {'rate/s':>6} {'posted':>7} {'pushes':>7} {'lost':>5} {'p50 ms':>7}"
        f" {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'pushes/s':>8} {'cpu ms/push':>11}"
        f" {'pg ms/push':>10} {'xact/push':>9} {'recv ms':>7} {'gen ms':>6} {'others':>6}"
        f" {'waited':>6}"
    )
    print(head)
    for ph in phases:
        pg = f"{ph.cpu_ms('postgres'):.2f}" if embedded else "n/a"
        worst = ph.latencies_ms[-1] if ph.latencies_ms else math.nan
        xacts = "-" if math.isnan(ph.xacts) else f"{ph.xacts / max(1, ph.pushes):.2f}"
        print(
            f"{ph.target:<10} {ph.rate:>6} {ph.posted:>7} {ph.pushes:>7} {ph.lost:>5}"
            f" {_ms(ph.p(50)):>7} {_ms(ph.p(90)):>7} {_ms(ph.p(99)):>7} {_ms(worst):>7}"
            f" {ph.sustained:>8.0f} {ph.cpu_ms('target'):>11.3f} {pg:>10} {xacts:>9}"
            f" {ph.cpu_ms('receiver'):>7.3f} {ph.cpu_ms('generator'):>6.3f}"
            f" {max(0.0, ph.others_cores):>6.2f} {ph.target_waited:>6.0%}"
        )
        extra = []
        if ph.failed:
            extra.append(f"failed posts {dict(ph.failed)}")
        if ph.rejected:
            extra.append(f"receiver rejected {dict(ph.rejected)}")
        if ph.post_rate < ph.rate * 0.95:
            extra.append(f"generator reached only {ph.post_rate:.0f} posts/s")
        if extra:
            print(f"{'':<10}   ^ " + "; ".join(extra))


LEGEND = """\
latency: from just before the POST to the receiver's timestamp of the decrypted push;
pushes/s: received per second while posting (after a ramp of min(1 s, seconds/5));
cpu ms/push: the target process (serve, or the floor); pg, recv, gen: PostgreSQL, the
receiver, this load generator; xact/push: PostgreSQL transactions of the database per push;
others: cores the rest of the machine kept busy meanwhile;
waited: share of the phase the target was ready to run but waited for a core."""


def print_stages(phases: list[Phase]) -> None:
    profiled = [ph for ph in phases if ph.stages]
    if not profiled:
        return
    names = [stage for stage, _ in STAGES] + [OTHER_STAGE]
    print("\nCPU per push of serve by stage (py-spy samples while posting), ms (share):")
    print(f"{'rate/s':>6} {'samples':>7} " + " ".join(f"{n:>17}" for n in names))
    for ph in profiled:
        total = sum(ph.stages.values())
        cells = [
            f"{ph.cpu_ms('target') * ph.stages[n] / total:.3f} ({ph.stages[n] / total:>4.0%})"
            for n in names
        ]
        print(f"{ph.rate:>6} {total:>7} " + " ".join(f"{c:>17}" for c in cells))


def print_verdicts(phases: list[Phase]) -> None:
    mc = {ph.rate: ph for ph in phases if ph.target == "momentcast"}
    fl = {ph.rate: ph for ph in phases if ph.target == "floor"}
    print("\nCPU per push, momentcast serve / floor (same rate, same run):")
    ratios = {}
    for rate, ph in mc.items():
        if rate in fl:
            ratios[rate] = ph.cpu_ms("target") / fl[rate].cpu_ms("target")
            print(
                f"  {rate:>5}/s: {ph.cpu_ms('target'):.3f} ms / {fl[rate].cpu_ms('target'):.3f} ms"
                f" = {ratios[rate]:.1f}x"
            )
    print("\ntargets (issue 13):")

    def by_rate(passed: dict[int, bool]) -> str:
        met = [f"{r}/s" for r, ok in passed.items() if ok]
        missed = [f"{r}/s" for r, ok in passed.items() if not ok]
        if not passed:
            return "not measured"
        if not missed:
            return "met at every rate"
        return f"met at {', '.join(met)}; not met at {', '.join(missed)}" if met else "not met"

    cpu = {rate: ph.cpu_ms("target") for rate, ph in mc.items()}
    print(f"  CPU per push <= 0.8 ms: {by_rate({r: v <= 0.8 for r, v in cpu.items()})}")
    print(f"  CPU per push <= 3x floor: {by_rate({r: v <= 3 for r, v in ratios.items()})}")
    if 250 in mc:
        p99 = mc[250].p(99)
        print(f"  p99 <= 100 ms at 250/s: {'met' if p99 <= 100 else 'not met'} ({_ms(p99)} ms)")
    else:
        print("  p99 <= 100 ms at 250/s: not measured (250 not among --rates)")
    good = [ph for ph in mc.values() if ph.p(99) <= 250]
    best = max(good, key=lambda ph: ph.sustained, default=None)
    verdict = "met" if best is not None and best.sustained >= 800 else "not met"
    detail = (
        f"best at p99 <= 250 ms: {best.sustained:.0f} pushes/s at {best.rate}/s"
        if best is not None
        else "no rate kept p99 <= 250 ms"
    )
    print(f"  >= 800 pushes/s sustained at p99 <= 250 ms: {verdict} ({detail})")


async def register(http: aiohttp.ClientSession, url: str, subs: list[dict[str, Any]]) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(sub: dict[str, Any]) -> str:
        async with (
            gate,
            http.post(
                url + "/v1/subscriptions", json={"subscription": sub, "location_consent": True}
            ) as resp,
        ):
            body = await resp.json()
            assert resp.status == 201, body
            token: str = body["token"]
            return token

    return list(await asyncio.gather(*(one(s) for s in subs)))


async def run(args: argparse.Namespace, tmp: Path) -> None:
    from benchmarks.benchdb import bench_database
    from service.store import migrations

    async with bench_database(tmp, "momentcast_e2e") as database:
        dsn, embedded = database.dsn, database.embedded
        serve = None
        helpers: list[Helper] = []
        try:
            await migrations.migrate(dsn)
            rules = tmp / "rules"
            (rules / "places").mkdir(parents=True)
            (rules / "places" / "cafe.geojson").write_text(json.dumps(PLACES))
            (rules / "policy.yaml").write_text(POLICY)
            (rules / "near.yaml").write_text(RULE)
            vapid = generate_private_key()
            receiver = await Helper.start(
                "receiver",
                tmp,
                "--subscribers",
                str(args.subscribers),
                "--vapid-public",
                public_key_b64url(vapid),
            )
            helpers.append(receiver)
            announced = await receiver.read()
            env = {
                "MOMENTCAST_DATABASE_URL": dsn,
                "MOMENTCAST_DATA_DIR": str(tmp / "data"),
                "MOMENTCAST_RULES_DIR": str(rules),
                "MOMENTCAST_HOST": "127.0.0.1",
                "MOMENTCAST_PORT": "0",
                "MOMENTCAST_LOG_LEVEL": "WARNING",
                "MOMENTCAST_ADMIN_TOKEN": ADMIN_TOKEN,
                "MOMENTCAST_VAPID_PRIVATE_KEY": private_key_to_b64url(vapid),
                "MOMENTCAST_VAPID_SUBJECT": SUBJECT,
                "MOMENTCAST_PUSH_HOSTS": "http://127.0.0.1",
                "MOMENTCAST_SIGNAL_RATE_BURST": "1000000",
                "MOMENTCAST_SIGNAL_RATE_PER_SECOND": "1000000",
            }
            for item in args.serve_env:
                name, _, value = item.partition("=")
                env[name if name.startswith("MOMENTCAST_") else "MOMENTCAST_" + name] = value
            serve = Serve(env, tmp)
            url = await serve.ready()
            connector = aiohttp.TCPConnector(limit=256)
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                tokens = await register(http, url, announced["subscriptions"])
                config = {
                    "vapid_private_key": private_key_to_b64url(vapid),
                    "subscribers": {
                        t: {"endpoint": s["endpoint"], **s["keys"]}
                        for t, s in zip(tokens, announced["subscriptions"], strict=True)
                    },
                }
                (tmp / "floor.json").write_text(json.dumps(config))
                floor = await Helper.start("floor", tmp, "--config", str(tmp / "floor.json"))
                helpers.append(floor)
                floor_url = (await floor.read())["url"]
                db = await asyncpg.connect(dsn)
                clients = {"momentcast": RawClient(url), "floor": RawClient(floor_url)}
                try:
                    bench = Bench(
                        args,
                        clients,
                        receiver,
                        db,
                        tokens,
                        {"momentcast": (url, serve.proc.pid), "floor": (floor_url, floor.proc.pid)},
                        PostgresCpu(embedded.pgdata if embedded is not None else None),
                    )
                    print(
                        f"momentcast serve pid {serve.proc.pid}, floor pid {floor.proc.pid},"
                        f" receiver pid {receiver.proc.pid}; {args.subscribers} subscribers;"
                        f" database {'embedded' if embedded else 'from the environment'}",
                        flush=True,
                    )
                    for target in args.targets:  # warm-up, not reported
                        await bench.phase(target, args.warmup_rate, args.warmup)
                    await bench.settle(serve.proc.pid)
                    idle0 = cpu_seconds([serve.proc.pid])
                    await asyncio.sleep(args.idle)
                    idle = (cpu_seconds([serve.proc.pid]) - idle0) / args.idle
                    print(f"serve at rest: {idle * 1000:.0f} ms of CPU per second", flush=True)
                    wakes = [
                        f"{await wake_up_cpu_us(gap):.0f} us after {gap * 1000:g} ms"
                        for gap in (0.001, 0.02)
                    ]
                    print(f"one wake-up of an idle event loop here: {', '.join(wakes)}", flush=True)
                    phases: list[Phase] = []
                    for rate in args.rates:
                        for target in args.targets:
                            ph = await bench.phase(target, rate, args.seconds)
                            phases.append(ph)
                            print(
                                f"  {target} at {rate}/s: {ph.pushes}/{ph.posted} pushes,"
                                f" p99 {_ms(ph.p(99))} ms{_coalescing(ph)}",
                                flush=True,
                            )
                finally:
                    for client in clients.values():
                        client.close()
                    await db.close()
        finally:
            for helper in helpers:
                await helper.stop()
            if serve is not None:
                serve.stop()
    print()
    print_table(phases, embedded is not None)
    print(LEGEND)
    print_stages(phases)
    print_verdicts(phases)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,250,500,800,1000", help="pushes/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10, help="posting time per rate")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--drain", type=float, default=60, help="max wait for late pushes")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target")
    parser.add_argument("--warmup-rate", type=int, default=50)
    parser.add_argument("--idle", type=float, default=5, help="seconds to measure serve at rest")
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for serve, e.g. WORKER_BATCH_SIZE=200 (repeatable)",
    )
    parser.add_argument(
        "--targets", default="momentcast,floor", help="which to run: momentcast, floor or both"
    )
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        metavar="DIR",
        help="sample serve with py-spy while posting; print its CPU per push by stage (and"
        " keep py-spy's raw stacks, serve-RATE.txt, in DIR if given)",
    )
    parser.add_argument("--role", choices=["receiver", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--vapid-public", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "receiver":
        await receiver_main(args)
        return
    if args.role == "floor":
        await floor_main(args)
        return
    if args.quick:
        args.rates, args.seconds, args.subscribers = "20,50", 2.0, 50
        args.drain, args.warmup, args.warmup_rate, args.idle = 30.0, 1.0, 20, 1.0
    args.rates = [int(r) for r in str(args.rates).split(",") if r.strip()]
    args.targets = [t for t in ("momentcast", "floor") if t in args.targets.split(",")]
    profiling = args.profile is not None
    args.profile_tool = py_spy() if profiling else None
    if profiling and args.profile_tool is None:
        parser.error("--profile needs py-spy (make venv installs it)")
    print(f"cpus: {os.cpu_count()}, load average at start: {_load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mc-bench-e2e-") as tmp:
        if profiling:
            args.profile = Path(args.profile or Path(tmp) / "profiles")
            args.profile.mkdir(parents=True, exist_ok=True)
        await run(args, Path(tmp))
    print(f"load average at the end: {_load()}")


def _coalescing(ph: Phase) -> str:
    if not ph.worker_batches or not ph.sender_batches:
        return ""
    return (
        f", {ph.pushes / ph.worker_batches:.1f} signals per worker batch,"
        f" {ph.pushes / ph.sender_batches:.1f} pushes per sender batch"
    )


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    asyncio.run(main())
