"""A stop while pushes wait for a slow push service (issue 20, item 2), against a real
`momentcast serve`: SIGTERM lets every send in flight get its answer and records it, so a
restart sends nothing again; after a SIGKILL, a push whose outcome was lost goes out again
only after its lease, with the same Topic and the notification tag ``mc-<delivery id>``."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import asyncpg
import pytest

from service.testing import SAMPLE_PAYLOAD, BrowserSubscription, Fault, PushService
from tests.factories import insert_delivery
from tests.faults.conftest import Proc, Stack, add_browser_subscriptions
from tests.processes import start

pytestmark = pytest.mark.slow

# Longer than the old default SHUTDOWN_GRACE (10 s), as measured: 5 pushes waiting 12 s.
SLOW_ANSWER_S = 11.0
# The message without a tag of its own: the sender gives it mc-<delivery id>.
UNTAGGED = {k: v for k, v in SAMPLE_PAYLOAD.items() if k != "tag"}


async def _serve(stack: Stack, *args: str, **settings: str) -> Proc:
    """`momentcast serve` with the stack's environment, SHUTDOWN_GRACE left at its default."""
    env = stack.env(**settings)
    del env["MOMENTCAST_SHUTDOWN_GRACE"]
    proc = Proc(start(["serve", *args], env))
    stack.procs.append(proc)
    # In a thread: the push service answering the sends runs on this event loop.
    await asyncio.to_thread(proc.sp.wait_banner)
    return proc


async def _until(what: str, check: object, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        if proc is not None:
            assert proc.alive(), proc.stderr()
        await asyncio.sleep(0.05)


async def _slow_pushes(
    pool: asyncpg.Pool, push: PushService, n: int, delay: float, topic: str | None = None
) -> list[tuple[int, BrowserSubscription]]:
    browser = await add_browser_subscriptions(pool, push, n)
    pushes = []
    for sid, sub in browser:
        # The first request only: taken at once, answered late.
        sub.fault = Fault(delay=delay, read_first=True, times=1)
        pushes.append((await _insert(pool, sid, topic), sub))
    return pushes


async def _insert(pool: asyncpg.Pool, sid: uuid.UUID, topic: str | None) -> int:
    return await insert_delivery(pool, sid, payload=UNTAGGED, topic=topic)


# A group of two passes SIGTERM on to each process, which stops the same way.
@pytest.mark.parametrize("args", [[], ["--processes", "2"]], ids=["one", "group"])
async def test_sigterm_mid_send_waits_for_the_answers_and_sends_each_push_once(
    stack: Stack, clean_db: asyncpg.Pool, args: list[str]
) -> None:
    pool = clean_db
    push = await PushService(stack.keys.vapid_public_b64).start()
    # The read timeout lets the slow answers count; the grace stays at its default.
    timeouts = {"MOMENTCAST_PUSH_CONNECT_TIMEOUT": "1", "MOMENTCAST_PUSH_READ_TIMEOUT": "14"}
    try:
        pushes = await _slow_pushes(pool, push, 5, SLOW_ANSWER_S)
        serve = await _serve(stack, *args, **timeouts)
        await _until(
            "all 5 POSTs arrive", lambda: all(s.request_times for _, s in pushes), 30, serve
        )
        stopped_at = time.monotonic()
        code = await asyncio.to_thread(serve.stop, signal.SIGTERM, 60)
        took = time.monotonic() - stopped_at
        assert code == 0, serve.stderr()
        assert took < 30, f"exit took {took:.1f} s, more than the default SHUTDOWN_GRACE"
        statuses = await pool.fetch("SELECT id, status, claimed_until FROM deliveries")
        assert {(r["status"], r["claimed_until"]) for r in statuses} == {("sent", None)}, (
            [dict(r) for r in statuses],
            serve.err[-20:],
        )

        again = await _serve(stack, *args, **timeouts)
        # Three polls of the restarted sender: nothing is due, nothing goes out again.
        await asyncio.sleep(3.5)
        assert again.alive(), again.stderr()
        assert (await asyncio.to_thread(again.stop, signal.SIGTERM, 60)) == 0, again.stderr()
        sent = {delivery_id: len(sub.request_times) for delivery_id, sub in pushes}
        assert sent == {delivery_id: 1 for delivery_id, _ in pushes}, "a push was POSTed twice"
        assert all(len(sub.received) == 1 for _, sub in pushes)
    finally:
        await push.close()


async def test_sigkill_mid_send_resends_after_the_lease_with_the_same_topic_and_tag(
    stack: Stack, clean_db: asyncpg.Pool
) -> None:
    pool = clean_db
    push = await PushService(stack.keys.vapid_public_b64).start()
    # Lease: max(WORKER_LEASE 1 s, 4 x (1 + 3) s) = 16 s.
    timeouts = {"MOMENTCAST_PUSH_CONNECT_TIMEOUT": "1", "MOMENTCAST_PUSH_READ_TIMEOUT": "3"}
    try:
        untopical = await _slow_pushes(pool, push, 1, 2.5)
        topical = await _slow_pushes(pool, push, 1, 2.5, topic="lunch")
        serve = await _serve(stack, **timeouts)
        subs = [sub for _, sub in untopical + topical]
        await _until("both POSTs arrive", lambda: all(s.request_times for s in subs), 30, serve)
        assert (await asyncio.to_thread(serve.stop, signal.SIGKILL, 30)) == -signal.SIGKILL
        # The push service delivers what it had received from the killed process.
        await _until("the first copies", lambda: all(s.received for s in subs), 10)

        again = await _serve(stack, **timeouts)
        await _until("the copies sent again", lambda: all(len(s.received) == 2 for s in subs), 60)
        # Not before the lease ran out: the killed sender might still have been sending.
        assert all(s.request_times[1] - s.request_times[0] > 12 for s in subs)
        for (delivery_id, sub), topic in [
            (untopical[0], f"mc-{untopical[0][0]}"),
            (topical[0], "lunch"),
        ]:
            assert [r.headers.get("Topic") for r in sub.received] == [topic, topic]
            tags = [m["notification"].get("tag") for m in sub.messages()]
            assert tags == [f"mc-{delivery_id}"] * 2
        deadline = time.monotonic() + 10
        while await pool.fetchval("SELECT count(*) FROM deliveries WHERE status <> 'sent'"):
            assert time.monotonic() < deadline, "the copies' outcomes were not recorded"
            await asyncio.sleep(0.1)
        assert (await asyncio.to_thread(again.stop, signal.SIGTERM, 60)) == 0, again.stderr()
    finally:
        await push.close()
