"""What the lost-connection fault tests share: a storm of ``pg_terminate_backend``, a TCP proxy
whose connections can be frozen (half-open), signal traffic through a real process, and the
exactly-once check from the signals to the push service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import asyncpg

from service.testing import PushService
from tests.factories import register_subscription
from tests.faults.conftest import Proc, Stack
from tests.worker.conftest import CAFE_A, CAFE_B, FAR, offset, write_rules

# Every signal inside a café pushes, whatever came before: what a test of "exactly one push
# per signal" needs (no caps, no presence, no quiet hours, nothing stale).
INSIDE = """
priority: 10
trigger: inside
where: {places: places/cafes.geojson, radius_m: 60}
message: {title: "At {place.name}", ttl: 1h}
"""
NO_LIMITS = "stale_after: 1d\nhysteresis_m: 30\n"

# The test's own connections carry this name and are spared by the storms.
TEST_APP = "momentcast-fault-test"


def inside_rules(stack: Stack) -> None:
    for old in stack.rules.glob("*.yaml"):
        old.unlink()
    write_rules(stack.rules, policy=NO_LIMITS, rules={"inside": INSIDE})


def with_app_name(dsn: str, name: str) -> str:
    """``dsn`` whose connections show as ``name`` in pg_stat_activity (asyncpg passes unknown
    DSN parameters on as server settings)."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={quote(name)}"


async def own_connection(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(with_app_name(dsn, TEST_APP))


async def terminate_backends(conn: asyncpg.Connection, app: str | None = None) -> int:
    """Terminate the client backends of this database (those named ``app``, or all but the
    test's own); return how many."""
    n: int = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'"
        " AND CASE WHEN $1::text IS NULL THEN application_name <> $2"
        " ELSE application_name = $1 END",
        app,
        TEST_APP,
    )
    return n


async def storm(dsn: str, stop: asyncio.Event, every_s: float = 0.3, app: str | None = None) -> int:
    """Terminate backends every ``every_s`` until ``stop``; return the total terminated."""
    conn = await own_connection(dsn)
    total = 0
    try:
        while not stop.is_set():
            total += await terminate_backends(conn, app)
            await asyncio.sleep(every_s)
    finally:
        await conn.close()
    return total


@dataclass
class _Pair:
    writers: list[asyncio.StreamWriter]
    frozen: bool = False


@dataclass
class FreezingProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL (a TCP address or a Unix socket).

    :meth:`freeze` makes every connection open at that moment half-open: the proxy keeps both
    sockets open and goes on reading, but forwards nothing either way, as a dead peer behind
    a NAT or a middlebox that lost its state looks to a client. Connections made after it are
    forwarded as usual (the database is fine; only those paths died)."""

    target: tuple[str, int] | str
    port: int = 0
    _server: asyncio.Server | None = None
    _pairs: list[_Pair] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def dsn(self, database_dsn: str) -> str:
        """``database_dsn`` pointed at this proxy."""
        parts = urlsplit(database_dsn)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return f"postgresql://{auth}127.0.0.1:{self.port}{parts.path}"

    def freeze(self) -> int:
        """Freeze the connections open now; return how many."""
        live = [pair for pair in self._pairs if not pair.frozen]
        for pair in live:
            pair.frozen = True
        return len(live)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if isinstance(self.target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = _Pair([writer, up_writer])
        self._pairs.append(pair)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(pair, src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, pair: _Pair, src: asyncio.StreamReader, dst: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                if not pair.frozen:
                    dst.write(data)
                    await dst.drain()
            if pair.frozen:
                return  # a half-open connection does not pass a close on either
        for w in pair.writers:
            w.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        writers = [w for pair in self._pairs for w in pair.writers]
        for w in writers:
            w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # The sockets close on the loop's next turns: before the caller blocks it (stopping
        # PostgreSQL waits for its clients to go).
        async with asyncio.timeout(5):
            await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


def postgres_address(dsn: str) -> tuple[str, int] | str:
    """Where ``dsn`` reaches PostgreSQL: (host, port), or the path of its Unix socket."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    port = parts.port or int(query.get("port", ["5432"])[0])
    host = query.get("host", [parts.hostname or ""])[0]
    if host.startswith("/"):
        return str(Path(host) / f".s.PGSQL.{port}")
    return (host or "127.0.0.1", port)


