"""Campaign delivery benchmark (not a test): an instant campaign to N subscribers, from
``POST /v1/campaigns`` to the last push received, through ``momentcast serve`` with 1 and
(where the option exists) ``--processes 2``, against the floor loop in the same run.

    .venv/bin/python benchmarks/campaign_delivery.py [--subscribers 100000] [--processes 1,2]
    .venv/bin/python benchmarks/campaign_delivery.py --quick     # a few seconds: the smoke run

Processes, all on loopback:

  * the receiver: a WAN-like push service in its own process (benchmarks/push.py's): https
    with a certificate from a CA made at run time (trusted through MOMENTCAST_PUSH_CA_FILE),
    201 after --latency seconds (50 ms), keep-alive, any number of requests in flight. It
    counts the pushes and stamps the last one (CLOCK_MONOTONIC, shared by the machine).
  * ``momentcast serve`` (API, worker, fan-out and sender), started as operators start it,
    once per --processes value; ``--processes N`` is passed only when N > 1, and a value is
    skipped with a message when this tree's serve has no such option.
  * PostgreSQL: MOMENTCAST_BENCH_DATABASE_URL or MOMENTCAST_DATABASE_URL names a server (a
    throwaway database is created on it), else an embedded one in a temporary directory.

Each case: the outbox emptied, serve started, ``POST /v1/campaigns`` (an instant campaign to
the topic every subscriber has, no caps, no quiet hours), then the time until the receiver
got the last of the N pushes; pushes/s is N over that time, CPU per push is the serve
processes' CPU (utime + stime, each process of the group) over the same window divided by N.

The baseline, the floor: the same N rendered payloads (those the first case stored), encrypted
and POSTed to the same receiver by a bare loop through the sender's HTTP client with a cached
VAPID header, --concurrency in flight, in this process; no database, no fan-out, no outbox.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import psutil  # noqa: E402

from benchmarks.benchdb import bench_database  # noqa: E402
from benchmarks.push import Receiver, bench_floor  # noqa: E402
from service import tokens  # noqa: E402
from service.context import Context, Keys  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store, migrations  # noqa: E402
from service.store.db import create_pool  # noqa: E402
from service.testing import CertificateFiles, make_keys, make_test_certificates  # noqa: E402
from service.webpush.message import render_payload  # noqa: E402
from service.webpush.vapid import generate_private_key, private_key_to_b64url  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-" + "x" * 16
SUBJECT = "mailto:bench@momentcast.example.com"
POLICY = "stale_after: 7d\nhysteresis_m: 30\n"
# serve needs a rule set to start its fan-out (the policy comes with it); this rule never fires.
RULE = """\
description: a rule set for the policy; no signal is sent
trigger: inside
where: {places: places/p.geojson, radius_m: 50}
message: {title: "x", body: "y", ttl: 20m}
"""
PLACES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"id": "p", "name": "P"},
            "geometry": {"type": "Point", "coordinates": [13.4, 52.5]},
        }
    ],
}
KEY_PAIRS = 1000  # subscribers share key pairs in turn: generating 100k takes long
READY_TIMEOUT = 120.0


# --- the receiver process ------------------------------------------------------------------


class CountingReceiver(Receiver):
    """benchmarks/push.py's receiver, counting answers and stamping the last one."""

    count: Synchronized[int]
    last: Synchronized[float]

    def _answer(self) -> None:
        super()._answer()
        self.count.value += 1
        self.last.value = time.monotonic()


def _serve_receiver(
    sock: socket.socket,
    latency: float,
    tls: CertificateFiles,
    count: Synchronized[int],
    last: Synchronized[float],
) -> None:
    CountingReceiver.count, CountingReceiver.last = count, last

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: CountingReceiver(latency), sock=sock, ssl=tls.server_context(), backlog=4096
        )
        await server.serve_forever()

    asyncio.run(main())


@dataclass
class ReceiverProcess:
    proc: multiprocessing.process.BaseProcess
    port: int
    count: Synchronized[int]
    last: Synchronized[float]

    @classmethod
    def start(cls, latency: float, tls: CertificateFiles) -> ReceiverProcess:
        ctx = multiprocessing.get_context("fork")
        count, last = ctx.Value("q", 0, lock=False), ctx.Value("d", 0.0, lock=False)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        port = sock.getsockname()[1]
        proc = ctx.Process(
            target=_serve_receiver, args=(sock, latency, tls, count, last), daemon=True
        )
        proc.start()
        sock.close()
        return cls(proc, port, count, last)

    def reset(self) -> None:
        self.count.value, self.last.value = 0, 0.0


# --- serve ---------------------------------------------------------------------------------


def serve_has_processes() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return "--processes" in done.stdout


