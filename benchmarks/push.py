"""Push sender benchmark (not a test), with its baselines measured in the same run.

A receiver in a separate process answers every POST with 201 on loopback, so the numbers are
the sender's own cost. By default it answers at once over plain http; ``--latency 0.05 --tls``
makes it a WAN-like push service: https with a certificate from a CA made at run time (trusted
through MOMENTCAST_PUSH_CA_FILE, NODE_EXTRA_CA_CERTS and REQUESTS_CA_BUNDLE), 50 ms before each
answer, keep-alive HTTP/1.1, any number of requests in flight. The same N messages are pushed:

  (a) the sender: claim from PostgreSQL, encrypt, POST, record outcomes (service.push), and
      its CPU per push (this process's CPU time while it sends: the receiver and PostgreSQL
      run in processes of their own);
  (b) the floor: the same N messages encrypted and POSTed by a minimal loop through the
      sender's HTTP client (service.push.client) with a cached VAPID header, no database;
  (c) the naive way: pywebpush.webpush() per message, in a loop as its users call it (new
      VAPID signature and a blocking requests call, one connection each), on a subsample,
      scaled to pushes/s;
  (d) with --node (on by default with --tls): the npm web-push library's sendNotification()
      with at most --node-concurrency in flight (benchmarks/webpush-node/send.mjs; its
      node_modules are installed with ``npm ci`` when missing).

    .venv/bin/python benchmarks/push.py [--messages 20000] [--naive 300] [--concurrency 128]
    .venv/bin/python benchmarks/push.py --tls --latency 0.05 --concurrency 512 --naive 40
    .venv/bin/python benchmarks/push.py --tls --latency 0.05 --concurrency 512 --naive 40 \
        --baseline-tree ../main --rounds 3

``--baseline-tree DIR`` also measures the sender of another checkout (e.g. a git worktree of
main) in the same run: case (a) of each tree in a child process of its own, alternated
``--rounds`` times against the same receiver and database, and prints both with the ratios.

Uses MOMENTCAST_BENCH_DATABASE_URL when set, else an embedded PostgreSQL in a temp dir.
Targets (one process): a >= 5000/s; at once on loopback a/b >= 0.8, a/c >= 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
# The checkout whose service package is measured: this one, or the baseline's (set by
# --baseline-tree for the child process that measures it).
TREE = Path(os.environ.get("MOMENTCAST_BENCH_TREE") or REPO)
sys.path.insert(0, str(TREE))

from service import tokens  # noqa: E402
from service.context import Context, Keys  # noqa: E402
from service.push import Sender  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store, migrations  # noqa: E402
from service.store.db import EmbeddedPostgres, create_pool  # noqa: E402
from service.testing import SAMPLE_PAYLOAD as PAYLOAD  # noqa: E402
from service.testing import CertificateFiles, make_keys, make_test_certificates  # noqa: E402
from service.webpush.base64url import b64url  # noqa: E402
from service.webpush.encryption import encrypt  # noqa: E402
from service.webpush.message import build_headers, render_payload  # noqa: E402
from service.webpush.vapid import VapidSigner, private_key_to_pem  # noqa: E402

NODE_DIR = REPO / "benchmarks" / "webpush-node"

RESPONSE = (
    b"HTTP/1.1 201 Created\r\nLocation: /m/1\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
)


class Receiver(asyncio.Protocol):
    """Minimal HTTP/1.1: read headers and Content-Length bytes, answer 201 after ``latency``
    seconds (without blocking: every connection may have a request waiting), keep alive."""

    def __init__(self, latency: float) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.latency = latency
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            if self.latency:
                self.loop.call_later(self.latency, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)


def _serve(sock: socket.socket, latency: float, tls: CertificateFiles | None) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        context = tls.server_context() if tls is not None else None
        server = await loop.create_server(
            lambda: Receiver(latency), sock=sock, ssl=context, backlog=4096
        )
        await server.serve_forever()

    asyncio.run(main())


def start_receiver(
    latency: float = 0.0, tls: CertificateFiles | None = None
) -> tuple[BaseProcess, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    proc = multiprocessing.get_context("fork").Process(
        target=_serve, args=(sock, latency, tls), daemon=True
    )
    proc.start()
    sock.close()
    return proc, port


async def insert_rows(pool: asyncpg.Pool, base: str, subscribers: int, n: int) -> list[Any]:
    await pool.execute("TRUNCATE events, deliveries, subscriptions RESTART IDENTITY CASCADE")
    subs = []
    for i in range(subscribers):
        _, p256dh, auth = make_keys()
        subs.append((f"{base}/push/{i}", p256dh, auth, secrets.token_bytes(32)))
    await pool.executemany(
        "INSERT INTO subscriptions (endpoint, p256dh, auth, token_hash) VALUES ($1, $2, $3, $4)",
        subs,
    )
    await pool.execute(
        "INSERT INTO deliveries (subscription_id, rule_id, variant, payload, ttl_s, topic,"
        " expires_at) SELECT s.id, 'lunch-nearby', 'a', $1::jsonb, 1200, 'lunch',"
        " now() + interval '20 minutes'"
        " FROM generate_series(1, $2) g JOIN (SELECT id, row_number() OVER () - 1 AS k"
        " FROM subscriptions) s ON s.k = g % $3",
        PAYLOAD,
        n,
        subscribers,
    )
    return subs


async def bench_sender(ctx: Context, n: int, lanes: int) -> tuple[float, float]:
    """Pushes/s and this process's CPU per push in microseconds."""
    async with Sender(ctx, batch_size=ctx.settings.sender_concurrency * 2) as sender:

        async def lane() -> None:
            while await sender.run_once():
                pass

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(lane() for _ in range(lanes)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    sent = await ctx.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
    assert sent == n, f"only {sent} of {n} sent"
    return n / elapsed, cpu / n * 1e6


async def bench_floor(
    ctx: Context,
    messages: list[tuple[str, str, str, bytes]],
    conc: int,
    tls: CertificateFiles | None,
) -> tuple[float, float]:
    """Pushes/s and CPU per push (us) of encrypt + POST through the sender's client."""
    from service.push.client import PushClient
    from service.webpush.endpoints import GuardedResolver, check_endpoint

    signer = VapidSigner(ctx.keys.vapid_private, ctx.settings.vapid_subject)
    client = PushClient(
        tls=tls.client_context() if tls is not None else ssl.create_default_context(),
        resolver=GuardedResolver(ctx.settings.push_hosts),
        connect_timeout=10.0,
        read_timeout=30.0,
        per_origin=conc,
    )
    gate = asyncio.Semaphore(conc)

    async def push(endpoint: str, p256dh: str, auth: str, plaintext: bytes) -> None:
        async with gate:
            target = check_endpoint(endpoint, ctx.settings.push_hosts)
            headers = build_headers(
                authorization=signer.authorization(target.origin), ttl=1200, topic="lunch"
            )
            body = encrypt(plaintext, p256dh, auth)
            answer = await client.post(target, headers, body)
            assert answer.status == 201, answer

    try:
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(push(*m) for m in messages))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await client.close()
    return len(messages) / elapsed, cpu / len(messages) * 1e6


