"""What an operator sees of failed pushes: one log line per origin and failure class a minute,
with the count since the previous line, and metrics that count every failure under its own
name (an internal error is not an SSRF refusal, a refused address is not a request)."""

from __future__ import annotations

import logging

import pytest

from service.context import Context
from service.push import Sender
from service.push import sender as sender_module
from service.push.failures import Failure, FailureLog
from service.store import Store
from service.testing import Fault, PushService
from tests.factories import insert_delivery, insert_subscription
from tests.push.conftest import delivery, metric


def _lines(caplog: pytest.LogCaptureFixture, failure: Failure) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("service.push") and f"[{failure.value}]" in r.getMessage()
    ]


async def test_one_line_per_origin_and_failure_class(
    ctx: Context, push_service: PushService, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    other = await PushService(ctx.keys.vapid_public_b64).start()
    try:
        kinds = {
            Failure.SERVER_ERROR: (Fault(status=503), 3),
            Failure.PAYLOAD_TOO_LARGE: (Fault(status=413), 2),
            Failure.CLIENT_ERROR: (Fault(status=400), 2),
            Failure.CONNECTION: (Fault(reset=True), 2),
            Failure.TIMEOUT: (Fault(delay=1.5), 2),  # the read timeout is 1 s
        }
        faults = {
            failure: [push_service.subscribe(fault) for _ in range(n)]
            for failure, (fault, n) in kinds.items()
        }
        elsewhere = [other.subscribe(Fault(status=503)) for _ in range(2)]
        for subs in [*faults.values(), elsewhere]:
            for sub in subs:
                await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
        before = {
            failure: metric(
                "momentcast_push_failures_total", origin=push_service.origin, failure=failure.value
            )
            for failure in faults
        }
        with caplog.at_level("WARNING", logger="service.push"):
            await sender.run_once()

        for failure, subs in faults.items():
            lines = _lines(caplog, failure)
            ours = [r for r in lines if push_service.origin in r.getMessage()]
            assert len(ours) == 1, (failure, [r.getMessage() for r in lines])
            needs_our_fix = failure in (Failure.PAYLOAD_TOO_LARGE, Failure.CLIENT_ERROR)
            assert ours[0].levelname == ("ERROR" if needs_our_fix else "WARNING")
            # The metric counts every one; the log line stands for them.
            counted = metric(
                "momentcast_push_failures_total", origin=push_service.origin, failure=failure.value
            )
            assert counted == before[failure] + len(subs)
        # Another push service's 5xx get their own line.
        assert [r for r in _lines(caplog, Failure.SERVER_ERROR) if other.origin in r.getMessage()]
        # Endpoint paths carry each subscriber's capability: never in a log line.
        for subs in faults.values():
            for sub in subs:
                assert all(sub.id not in r.getMessage() for r in caplog.records)
    finally:
        await other.close()


def test_later_lines_carry_the_count_since_the_last_line(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    failures = FailureLog(logging.getLogger("service.push.test"), clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="service.push.test"):
        for t in (0.0, 1.0, 2.0, 3.0):
            now[0] = t
            failures.note("https://a.example", Failure.TIMEOUT, "timeout")
        now[0] = 10.0
        failures.note("https://b.example", Failure.TIMEOUT, "timeout")
        failures.note("https://a.example", Failure.SERVER_ERROR, "HTTP 502")
        assert len(caplog.records) == 3  # one per (origin, class)
        now[0] = 61.0
        failures.note("https://a.example", Failure.TIMEOUT, "timeout after 16 s")
        failures.note("https://a.example", Failure.TIMEOUT, "timeout")
        later = caplog.records[3].getMessage()
        assert "https://a.example" in later and "4 since the last line 61 s ago" in later
        assert "timeout after 16 s" in later
        assert len(caplog.records) == 4
        # On the way out, what was counted but not logged yet gets its line.
        failures.flush()
        assert len(caplog.records) == 5
        assert "1 since the last line 0 s ago" in caplog.records[4].getMessage()
        failures.flush()
        assert len(caplog.records) == 5


async def test_an_internal_error_is_counted_as_an_error_not_as_a_refusal(
    ctx: Context,
    push_service: PushService,
    sender: Sender,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object, **__: object) -> bytes:
        raise RuntimeError("a bug in the sender")

    monkeypatch.setattr(sender_module, "encrypt", broken)
    sub = push_service.subscribe()
    delivery_id = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
    refused_before = metric("momentcast_push_deliveries_total", origin="refused", outcome="retry")
    errors_before = metric(
        "momentcast_push_deliveries_total", origin=push_service.origin, outcome="error"
    )
    with caplog.at_level("ERROR", logger="service.push"):
        await sender.run_once()

    assert metric("momentcast_push_deliveries_total", origin="refused", outcome="retry") == (
        refused_before
    )
    assert metric(
        "momentcast_push_deliveries_total", origin=push_service.origin, outcome="error"
    ) == (errors_before + 1)
    assert (
        metric(
            "momentcast_push_failures_total", origin=push_service.origin, failure="internal_error"
        )
        >= 1
    )
    [line] = _lines(caplog, Failure.INTERNAL)
    assert line.levelname == "ERROR" and line.exc_info is not None
    row = await delivery(ctx.pool, delivery_id)
    assert row["status"] == "pending" and row["last_error"].startswith("internal error")
    assert sub.request_times == []


async def test_an_internal_error_before_the_push_service_is_known_has_no_origin(
    ctx: Context, push_service: PushService, sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> object:
        raise RuntimeError("a bug in the endpoint check")

    monkeypatch.setattr(sender_module, "check_endpoint", broken)
    sub = push_service.subscribe()
    await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
    before = metric("momentcast_push_deliveries_total", origin="none", outcome="error")
    await sender.run_once()
    assert metric("momentcast_push_deliveries_total", origin="none", outcome="error") == before + 1


async def test_an_address_refused_by_the_resolver_is_not_counted_as_a_request(
    ctx: Context, push_service: PushService
) -> None:
    port = int(push_service.origin.rsplit(":", 1)[1])
    settings = ctx.settings.model_copy(update={"push_hosts": [f"localhost:{port}"]})
    guarded = Context(settings=settings, store=Store(ctx.pool), keys=ctx.keys)
    sub = push_service.subscribe()
    sub_id = await insert_subscription(
        ctx.pool, sub, endpoint=f"https://localhost:{port}/push/{sub.id}"
    )
    await insert_delivery(ctx.pool, sub_id)
    origin = f"https://localhost:{port}"
    requests = metric("momentcast_push_requests_total", origin=origin, status="refused")
    refused = metric("momentcast_push_deliveries_total", origin=origin, outcome="refused")
    async with Sender(guarded) as s:
        await s.run_once()
    assert sub.request_times == []
    assert metric("momentcast_push_requests_total", origin=origin, status="refused") == requests
    assert metric("momentcast_push_deliveries_total", origin=origin, outcome="refused") == (
        refused + 1
    )
    assert metric("momentcast_push_failures_total", origin=origin, failure="endpoint_refused") >= 1