@dataclass
class Traffic:
    """Signals sent through a real process: each one's number (in its context), its answer,
    when it was sent, and whether it came from inside a café (then it must push)."""

    answers: dict[int, int | str] = field(default_factory=dict)
    sent_at: dict[int, float] = field(default_factory=dict)
    inside: set[int] = field(default_factory=set)
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def accepted(self) -> set[int]:
        return {n for n, a in self.answers.items() if a == 202}

    async def send(
        self,
        http: aiohttp.ClientSession,
        api: str,
        tokens: list[str],
        *,
        seed: int,
        total: int | None = None,
        until: float | None = None,
        pause_s: float = 0.02,
    ) -> None:
        """From each token (one client each), until ``total`` signals went out in all or the
        monotonic clock reaches ``until``."""
        rng = random.Random(seed)
        budget = iter(itertools.count() if total is None else range(total))

        async def client(token: str) -> None:
            spot = rng.choice([CAFE_A, CAFE_B])
            while until is None or time.monotonic() < until:
                if next(budget, None) is None:
                    return
                n = next(self._serial)
                near = rng.random() < 0.7
                lat, lon = offset(spot if near else FAR, rng.uniform(-40, 40))
                if near:
                    self.inside.add(n)
                body = {"lat": lat, "lon": lon, "accuracy_m": 10, "context": {"n": n}}
                self.sent_at[n] = time.monotonic()
                try:
                    async with http.post(
                        api + "/v1/signals",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    ) as r:
                        self.answers[n] = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.answers[n] = type(exc).__name__
                await asyncio.sleep(pause_s)

        await asyncio.gather(*(client(t) for t in tokens))


async def register(http: aiohttp.ClientSession, api: str, push: PushService, n: int) -> list[str]:
    """``n`` devices of the push service, registered through the API; their tokens."""
    return [(await register_subscription(http, api, push.subscribe())).token for _ in range(n)]


async def wait_settled(conn: asyncpg.Connection, procs: list[Proc], timeout: float) -> None:
    """Until every signal is processed and every delivery has left 'pending'."""
    deadline = time.monotonic() + timeout
    while True:
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM signals WHERE processed_at IS NULL)"
            " + (SELECT count(*) FROM deliveries WHERE status = 'pending')"
        )
        if left == 0:
            return
        for p in procs:
            assert p.alive(), p.stderr()
        assert time.monotonic() < deadline, f"{left} signals or deliveries still waiting"
        await asyncio.sleep(0.2)


def delivery_of(push_message: dict[str, object]) -> int:
    notification = push_message["notification"]
    assert isinstance(notification, dict)
    return int(notification["data"]["delivery_id"])


async def check_exactly_once(
    conn: asyncpg.Connection, push: PushService, traffic: Traffic
) -> dict[int, int]:
    """Every acknowledged signal is stored once; each stored one from inside a café has one
    delivery, sent, and received by the push service exactly once; none from outside has one.
    Returns the delivery id of each pushed signal."""
    stored = [
        r["n"]
        for r in await conn.fetch("SELECT (context->>'n')::int AS n FROM signals ORDER BY id")
    ]
    assert len(stored) == len(set(stored)), "a signal was stored twice"
    accepted = traffic.accepted()
    assert accepted <= set(stored), f"{len(accepted - set(stored))} accepted signals are missing"
    rows = await conn.fetch(
        "SELECT d.id, d.status, (s.context->>'n')::int AS n"
        " FROM deliveries d JOIN signals s ON s.id = d.signal_id"
    )
    per_signal = Counter(r["n"] for r in rows)
    assert all(c == 1 for c in per_signal.values()), "a signal was decided twice"
    pushed = set(per_signal)
    should = set(stored) & traffic.inside
    assert pushed == should, (
        f"missing: {sorted(should - pushed)[:10]}, unexpected: {sorted(pushed - should)[:10]}"
    )
    statuses = Counter(r["status"] for r in rows)
    assert statuses == Counter({"sent": len(rows)}), statuses
    received = Counter(delivery_of(r.json()) for r in push.all_received())
    assert set(received) == {r["id"] for r in rows}, "a push was lost"
    twice = sorted(d for d, n in received.items() if n > 1)
    assert not twice, f"{len(twice)} pushes were received twice: {twice[:10]}"
    return {r["n"]: r["id"] for r in rows}


# The campaign fan-out's statement, found in pg_stat_activity by its leading comment.
FAN_OUT_STATEMENT = "-- One tick of campaign $1, set-based%"


async def wait_true(pool: asyncpg.Pool, sql: str, timeout: float, *args: object) -> None:
    """Poll ``sql`` (one boolean) until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await pool.fetchval(sql, *args):
        assert time.monotonic() < deadline, f"not true after {timeout}s: {sql}"
        await asyncio.sleep(0.05)


async def wait_blocked(pool: asyncpg.Pool, statement: str, timeout: float) -> None:
    """Until a session runs ``statement`` (a LIKE pattern) and waits for a lock."""
    await wait_true(
        pool,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE $1"
        " AND wait_event_type = 'Lock')",
        timeout,
        statement,
    )


async def wait_finished(pool: asyncpg.Pool, statement: str, timeout: float) -> None:
    """Until no session runs ``statement`` any more (a killed client's statement finishes,
    cannot answer, and rolls back)."""
    await wait_true(
        pool,
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE $1"
        " AND state <> 'idle')",
        timeout,
        statement,
    )