def bench_naive(
    ctx: Context, messages: list[tuple[str, str, str, bytes]], tls: CertificateFiles | None
) -> float:
    from py_vapid import Vapid
    from pywebpush import webpush

    if tls is not None:
        # requests (under pywebpush) trusts the run's CA through its usual variable.
        os.environ["REQUESTS_CA_BUNDLE"] = str(tls.ca_file)
    key = Vapid.from_pem(private_key_to_pem(ctx.keys.vapid_private))
    started = time.perf_counter()
    for endpoint, p256dh, auth, plaintext in messages:
        resp = webpush(
            {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}},
            data=plaintext.decode(),
            vapid_private_key=key,
            vapid_claims={"sub": ctx.settings.vapid_subject},
            ttl=1200,
        )
        assert not isinstance(resp, str) and resp.status_code == 201
    return len(messages) / (time.perf_counter() - started)


def node_modules() -> None:
    """``npm ci`` in benchmarks/webpush-node when its dependencies are not installed yet."""
    if (NODE_DIR / "node_modules" / "web-push").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("--node needs node and npm (or pass --no-node)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True
    )


def bench_node(
    ctx: Context,
    messages: list[tuple[str, str, str, bytes]],
    conc: int,
    tls: CertificateFiles | None,
) -> float:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("--node needs node and npm (or pass --no-node)")
    private = ctx.keys.vapid_private.private_numbers().private_value.to_bytes(32, "big")
    job = {
        "vapid": {
            "subject": ctx.settings.vapid_subject,
            "public_key": ctx.keys.vapid_public_b64,
            "private_key": b64url(private),
        },
        "ttl": 1200,
        "concurrency": conc,
        "messages": [
            {"endpoint": e, "p256dh": p, "auth": a, "payload": plaintext.decode()}
            for e, p, a, plaintext in messages
        ],
    }
    env = dict(os.environ)
    if tls is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(tls.ca_file)
    done = subprocess.run(
        [node, str(NODE_DIR / "send.mjs")],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout)
    assert result["sent"] == len(messages), result
    return float(result["per_second"])


