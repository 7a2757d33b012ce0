"""The sender end to end: real PostgreSQL rows, real HTTP to the strict test push service."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from service import push as sender_module
from service import tokens
from service.context import Context
from service.push import Sender
from service.store import Store
from service.testing import SAMPLE_PAYLOAD as PAYLOAD
from service.testing import Fault, PushService
from tests.factories import insert_delivery, insert_subscription
from tests.push.conftest import delivery, make_due, metric


async def drain(sender: Sender, *, rounds: int = 50) -> None:
    """Run batches until nothing is due (retries made due at once)."""
    for _ in range(rounds):
        if await sender.run_once() == 0:
            await make_due(sender.ctx.pool)
            if await sender.run_once() == 0:
                return


async def test_payload_decrypts_to_the_exact_rendered_json(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe()
    sub_id = await insert_subscription(ctx.pool, sub)
    delivery_id = await insert_delivery(ctx.pool, sub_id, ttl_s=1200, urgency="high", topic="lunch")
    before = metric("momentcast_push_deliveries_total", origin=push_service.origin, outcome="sent")

    assert await sender.run_once() == 1

    token = tokens.event_token(ctx.keys.secret_key, delivery_id)
    base = "https://momentcast.example.com"
    expected = {
        "web_push": 8030,
        "notification": {
            "title": PAYLOAD["title"],
            "body": PAYLOAD["body"],
            "navigate": f"{base}/c/{delivery_id}/open?t={token}",
            "lang": "",
            "tag": PAYLOAD["tag"],
            "icon": PAYLOAD["icon"],
            "data": {
                "delivery_id": delivery_id,
                "rule": "lunch-nearby",
                "variant": "a",
                "url": PAYLOAD["url"],
                "events_url": f"{base}/v1/events",
                "event_token": token,
            },
        },
        "mutable": True,
    }
    [received] = sub.received
    assert json.loads(received.plaintext) == expected
    # jsonb keeps keys in its own order, so compare parsed values; nothing extra is allowed.
    assert received.plaintext.decode("utf-8") == json.dumps(
        json.loads(received.plaintext), separators=(",", ":"), ensure_ascii=False
    )
    assert 1190 <= int(received.headers["TTL"]) <= 1200
    assert received.headers["Urgency"] == "high"
    assert received.headers["Topic"] == "lunch"
    assert received.headers["Content-Encoding"] == "aes128gcm"
    row = await delivery(ctx.pool, delivery_id)
    assert (row["status"], row["attempts"], row["last_status"]) == ("sent", 1, 201)
    assert row["finished_at"] is not None and row["claimed_until"] is None
    after = metric("momentcast_push_deliveries_total", origin=push_service.origin, outcome="sent")
    assert after == before + 1


async def test_actions_and_language_arrive_in_the_decrypted_declarative_message(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe()
    sub_id = await insert_subscription(ctx.pool, sub)
    stored = {
        **PAYLOAD,
        "lang": "de",
        "actions": [
            {"action": "book", "title": "Tisch buchen", "url": "https://example.com/book/3"},
            {"action": "menu", "title": "Speisekarte", "url": "https://example.com/menu/3"},
        ],
    }
    delivery_id = await insert_delivery(ctx.pool, sub_id, payload=stored)

    assert await sender.run_once() == 1

    [message] = sub.messages()
    assert message["web_push"] == 8030 and message["mutable"] is True
    notification = message["notification"]
    assert notification["lang"] == "de"
    link = f"https://momentcast.example.com/c/{delivery_id}"
    token = tokens.event_token(ctx.keys.secret_key, delivery_id)
    assert notification["navigate"] == f"{link}/open?t={token}"
    assert notification["actions"] == [
        {"action": "book", "title": "Tisch buchen", "navigate": f"{link}/book?t={token}"},
        {"action": "menu", "title": "Speisekarte", "navigate": f"{link}/menu?t={token}"},
    ]
    assert notification["data"]["url"] == PAYLOAD["url"]
    assert notification["data"]["event_token"] == token


async def test_long_topic_is_derived_deterministically(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe()
    sub_id = await insert_subscription(ctx.pool, sub)
    topic = "lunch offers near partner restaurants, berlin-mitte"
    for _ in range(2):
        await insert_delivery(ctx.pool, sub_id, topic=topic)
    await insert_delivery(ctx.pool, sub_id, topic="dinner offers near partner restaurants, mitte")
    await sender.run_once()
    topics = [r.headers["Topic"] for r in sub.received]
    assert len(topics) == 3 and all(len(t) <= 32 for t in topics)
    assert topics[0] == topics[1] != topics[2]


async def test_a_delivery_without_a_topic_carries_its_own_topic_and_tag(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe()
    untagged = {k: v for k, v in PAYLOAD.items() if k != "tag"}
    delivery_id = await insert_delivery(
        ctx.pool, await insert_subscription(ctx.pool, sub), payload=untagged, topic=None
    )
    await sender.run_once()
    [received] = sub.received
    assert received.headers["Topic"] == f"mc-{delivery_id}"
    assert received.json()["notification"]["tag"] == f"mc-{delivery_id}"


async def test_a_cut_post_keeps_its_lease_and_is_not_released_as_never_sent(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    # A stop that really has to cut a send (it outlasted the grace): the POST that went out
    # unanswered is not released for an immediate retry; the row waits for its lease.
    slow = push_service.subscribe(Fault(delay=3))
    cut = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, slow))
    task = asyncio.create_task(sender.run_once())
    deadline = time.monotonic() + 5
    while not slow.request_times:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await delivery(ctx.pool, cut)
    assert row["status"] == "pending" and row["attempts"] == 0
    assert await ctx.pool.fetchval("SELECT claimed_until > now() FROM deliveries"), dict(row)
    assert await sender.run_once() == 0  # not claimable before the lease runs out
    assert len(slow.request_times) == 1


async def test_a_dead_listener_does_not_spoil_the_senders_stop(
    ctx: Context, push_service: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The LISTEN task ends with an error no one foresaw: the lanes go on polling, and the
    # stop still finishes (its last record included) without raising.
    async def broken() -> None:
        raise RuntimeError("listener broke")

    monkeypatch.setattr(ctx.store, "connect", broken)
    sub = push_service.subscribe()
    await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
    stop = asyncio.Event()
    task = asyncio.create_task(sender_module.run(ctx, stop))
    deadline = time.monotonic() + 10
    while not sub.received:
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=ctx.settings.shutdown_grace.total_seconds() + 2)


async def test_one_vapid_signature_per_origin_across_1000_sends(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    other = await PushService(ctx.keys.vapid_public_b64, host="localhost").start()
    try:
        subs = [push_service.subscribe() for _ in range(20)] + [other.subscribe() for _ in range(5)]
        sub_ids = [await insert_subscription(ctx.pool, s) for s in subs]
        for i in range(1000):
            await insert_delivery(ctx.pool, sub_ids[i % len(sub_ids)])
        before = metric("momentcast_push_vapid_signatures_total", origin=push_service.origin)
        await drain(sender)
        sent = await ctx.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
        assert sent == 1000
        assert len(push_service.all_received()) == 800 and len(other.all_received()) == 200
        assert len(push_service.tokens) == 1 and len(other.tokens) == 1
        assert sender.signer.signatures == 2
        after = metric("momentcast_push_vapid_signatures_total", origin=push_service.origin)
        assert after == before + 1
    finally:
        await other.close()


async def _one(ctx: Context, push_service: PushService, fault: Fault | None) -> tuple[int, object]:
    sub = push_service.subscribe(fault)
    sub_id = await insert_subscription(ctx.pool, sub)
    return await insert_delivery(ctx.pool, sub_id), sub


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_marks_the_subscription_and_cancels_its_pending_pushes(
    ctx: Context, push_service: PushService, sender: Sender, status: int
) -> None:
    sub = push_service.subscribe(Fault(status=status))
    sub_id = await insert_subscription(ctx.pool, sub)
    first = await insert_delivery(ctx.pool, sub_id)
    assert await sender.run_once(limit=1) == 1
    later = await insert_delivery(ctx.pool, sub_id)
    await drain(sender)
    assert (await delivery(ctx.pool, first))["status"] == "gone"
    assert (await delivery(ctx.pool, first))["last_status"] == status
    assert (await delivery(ctx.pool, later))["status"] == "cancelled"
    state = await ctx.pool.fetchval("SELECT status FROM subscriptions WHERE id = $1", sub_id)
    assert state == "gone"
    assert len(sub.request_times) == 1  # nothing more was sent to it


async def test_pending_pushes_of_a_gone_subscription_in_the_same_batch_are_cancelled(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe(Fault(status=410))
    sub_id = await insert_subscription(ctx.pool, sub)
    slow = push_service.subscribe(Fault(status=500, times=1))
    slow_id = await insert_subscription(ctx.pool, slow)
    gone_first = await insert_delivery(ctx.pool, sub_id)
    retrying = await insert_delivery(ctx.pool, slow_id)
    await sender.run_once()
    assert (await delivery(ctx.pool, gone_first))["status"] == "gone"
    # Another subscription's retry is untouched by the gone handling.
    assert (await delivery(ctx.pool, retrying))["status"] == "pending"


async def test_vapid_rejection_fails_loudly_and_keeps_the_subscriber(
    ctx: Context, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    # A push service that expects another application server key answers 403 for real.
    strict = await PushService("B" + "A" * 86).start()
    try:
        sub = strict.subscribe()
        sub_id = await insert_subscription(ctx.pool, sub)
        ids = [await insert_delivery(ctx.pool, sub_id) for _ in range(3)]
        before = metric("momentcast_push_auth_rejected_total", origin=strict.origin)
        with caplog.at_level("ERROR", logger="service.push.sender"):
            await sender.run_once()
        rows = [await delivery(ctx.pool, i) for i in ids]
        assert {(r["status"], r["last_status"]) for r in rows} == {("failed", 403)}
        state = await ctx.pool.fetchval("SELECT status FROM subscriptions WHERE id = $1", sub_id)
        assert state == "active"
        assert metric("momentcast_push_auth_rejected_total", origin=strict.origin) == before + 3
        alarms = [r for r in caplog.records if "ALARM" in r.getMessage()]
        assert len(alarms) == 1  # rate-limited per origin, while the metric counts each
        assert strict.rejections and strict.rejections[0][0] == 403
    finally:
        await strict.close()


@pytest.mark.parametrize(
    ("fault", "status", "last_status", "requests"),
    [
        (Fault(status=401), "failed", 401, 1),
        (Fault(status=413), "failed", 413, 1),
        (Fault(status=400), "failed", 400, 1),
        (Fault(status=500, times=1), "sent", 201, 2),
        (Fault(status=503), "failed", 503, 3),  # sender_max_attempts = 3
        (Fault(reset=True, times=2), "sent", 201, 3),
        (Fault(reset=True), "failed", None, 3),
        (Fault(delay=1.5, times=1), "sent", 201, 2),  # read timeout is 1 s
    ],
    ids=["401", "413", "400", "500-once", "503-always", "reset-twice", "reset-always", "slow"],
)
async def test_fault_outcomes(
    ctx: Context,
    push_service: PushService,
    sender: Sender,
    fault: Fault,
    status: str,
    last_status: int | None,
    requests: int,
) -> None:
    sub = push_service.subscribe(fault)
    sub_id = await insert_subscription(ctx.pool, sub)
    delivery_id = await insert_delivery(ctx.pool, sub_id)
    await drain(sender)
    row = await delivery(ctx.pool, delivery_id)
    assert (row["status"], row["last_status"]) == (status, last_status)
    assert row["attempts"] == requests == len(sub.request_times)
    assert len(sub.received) == (1 if status == "sent" else 0)
    assert row["claimed_until"] is None


async def test_retry_is_scheduled_with_backoff(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe(Fault(status=502))
    sub_id = await insert_subscription(ctx.pool, sub)
    delivery_id = await insert_delivery(ctx.pool, sub_id)
    await sender.run_once()
    row = await delivery(ctx.pool, delivery_id)
    assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 1, 502)
    wait = await ctx.pool.fetchval(
        "SELECT extract(epoch FROM not_before - now()) FROM deliveries WHERE id = $1", delivery_id
    )
    assert 0.05 < wait <= 0.2  # retry_base 0.2 s with jitter in [0.5, 1]
    assert await sender.run_once() == 0  # not due yet


async def test_429_delays_the_retry_and_slows_the_whole_origin(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    throttled = push_service.subscribe(Fault(status=429, retry_after="2", times=1))
    neighbour = push_service.subscribe()
    first = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, throttled))
    assert await sender.run_once() == 1
    row = await delivery(ctx.pool, first)
    assert (row["status"], row["last_status"], row["attempts"]) == ("pending", 429, 1)

    # Another subscriber on the same push service waits too, without a request being made.
    second = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, neighbour))
    assert await sender.run_once() == 1
    assert neighbour.request_times == []
    waits = await ctx.pool.fetch(
        "SELECT id, extract(epoch FROM not_before - now()) AS wait FROM deliveries ORDER BY id"
    )
    assert waits[0]["wait"] > 1.9 and waits[1]["wait"] > 1.5
    assert (await delivery(ctx.pool, second))["attempts"] == 0

    deadline = time.monotonic() + 10
    while len(throttled.received) + len(neighbour.received) < 2 and time.monotonic() < deadline:
        await sender.run_once()
        await asyncio.sleep(0.1)
    assert len(throttled.received) == 1 and len(neighbour.received) == 1
    assert throttled.request_times[1] - throttled.request_times[0] >= 2.0
    assert neighbour.request_times[0] - throttled.request_times[0] >= 2.0


async def test_expired_deliveries_are_never_sent(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe()
    sub_id = await insert_subscription(ctx.pool, sub)
    past = await insert_delivery(ctx.pool, sub_id, expires_in=-5)
    last_moment = await insert_delivery(ctx.pool, sub_id, expires_in=0.5)
    fresh = await insert_delivery(ctx.pool, sub_id, ttl_s=60)
    await sender.run_once()
    assert (await delivery(ctx.pool, past))["status"] == "expired"
    assert (await delivery(ctx.pool, last_moment))["status"] == "expired"
    assert (await delivery(ctx.pool, fresh))["status"] == "sent"
    assert [m["notification"]["data"]["delivery_id"] for m in sub.messages()] == [fresh]
    assert 1 <= int(sub.received[0].headers["TTL"]) <= 60


async def test_retry_past_expiry_expires_instead_of_sending_late(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe(Fault(status=500, times=1))
    delivery_id = await insert_delivery(
        ctx.pool, await insert_subscription(ctx.pool, sub), expires_in=1.5
    )
    await sender.run_once()
    await asyncio.sleep(1.0)
    await make_due(ctx.pool)
    await sender.run_once()
    row = await delivery(ctx.pool, delivery_id)
    assert (row["status"], row["attempts"]) == ("expired", 1)
    assert sub.received == []


async def test_redirects_are_not_followed(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    target = push_service.subscribe()
    sub = push_service.subscribe(Fault(redirect_to=target.endpoint))
    delivery_id = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
    await drain(sender)
    row = await delivery(ctx.pool, delivery_id)
    assert (row["status"], row["last_status"]) == ("failed", 307)
    assert target.request_times == [] and sub.received == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://10.1.2.3/push/x",
        "https://169.254.169.254/latest/meta-data",
        "http://2130706433:{port}/push/x",
        "http://[::ffff:127.0.0.1]:{port}/push/x",
        "https://evil.example.org/push/x",
    ],
)
async def test_bad_endpoint_rows_are_refused_at_send_time(
    ctx: Context, push_service: PushService, sender: Sender, endpoint: str
) -> None:
    port = push_service.origin.rsplit(":", 1)[1]
    sub_id = await insert_subscription(ctx.pool, endpoint=endpoint.format(port=port))
    delivery_id = await insert_delivery(ctx.pool, sub_id)
    await drain(sender)
    row = await delivery(ctx.pool, delivery_id)
    assert row["status"] == "failed" and row["attempts"] == 0
    assert row["last_error"].startswith("endpoint refused")


async def test_names_resolving_to_private_addresses_are_refused_at_connect(
    ctx: Context, push_service: PushService
) -> None:
    # "localhost:PORT" is a plain pattern, so https://localhost:PORT passes the URL policy;
    # only the resolver sees that the name points at a loopback address.
    port = int(push_service.origin.rsplit(":", 1)[1])
    settings = ctx.settings.model_copy(update={"push_hosts": [f"localhost:{port}"]})
    guarded = Context(settings=settings, store=Store(ctx.pool), keys=ctx.keys)
    sub = push_service.subscribe()
    sub_id = await insert_subscription(
        ctx.pool, sub, endpoint=f"https://localhost:{port}/push/{sub.id}"
    )
    delivery_id = await insert_delivery(ctx.pool, sub_id)
    async with Sender(guarded) as s:
        await s.run_once()
    row = await delivery(ctx.pool, delivery_id)
    assert row["status"] == "failed"
    assert "non-public" in row["last_error"]
    assert sub.request_times == []


async def test_paused_and_erased_rows_are_cancelled(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe()
    sub_id = await insert_subscription(ctx.pool, sub)
    paused = await insert_delivery(ctx.pool, sub_id)
    await ctx.pool.execute("UPDATE subscriptions SET paused = true")
    other = await insert_subscription(ctx.pool, push_service.subscribe())
    erased = await insert_delivery(ctx.pool, other)
    await ctx.pool.execute("UPDATE deliveries SET payload = NULL WHERE id = $1", erased)
    await sender.run_once()
    assert (await delivery(ctx.pool, paused))["status"] == "cancelled"
    assert (await delivery(ctx.pool, erased))["status"] == "cancelled"
    assert sub.request_times == []


async def test_oversized_payload_fails_without_a_request(
    ctx: Context, push_service: PushService, sender: Sender
) -> None:
    sub = push_service.subscribe()
    big = {**PAYLOAD, "body": "x" * 4000}
    delivery_id = await insert_delivery(
        ctx.pool, await insert_subscription(ctx.pool, sub), payload=big
    )
    await sender.run_once()
    row = await delivery(ctx.pool, delivery_id)
    assert row["status"] == "failed" and "3993" in row["last_error"]
    assert sub.request_times == []


async def test_two_senders_share_the_outbox_without_duplicates(
    ctx: Context, push_service: PushService
) -> None:
    subs = [push_service.subscribe() for _ in range(10)]
    sub_ids = [await insert_subscription(ctx.pool, s) for s in subs]
    ids = [await insert_delivery(ctx.pool, sub_ids[i % 10]) for i in range(300)]
    async with Sender(ctx, batch_size=25) as a, Sender(ctx, batch_size=25) as b:

        async def loop(s: Sender) -> None:
            while await s.run_once():
                pass

        await asyncio.gather(loop(a), loop(b))
    seen = sorted(m["notification"]["data"]["delivery_id"] for s in subs for m in s.messages())
    assert seen == ids
    assert a.signer.signatures == 1 and b.signer.signatures == 1


async def test_stop_mid_burst_loses_and_duplicates_nothing(
    ctx: Context, push_service: PushService
) -> None:
    subs = [push_service.subscribe(Fault(delay=0.2)) for _ in range(40)]
    sub_ids = [await insert_subscription(ctx.pool, s) for s in subs]
    ids = [await insert_delivery(ctx.pool, sub_ids[i % 40]) for i in range(400)]

    stop = asyncio.Event()
    task = asyncio.create_task(sender_module.run(ctx, stop))
    deadline = time.monotonic() + 10
    while len(push_service.all_received()) < 60 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=ctx.settings.shutdown_grace.total_seconds() + 2)

    rows = await ctx.pool.fetch("SELECT id, status, claimed_until FROM deliveries ORDER BY id")
    sent = {r["id"] for r in rows if r["status"] == "sent"}
    released = {r["id"] for r in rows if r["status"] == "pending"}
    assert sent | released == set(ids) and sent and released
    assert all(r["claimed_until"] is None for r in rows)
    received_before = [m["notification"]["data"]["delivery_id"] for s in subs for m in s.messages()]
    assert sorted(received_before) == sorted(sent)  # every send in flight was recorded

    stop2 = asyncio.Event()
    task = asyncio.create_task(sender_module.run(ctx, stop2))
    deadline = time.monotonic() + 30
    while len(push_service.all_received()) < 400 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop2.set()
    await task
    received = sorted(m["notification"]["data"]["delivery_id"] for s in subs for m in s.messages())
    assert received == ids  # each exactly once
    assert await ctx.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 400


async def test_idle_sender_wakes_on_the_workers_notify(
    ctx: Context, push_service: PushService
) -> None:
    from datetime import timedelta

    ctx.settings.worker_poll_interval = timedelta(seconds=30)
    stop = asyncio.Event()
    task = asyncio.create_task(sender_module.run(ctx, stop))
    try:
        await asyncio.sleep(0.3)  # idle: polled once, found nothing, now waits 30 s
        sub = push_service.subscribe()
        await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
        started = time.monotonic()
        await ctx.pool.execute("NOTIFY momentcast_deliveries")
        while not sub.received and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)
        assert sub.received, "not sent before the 30 s poll"
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        await task


async def test_a_notified_push_costs_one_claim_and_a_backlog_is_sent_at_start(
    ctx: Context, push_service: PushService
) -> None:
    from datetime import timedelta

    # No polling during the test: every claim is a start-up claim or one a NOTIFY caused.
    ctx.settings.worker_poll_interval = timedelta(seconds=30)
    claims = 0
    claim_deliveries = ctx.store.claim_deliveries

    async def counted(**kwargs: float) -> object:
        nonlocal claims
        claims += 1
        return await claim_deliveries(**kwargs)  # type: ignore[arg-type]

    ctx.store.claim_deliveries = counted  # type: ignore[method-assign,assignment]
    waiting = push_service.subscribe()
    await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, waiting))
    stop = asyncio.Event()
    task = asyncio.create_task(sender_module.run(ctx, stop))
    try:
        # Pending before the sender started: sent at once, not after the 30 s poll.
        started = time.monotonic()
        while not waiting.received and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)
        assert waiting.received and time.monotonic() - started < 5
        await asyncio.sleep(0.3)
        before = claims
        subs = [push_service.subscribe() for _ in range(10)]
        for sub in subs:
            # One at a time, as the worker queues them at low rates, each with its NOTIFY.
            await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
            await ctx.pool.execute("NOTIFY momentcast_deliveries")
            started = time.monotonic()
            while not sub.received and time.monotonic() - started < 10:
                await asyncio.sleep(0.01)
            assert sub.received
            await asyncio.sleep(0.05)
        # All four lanes used to wake and claim on each NOTIFY, and the one that got the row
        # claimed again: five claims a push.
        assert claims - before == len(subs)
    finally:
        stop.set()
        await task


async def test_deliveries_notified_within_the_linger_share_one_claim(
    ctx: Context, push_service: PushService
) -> None:
    from datetime import timedelta

    ctx.settings.worker_poll_interval = timedelta(seconds=30)
    # Longer than the setting allows (assigned, not validated): a slow machine cannot stretch
    # the few inserts below past it.
    linger_s = 3.0
    ctx.settings.batch_linger_ms = int(linger_s * 1000)
    claims = 0
    claim_deliveries = ctx.store.claim_deliveries

    async def counted(**kwargs: float) -> object:
        nonlocal claims
        claims += 1
        return await claim_deliveries(**kwargs)  # type: ignore[arg-type]

    ctx.store.claim_deliveries = counted  # type: ignore[method-assign,assignment]
    subs = [push_service.subscribe() for _ in range(6)]
    sub_ids = [await insert_subscription(ctx.pool, sub) for sub in subs]
    stop = asyncio.Event()
    task = asyncio.create_task(sender_module.run(ctx, stop))
    try:
        # The first claim (at start) finds the outbox empty; the next waits a linger after it.
        deadline = time.monotonic() + 10
        while claims < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert claims == 1
        started = time.monotonic()
        for sub_id in sub_ids:  # six deliveries, six NOTIFYs, as six worker batches make them
            await insert_delivery(ctx.pool, sub_id)
            await ctx.pool.execute("NOTIFY momentcast_deliveries")
        inserted_within = time.monotonic() - started
        deadline = time.monotonic() + 30
        while not all(sub.received for sub in subs) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert all(len(sub.received) == 1 for sub in subs)
        assert inserted_within < linger_s, "the machine stalled: the inserts were too slow"
        # Without the linger every NOTIFY woke a lane to claim: up to six claims.
        assert claims == 2
    finally:
        stop.set()
        await task


async def test_a_stop_during_the_linger_ends_the_sender_at_once(
    ctx: Context, push_service: PushService
) -> None:
    from datetime import timedelta

    ctx.settings.worker_poll_interval = timedelta(seconds=30)
    ctx.settings.batch_linger_ms = 20_000  # assigned, not validated: far past the grace
    sub = push_service.subscribe()
    sub_id = await insert_subscription(ctx.pool, sub)
    stop = asyncio.Event()
    task = asyncio.create_task(sender_module.run(ctx, stop))
    await asyncio.sleep(0.3)  # the start-up claim found nothing; the next one lingers
    await insert_delivery(ctx.pool, sub_id)
    await ctx.pool.execute("NOTIFY momentcast_deliveries")
    await asyncio.sleep(0.3)  # a lane now lingers before its claim
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert time.monotonic() - started < 5
    assert not sub.received
    # Never claimed: still pending, with no lease, for the next sender.
    row = await ctx.pool.fetchrow("SELECT status, claimed_until FROM deliveries")
    assert row is not None and row["status"] == "pending" and row["claimed_until"] is None