class Serve:
    """``momentcast serve [--processes N]`` as a real process group; output to files."""

    def __init__(self, env: dict[str, str], tmp: Path, processes: int) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTCAST_")}
        full_env.update(env)
        self.stdout_path = tmp / f"serve-{processes}.stdout"
        self.stderr_path = tmp / f"serve-{processes}.stderr"
        extra = ["--processes", str(processes)] if processes > 1 else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", *extra],
            env=full_env,
            cwd=REPO,
            stdout=self.stdout_path.open("w"),
            stderr=self.stderr_path.open("w"),
        )

    async def ready(self, http: aiohttp.ClientSession) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        url = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.stderr_path.read_text()[-3000:]}")
            for line in self.stdout_path.read_text().splitlines():
                # "momentcast listening on URL" (a group adds "(N processes)")
                if line.startswith("momentcast listening on "):
                    url = line.split()[3]
            if url:
                try:
                    async with http.get(f"{url}/v1/campaigns", headers=_admin()) as resp:
                        if resp.status == 200:
                            return url
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.2)
        raise RuntimeError("serve was not ready in time")

    def pids(self) -> list[int]:
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        except psutil.Error:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        seconds[pid] = times.user + times.system
    return seconds


# --- the cases -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    pushes: int
    seconds: float
    cpu_s: dict[int, float]  # per process (the floor: this process)

    @property
    def per_second(self) -> float:
        return self.pushes / self.seconds if self.seconds else 0.0

    def cpu_us(self) -> float:
        return sum(self.cpu_s.values()) / self.pushes * 1e6 if self.pushes else 0.0


async def insert_subscribers(pool: asyncpg.Pool, base: str, n: int) -> None:
    keys = [make_keys()[1:] for _ in range(min(n, KEY_PAIRS))]
    await pool.execute(
        """
        INSERT INTO subscriptions (endpoint, p256dh, auth, token_hash, topics)
        SELECT $1 || i, ($2::text[])[1 + i % cardinality($2::text[])],
               ($3::text[])[1 + i % cardinality($3::text[])], sha256(int8send(i)),
               ARRAY['news']
        FROM generate_series(1, $4) AS i
        """,
        f"{base}/push/",
        [p for p, _ in keys],
        [a for _, a in keys],
        n,
    )
    await pool.execute("VACUUM ANALYZE subscriptions")


async def reset_outbox(pool: asyncpg.Pool) -> None:
    for table in ("events", "deliveries", "campaign_suppressions", "campaigns"):
        await pool.execute(f"DELETE FROM {table}")
    await pool.execute("VACUUM ANALYZE deliveries")


def campaign(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "audience": {"topics": ["news"]},
        "message": {
            "title": "Breaking: the bridge reopens",
            "body": "Traffic flows again on the Oberbaum bridge from 18:00.",
            "url": "https://example.com/news/bridge",
        },
        "send_at": datetime.now(UTC).isoformat(),
        "ttl": "1h",
    }


async def run_serve(
    processes: int,
    env: dict[str, str],
    tmp: Path,
    receiver: ReceiverProcess,
    n: int,
    drain: float,
) -> Case:
    receiver.reset()
    serve = Serve(env, tmp, processes)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            url = await serve.ready(http)
            pids = serve.pids()
            before = cpu_by_pid(pids)
            started = time.monotonic()
            body = campaign(f"breaking-{processes}")
            async with http.post(f"{url}/v1/campaigns", json=body, headers=_admin()) as resp:
                answer = await resp.json()
                assert resp.status == 201, answer
            assert answer["audience"] == n, answer
            deadline = started + drain
            while receiver.count.value < n and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            after = cpu_by_pid(pids)
        got = int(receiver.count.value)
        seconds = (receiver.last.value or time.monotonic()) - started
        cpu = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
        return Case(f"serve, {processes} process{'es' if processes > 1 else ''}", got, seconds, cpu)
    finally:
        serve.stop()


async def floor_messages(ctx: Context) -> list[tuple[str, str, str, bytes]]:
    """The payloads the first case stored, rendered as the sender renders them."""
    rows = await ctx.pool.fetch(
        "SELECT d.id, d.campaign_id, d.variant, d.payload, s.endpoint, s.p256dh, s.auth"
        " FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id ORDER BY d.id"
    )
    base_url = ctx.settings.base_url
    messages = []
    for r in rows:
        payload = r["payload"] if isinstance(r["payload"], dict) else json.loads(r["payload"])
        data = {
            "delivery_id": r["id"],
            "campaign": r["campaign_id"],
            "variant": r["variant"],
            "events_url": base_url + "/v1/events",
            "event_token": tokens.event_token(ctx.keys.secret_key, r["id"]),
        }
        plaintext = render_payload(payload, data, base_url=base_url)
        messages.append((r["endpoint"], r["p256dh"], r["auth"], plaintext))
    return messages


async def run_floor(
    ctx: Context, receiver: ReceiverProcess, tls: CertificateFiles, conc: int
) -> Case:
    messages = await floor_messages(ctx)
    receiver.reset()
    cpu = time.process_time()
    started = time.monotonic()
    await bench_floor(ctx, messages, conc, tls)
    seconds = (receiver.last.value or time.monotonic()) - started
    cpu = time.process_time() - cpu
    return Case("floor (no database)", int(receiver.count.value), seconds, {0: cpu})


