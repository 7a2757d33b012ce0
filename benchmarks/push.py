"""Push sender benchmark (not a test), with its baselines measured in the same run.

A receiver in a separate process answers every POST with 201 on loopback at once, so the
numbers are the sender's own cost. Three ways to push the same N messages:

  (a) the sender: claim from PostgreSQL, encrypt, POST, record outcomes (service.push);
  (b) the floor: the same N messages encrypted and POSTed by a minimal loop with one shared
      aiohttp session and a cached VAPID header, no database at all;
  (c) the naive way: pywebpush.webpush() per message (new VAPID signature and a blocking
      requests call each time), on a subsample, scaled to pushes/s.

    .venv/bin/python benchmarks/push.py [--messages 20000] [--naive 300] [--concurrency 128]

Uses MOMENTCAST_BENCH_DATABASE_URL when set, else an embedded PostgreSQL in a temp dir.
Targets (one core): a >= 5000/s, a/b >= 0.8, a/c >= 10.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service import tokens  # noqa: E402
from service.context import Context, Keys  # noqa: E402
from service.endpoints import origin  # noqa: E402
from service.push import Sender  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store, migrations  # noqa: E402
from service.store.db import EmbeddedPostgres, create_pool  # noqa: E402
from service.testing import SAMPLE_PAYLOAD as PAYLOAD  # noqa: E402
from service.testing import make_keys  # noqa: E402
from service.vapid import private_key_to_pem  # noqa: E402
from service.webpush import VapidSigner, build_headers, encrypt, render_payload  # noqa: E402

RESPONSE = (
    b"HTTP/1.1 201 Created\r\nLocation: /m/1\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
)


class _Receiver(asyncio.Protocol):
    """Minimal HTTP/1.1: read headers and Content-Length bytes, answer 201, keep alive."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

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
            assert self.transport is not None
            self.transport.write(RESPONSE)


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Receiver, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


def start_receiver() -> tuple[multiprocessing.Process, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    proc = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    proc.start()
    sock.close()
    return proc, port


async def insert_rows(pool: asyncpg.Pool, port: int, subscribers: int, n: int) -> list[Any]:
    await pool.execute("TRUNCATE events, deliveries, subscriptions RESTART IDENTITY CASCADE")
    subs = []
    for i in range(subscribers):
        _, p256dh, auth = make_keys()
        subs.append((f"http://127.0.0.1:{port}/push/{i}", p256dh, auth, secrets.token_bytes(32)))
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


async def bench_sender(ctx: Context, n: int, lanes: int) -> float:
    async with Sender(ctx, batch_size=ctx.settings.sender_concurrency * 2) as sender:

        async def lane() -> None:
            while await sender.run_once():
                pass

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(lanes)))
        elapsed = time.perf_counter() - started
    sent = await ctx.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
    assert sent == n, f"only {sent} of {n} sent"
    return n / elapsed


async def bench_floor(
    ctx: Context, messages: list[tuple[str, str, str, bytes]], conc: int
) -> float:
    signer = VapidSigner(ctx.keys.vapid_private, ctx.settings.vapid_subject)
    connector = aiohttp.TCPConnector(limit=conc)
    gate = asyncio.Semaphore(conc)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def push(endpoint: str, p256dh: str, auth: str, plaintext: bytes) -> None:
            async with gate:
                headers = build_headers(
                    authorization=signer.authorization(origin(endpoint)), ttl=1200, topic="lunch"
                )
                body = encrypt(plaintext, p256dh, auth)
                async with session.post(endpoint, data=body, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 201

        started = time.perf_counter()
        await asyncio.gather(*(push(*m) for m in messages))
        return len(messages) / (time.perf_counter() - started)


def bench_naive(ctx: Context, messages: list[tuple[str, str, str, bytes]]) -> float:
    from py_vapid import Vapid
    from pywebpush import webpush

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
        assert resp.status_code == 201  # type: ignore[union-attr]
    return len(messages) / (time.perf_counter() - started)


async def run(dsn: str, data_dir: Path, args: argparse.Namespace) -> None:
    await migrations.migrate(dsn)
    receiver, port = start_receiver()
    pool = await create_pool(dsn, min_size=2, max_size=10)
    try:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=data_dir,
            database_url=dsn,
            push_hosts=["http://127.0.0.1"],
            sender_concurrency=args.concurrency,
            public_url="https://momentcast.example.com",
        )
        ctx = Context(settings=settings, store=Store(pool), keys=Keys.load(settings))
        subs = await insert_rows(pool, port, args.subscribers, args.messages)

        a = await bench_sender(ctx, args.messages, args.lanes)

        # The floor pushes what the sender pushed: same subscribers, same rendered payloads.
        rows = await pool.fetch(
            "SELECT d.id, s.endpoint, s.p256dh, s.auth FROM deliveries d"
            " JOIN subscriptions s ON s.id = d.subscription_id ORDER BY d.id"
        )
        events_url = settings.base_url + "/v1/events"
        messages = [
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
                    base_url=settings.base_url,
                ),
            )
            for r in rows
        ]
        b = await bench_floor(ctx, messages, args.concurrency)
        c = await asyncio.to_thread(bench_naive, ctx, messages[: args.naive])
        assert len(subs) == args.subscribers
    finally:
        await pool.close()
        receiver.kill()

    print(f"messages: {args.messages} to {args.subscribers} subscribers, cpus: {os.cpu_count()}")
    print(f"(a) sender (PostgreSQL claim + encrypt + POST + record): {a:9.0f} pushes/s")
    print(f"(b) floor (encrypt + POST, shared session, cached VAPID): {b:9.0f} pushes/s")
    print(f"(c) pywebpush webpush() per message ({args.naive} sampled):  {c:9.0f} pushes/s")
    print(f"a/b = {a / b:.2f}   (target >= 0.8)")
    print(f"a/c = {a / c:.1f}   (target >= 10)")
    print(f"a >= 5000/s: {'yes' if a >= 5000 else 'no'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--lanes", type=int, default=4)
    args = parser.parse_args()
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


if __name__ == "__main__":
    asyncio.run(main())