def bench_settings(dsn: str, data_dir: Path, ca_file: Path | None, concurrency: int) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        database_url=dsn,
        # The explicit entry a local receiver needs, as in the tests (https included).
        push_hosts=["http://127.0.0.1"],
        push_ca_file=ca_file,
        sender_concurrency=concurrency,
        public_url="https://momentcast.example.com",
    )


async def sender_only(dsn: str, args: argparse.Namespace) -> None:
    """The child of --baseline-tree: case (a) of TREE's sender, its figures as JSON."""
    ca_file = Path(args.ca_file) if args.ca_file else None
    settings = bench_settings(dsn, Path(args.data_dir), ca_file, args.concurrency)
    pool = await create_pool(dsn, min_size=2, max_size=10)
    try:
        ctx = Context(settings=settings, store=Store(pool), keys=Keys.load(settings))
        await insert_rows(pool, args.sender_only, args.subscribers, args.messages)
        per_second, cpu_us = await bench_sender(ctx, args.messages, args.lanes)
    finally:
        await pool.close()
    print(json.dumps({"per_second": per_second, "cpu_us": cpu_us}))


def sender_in_child(
    tree: Path, dsn: str, base: str, data_dir: Path, tls: CertificateFiles | None, args: Any
) -> tuple[float, float]:
    """Case (a) with the service package of ``tree``, in a process of its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--sender-only", base]
    command += ["--data-dir", str(data_dir), "--loop", args.loop]
    command += ["--messages", str(args.messages), "--subscribers", str(args.subscribers)]
    command += ["--concurrency", str(args.concurrency), "--lanes", str(args.lanes)]
    if tls is not None:
        command += ["--ca-file", str(tls.ca_file)]
    env = {**os.environ, "MOMENTCAST_BENCH_TREE": str(tree), "MOMENTCAST_BENCH_DATABASE_URL": dsn}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"the sender of {tree} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["per_second"]), float(result["cpu_us"])


def compare_trees(
    dsn: str, base: str, data_dir: Path, tls: CertificateFiles | None, args: argparse.Namespace
) -> None:
    """(a) of this tree and of --baseline-tree, alternated, same receiver and database."""
    baseline = Path(args.baseline_tree).resolve()
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        theirs.append(sender_in_child(baseline, dsn, base, data_dir, tls, args))
        ours.append(sender_in_child(REPO, dsn, base, data_dir, tls, args))
    print(f"sender of this tree vs {baseline}, alternated, {args.rounds} rounds:")
    for n, ((a, a_cpu), (z, z_cpu)) in enumerate(zip(ours, theirs, strict=True), 1):
        print(
            f"  round {n}: this {a:7.0f} pushes/s {a_cpu:5.0f} us CPU/push | baseline"
            f" {z:7.0f} pushes/s {z_cpu:5.0f} us CPU/push | pushes/s x{a / z:.2f},"
            f" CPU/push x{a_cpu / z_cpu:.2f}"
        )
    a = sum(r for r, _ in ours) / len(ours)
    z = sum(r for r, _ in theirs) / len(theirs)
    a_cpu = sum(c for _, c in ours) / len(ours)
    z_cpu = sum(c for _, c in theirs) / len(theirs)
    print(
        f"mean: this {a:.0f} pushes/s at {a_cpu:.0f} us CPU/push, baseline {z:.0f} pushes/s"
        f" at {z_cpu:.0f} us CPU/push: pushes/s x{a / z:.2f}, CPU/push x{a_cpu / z_cpu:.2f}"
    )
    print(f"CPU per push <= 250 us: {'yes' if a_cpu <= 250 else 'no'}")
    print(f"pushes/s >= 1.3x the baseline's: {'yes' if a >= 1.3 * z else 'no'}")


def rendered(ctx: Context, rows: list[Any]) -> list[tuple[str, str, str, bytes]]:
    """What the sender pushed for ``rows``: same subscribers, same rendered payloads."""
    base_url = ctx.settings.base_url
    events_url = base_url + "/v1/events"
    return [
        (
            r["endpoint"],
            r["p256dh"],
            r["auth"],
            render_payload(
                PAYLOAD,
                {
                    "delivery_id": r["id"],
                    "rule": "lunch-nearby",
                    "variant": "a",
                    "events_url": events_url,
                    "event_token": tokens.event_token(ctx.keys.secret_key, r["id"]),
                },
                base_url=base_url,
            ),
        )
        for r in rows
    ]


async def run(dsn: str, data_dir: Path, args: argparse.Namespace) -> None:
    await migrations.migrate(dsn)
    tls = make_test_certificates(data_dir / "tls") if args.tls else None
    if args.node:
        node_modules()
    receiver, port = start_receiver(args.latency, tls)
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    where = "https (run-time CA)" if tls else "plain http"
    print(
        f"messages: {args.messages} to {args.subscribers} subscribers, cpus: {os.cpu_count()}, "
        f"receiver: {where}, {args.latency * 1000:.0f} ms per answer, "
        f"concurrency {args.concurrency}, loop {args.loop}",
        flush=True,
    )
    pool = await create_pool(dsn, min_size=2, max_size=10)
    try:
        if args.baseline_tree:
            await asyncio.to_thread(compare_trees, dsn, base, data_dir, tls, args)
        settings = bench_settings(
            dsn, data_dir, tls.ca_file if tls is not None else None, args.concurrency
        )
        ctx = Context(settings=settings, store=Store(pool), keys=Keys.load(settings))
        subs = await insert_rows(pool, base, args.subscribers, args.messages)

        a, a_cpu = await bench_sender(ctx, args.messages, args.lanes)

        # The floor pushes what the sender pushed: same subscribers, same rendered payloads.
        rows = await pool.fetch(
            "SELECT d.id, s.endpoint, s.p256dh, s.auth FROM deliveries d"
            " JOIN subscriptions s ON s.id = d.subscription_id ORDER BY d.id"
        )
        messages = rendered(ctx, list(rows))
        b, b_cpu = await bench_floor(ctx, messages, args.concurrency, tls)
        c = await asyncio.to_thread(bench_naive, ctx, messages[: args.naive], tls)
        d = None
        if args.node:
            d = await asyncio.to_thread(bench_node, ctx, messages, args.node_concurrency, tls)
        assert len(subs) == args.subscribers
    finally:
        await pool.close()
        receiver.kill()

    print(f"(a) sender (PostgreSQL claim + encrypt + POST + record): {a:9.0f} pushes/s")
    print(f"(b) floor (encrypt + POST, the sender's client, cached VAPID): {b:9.0f} pushes/s")
    print(f"(c) pywebpush webpush() in a loop ({args.naive} sampled):   {c:9.1f} pushes/s")
    if d is not None:
        print(
            f"(d) npm web-push sendNotification(), {args.node_concurrency} in flight:"
            f" {d:9.0f} pushes/s"
        )
    print(f"a/b = {a / b:.2f}")
    print(f"a/c = {a / c:.1f}")
    if d is not None:
        print(f"a/d = {a / d:.2f}")
    print(f"CPU per push of this process: (a) {a_cpu:.0f} us, (b) {b_cpu:.0f} us")
    print(f"a >= 5000/s: {'yes' if a >= 5000 else 'no'}")


async def main(args: argparse.Namespace) -> None:
    if args.sender_only:
        await sender_only(os.environ["MOMENTCAST_BENCH_DATABASE_URL"], args)
        return
    with tempfile.TemporaryDirectory(prefix="mc-bench-push-") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        dsn = os.environ.get("MOMENTCAST_BENCH_DATABASE_URL")
        embedded = None
        if not dsn:
            embedded = EmbeddedPostgres(root / "pg")
            dsn = embedded.start()
        try:
            await run(dsn, root / "data", args)
        finally:
            if embedded is not None:
                embedded.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--tls", action="store_true", help="https with a run-time CA")
    parser.add_argument(
        "--node",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="baseline (d), npm web-push (default: with --tls)",
    )
    parser.add_argument("--node-concurrency", type=int, default=None, help="default --concurrency")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the event loop of the sender and the floor (serve and worker run uvloop)",
    )
    parser.add_argument(
        "--baseline-tree", help="also measure the sender of this checkout (e.g. main's)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternations for --baseline-tree")
    # The child process of --baseline-tree: the receiver's base URL, and where things are.
    parser.add_argument("--sender-only", metavar="BASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node is None:
        args.node = args.tls
    if args.node_concurrency is None:
        args.node_concurrency = args.concurrency
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.loop == "uvloop":
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