def report(cases: list[Case], n: int, skipped: list[str], args: argparse.Namespace) -> None:
    print(
        f"\n{n} subscribers, receiver: https (run-time CA), {args.latency * 1000:.0f} ms per"
        f" answer, SENDER_CONCURRENCY {args.concurrency}, cpus: {os.cpu_count()}"
    )
    print(f"{'case':<22} {'pushes':>7} {'to last push s':>14} {'pushes/s':>9} {'cpu us/push':>11}")
    for case in cases:
        print(
            f"{case.name:<22} {case.pushes:>7} {case.seconds:>14.2f} {case.per_second:>9.0f}"
            f" {case.cpu_us():>11.0f}"
        )
        if len(case.cpu_s) > 1:
            shares = ", ".join(f"{s / case.pushes * 1e6:.0f}" for s in case.cpu_s.values())
            print(f"  cpu us/push by process (pid order): {shares}")
    for line in skipped:
        print(line)
    floor = next((c for c in cases if c.name.startswith("floor")), None)
    if floor is not None:
        for case in cases:
            if case is not floor and floor.per_second:
                print(
                    f"{case.name} / floor: pushes/s x{case.per_second / floor.per_second:.2f},"
                    f" CPU per push x{case.cpu_us() / floor.cpu_us():.2f}"
                )
    lost = [c.name for c in cases if c.pushes < n]
    print(f"every push received: {'yes' if not lost else 'NO (' + ', '.join(lost) + ')'}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="mc-bench-campaign-") as name:
        tmp = Path(name)
        rules = tmp / "rules"
        (rules / "places").mkdir(parents=True)
        (rules / "places" / "p.geojson").write_text(json.dumps(PLACES))
        (rules / "policy.yaml").write_text(POLICY)
        (rules / "news.yaml").write_text(RULE)
        tls = make_test_certificates(tmp / "tls")
        receiver = ReceiverProcess.start(args.latency, tls)
        base = f"https://127.0.0.1:{receiver.port}"
        try:
            async with bench_database(tmp, "momentcast_campaign_delivery") as database:
                await measure(args, tmp, rules, tls, receiver, base, database.dsn)
        finally:
            receiver.proc.kill()


async def measure(
    args: argparse.Namespace,
    tmp: Path,
    rules: Path,
    tls: CertificateFiles,
    receiver: ReceiverProcess,
    base: str,
    dsn: str,
) -> None:
    await migrations.migrate(dsn)
    vapid = generate_private_key()
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
        "MOMENTCAST_PUSH_CA_FILE": str(tls.ca_file),
        "MOMENTCAST_SENDER_CONCURRENCY": str(args.concurrency),
        "MOMENTCAST_PUBLIC_URL": "https://momentcast.example.com",
    }
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp / "data",
        database_url=dsn,
        vapid_private_key=env["MOMENTCAST_VAPID_PRIVATE_KEY"],
        vapid_subject=SUBJECT,
        push_hosts=["http://127.0.0.1"],
        public_url=env["MOMENTCAST_PUBLIC_URL"],
    )
    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        ctx = Context(settings=settings, store=Store(pool), keys=Keys.load(settings))
        started = time.perf_counter()
        await insert_subscribers(pool, base, args.subscribers)
        print(f"{args.subscribers} subscribers ({time.perf_counter() - started:.1f} s)", flush=True)
        print(f"load average at start: {_load()}", flush=True)
        has_option = serve_has_processes()
        cases: list[Case] = []
        skipped: list[str] = []
        for processes in args.processes:
            if processes > 1 and not has_option:
                skipped.append(
                    f"serve, {processes} processes: skipped (this tree's `momentcast serve`"
                    " has no --processes option)"
                )
                continue
            await reset_outbox(pool)
            case = await run_serve(processes, env, tmp, receiver, args.subscribers, args.drain)
            cases.append(case)
            print(f"  {case.name}: {case.pushes} pushes in {case.seconds:.1f} s", flush=True)
            if len(cases) == 1:
                floor = await run_floor(ctx, receiver, tls, args.concurrency)
                cases.append(floor)
                print(f"  {floor.name}: {floor.pushes} in {floor.seconds:.1f} s", flush=True)
        await reset_outbox(pool)
    finally:
        await pool.close()
    print(f"load average at the end: {_load()} (other work on the machine included)")
    report(cases, args.subscribers, skipped, args)


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument(
        "--processes", default="1,2", help="serve's process counts, comma-separated"
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before each answer")
    parser.add_argument("--concurrency", type=int, default=512, help="SENDER_CONCURRENCY")
    parser.add_argument("--drain", type=float, default=900, help="max seconds per case")
    parser.add_argument("--quick", action="store_true", help="2,000 subscribers: the smoke run")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.concurrency, args.drain = 2000, 128, 120.0
    args.processes = [int(p) for p in str(args.processes).split(",") if p.strip()]
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
