"""The primary killed and its synchronous standby promoted while signals flow: with a
DATABASE_URL that lists both hosts and target_session_attrs=read-write, `momentcast serve`
reaches the new primary by itself, clients that retry see only 503s with Retry-After in
between, and every acknowledged signal is pushed exactly once (docs/operations.md, Failover).

Each of the 400 subscribers sends one signal at a café: one `enter` push each. A retried
signal that was stored after all (its answer lost) is a second signal inside the same place,
which pushes nothing, so exactly one push per subscriber is the expectation either way."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from service.testing import BrowserSubscription, PushService
from tests.factories import register_subscription
from tests.faults.conftest import Proc, Replicated, _stack
from tests.security.logscan import Watch
from tests.worker.conftest import CAFE_A

pytestmark = pytest.mark.slow

SIGNALS = 400
KILL_AFTER = 150  # acknowledged signals before the primary dies
PROMOTE_AFTER = 1.5  # seconds without a primary: long enough for clients to see it
CLIENTS = 8


@dataclass
class Sent:
    """One signal as a client saw it: every attempt's answer, and when it was acknowledged."""

    answers: list[int | str] = field(default_factory=list)
    acked_at: float | None = None


async def _post_until_acknowledged(
    http: aiohttp.ClientSession, serve: Proc, token: str, sent: Sent, rng: random.Random
) -> None:
    """What the SDK does: retry 503 (after Retry-After) and network errors, with jitter."""
    url = serve.url
    body = {"lat": CAFE_A[0], "lon": CAFE_A[1], "accuracy_m": 5}
    delay = 0.1
    while True:
        try:
            async with http.post(
                url + "/v1/signals", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as r:
                sent.answers.append(r.status)
                if r.status == 202:
                    sent.acked_at = time.monotonic()
                    return
                assert r.status == 503, (r.status, await r.text())
                assert r.headers.get("Retry-After"), "a 503 without Retry-After"
                wait = min(float(r.headers["Retry-After"]), 2.0)
        except (aiohttp.ClientError, TimeoutError) as exc:
            sent.answers.append(type(exc).__name__)
            assert serve.alive(), "momentcast exited:\n" + _log_tail(serve)
            wait = delay
        await asyncio.sleep(wait * rng.uniform(0.5, 1.0))
        delay = min(delay * 2, 1.0)


async def _register(
    http: aiohttp.ClientSession, url: str, subs: list[BrowserSubscription], watch: Watch
) -> list[str]:
    tokens: list[str] = [""] * len(subs)
    queue = list(enumerate(subs))

    async def one() -> None:
        while queue:
            i, sub = queue.pop()
            tokens[i] = (await register_subscription(http, url, sub)).token
            watch.remember(tokens[i])

    await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return tokens


def _log_tail(serve: Proc) -> str:
    return "\n".join([line for line in serve.err if "aiohttp.access" not in line][-60:])


def _stuck(serve: Proc, sent: list[Sent], switch: dict[str, float]) -> str:
    answers = Counter(str(a) for s in sent for a in s.answers)
    acked = sum(s.acked_at is not None for s in sent)
    return (
        f"signals not acknowledged in time: {acked}/{len(sent)} acknowledged, answers "
        f"{dict(answers)}, switch {sorted(switch)}; alive {serve.alive()}\n" + _log_tail(serve)
    )


async def _until_delivered(
    conn: asyncpg.Connection, subs: list[BrowserSubscription], serve: Proc, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pushed = sum(1 for sub in subs if sub.received)
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM signals WHERE processed_at IS NULL)"
            " + (SELECT count(*) FROM deliveries WHERE status <> 'sent')"
        )
        if pushed == len(subs) and left == 0:
            return
        assert serve.alive(), _log_tail(serve)
        assert time.monotonic() < deadline, (
            f"after the failover {pushed}/{len(subs)} pushed, {left} left to do\n"
            + _log_tail(serve)
        )
        await asyncio.sleep(0.2)


async def test_primary_killed_and_standby_promoted_mid_stream_loses_nothing(
    replicated: Replicated, short_tmp: Path, log_privacy: Watch
) -> None:
    pg = replicated
    stack = await _stack(short_tmp, pg.dsn)
    push = await PushService(stack.keys.vapid_public_b64).start()
    rng = random.Random(20)
    subs = [push.subscribe() for _ in range(SIGNALS)]
    sent = [Sent() for _ in range(SIGNALS)]
    switch: dict[str, float] = {}
    try:
        # Each phase is bounded, generously: the machine may be busy. A run takes about 30 s.
        serve = await asyncio.to_thread(stack.start, "serve", MOMENTCAST_WORKER_BATCH_SIZE="20")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with asyncio.timeout(45):
                tokens = await _register(http, serve.url, subs, log_privacy)
            queue = list(range(SIGNALS))
            acked = asyncio.Event()

            async def client() -> None:
                while queue:
                    i = queue.pop(0)
                    await _post_until_acknowledged(http, serve, tokens[i], sent[i], rng)
                    if sum(s.acked_at is not None for s in sent) >= KILL_AFTER:
                        acked.set()
                    await asyncio.sleep(0.01)

            async def failover() -> None:
                await acked.wait()
                # In threads: the push service and the clients run on this event loop.
                await asyncio.to_thread(pg.primary.kill)
                switch["killed"] = time.monotonic()
                await asyncio.sleep(PROMOTE_AFTER)
                await asyncio.to_thread(pg.standby.promote)
                switch["promoted"] = time.monotonic()

            try:
                async with asyncio.timeout(45):
                    await asyncio.gather(failover(), *(client() for _ in range(CLIENTS)))
            except TimeoutError:
                raise AssertionError(_stuck(serve, sent, switch)) from None

        conn = await asyncpg.connect(pg.dsn)
        try:
            assert not await conn.fetchval("SELECT pg_is_in_recovery()")
            port = await conn.fetchval("SELECT current_setting('port')::int")
            assert port == pg.standby.port, "not on the promoted standby"
            await _until_delivered(conn, subs, serve, timeout=45)
            await asyncio.sleep(2)  # a duplicate would arrive now
            stored = await conn.fetchval("SELECT count(DISTINCT subscription_id) FROM signals")
        finally:
            await conn.close()
        assert serve.alive(), _log_tail(serve)
        code = await asyncio.to_thread(serve.stop)
    finally:
        await push.close()
        for proc in stack.procs:
            if proc.alive():
                proc.stop(9)

    # The stream really crossed the failover, and clients saw it.
    before = sum(1 for s in sent if s.acked_at is not None and s.acked_at < switch["killed"])
    after = sum(1 for s in sent if s.acked_at is not None and s.acked_at > switch["promoted"])
    assert before >= KILL_AFTER and after > 0, (before, after)
    # What clients saw in between: 503s only (the process dropped no request).
    retried = Counter(a for s in sent for a in s.answers if a != 202)
    assert retried, "no client saw the switch"
    assert set(retried) == {503}, retried

    assert all(s.acked_at is not None for s in sent)
    assert stored == SIGNALS, "an acknowledged signal is missing on the new primary"
    copies = Counter(len(sub.received) for sub in subs)
    assert copies == Counter({1: SIGNALS}), f"pushes per acknowledged signal: {copies}"
    assert code == 0, _log_tail(serve)
    stack.check_logs(log_privacy.secrets)
