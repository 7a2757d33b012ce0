"""The group-commit writer never leaves a request waiting, whatever its batch runs into."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from service import tokens
from service.errors import IngestUnavailable
from service.ingest import SignalWriter
from service.store.signals import IngestedBatch, SignalRequest, SignalRow
from tests.api.conftest import register
from tests.conftest import LiveApi

ROW = SignalRow(datetime.now(UTC), 52.52, 13.405, None, None, None, {})


class CancelledStore:
    """A store call that ends in CancelledError, as one cut short by a shutdown does."""

    async def ingest_signals(
        self, *, requests: Sequence[SignalRequest], channel: str
    ) -> IngestedBatch:
        raise asyncio.CancelledError


async def test_a_cancelled_commit_answers_its_requests() -> None:
    writer = SignalWriter(CancelledStore())  # type: ignore[arg-type]
    await writer.start()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(IngestUnavailable):
                await writer.submit(SignalRequest(b"t" * 32, [ROW]))
    finally:
        await writer.stop()


async def test_a_dead_writer_answers_waiting_and_later_requests() -> None:
    writer = SignalWriter(CancelledStore())  # type: ignore[arg-type]

    def broken() -> list[object]:
        raise RuntimeError("bug in batching")

    writer._take = broken  # type: ignore[method-assign,assignment]
    await writer.start()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(IngestUnavailable):
                await writer.submit(SignalRequest(b"t" * 32, [ROW]))
            with pytest.raises(IngestUnavailable):
                await writer.submit(SignalRequest(b"u" * 32, [ROW]))
    finally:
        with pytest.raises(RuntimeError):
            await writer.stop()


async def test_each_request_of_one_group_commit_gets_its_own_counts(api: LiveApi) -> None:
    device, other = await register(api), await register(api)
    at = datetime.now(UTC)

    def req(token: str, *ids: str | None) -> SignalRequest:
        rows = [SignalRow(at, 52.52, 13.4, None, None, None, {}, i) for i in ids]
        return SignalRequest(tokens.hash_token(token), rows)

    writer = SignalWriter(api.ctx.store)
    await writer.start()
    try:
        # Queued before the writer runs again: one batch, one statement.
        results = await asyncio.gather(
            writer.submit(req(device.token, "a", "b", "a")),
            writer.submit(req(device.token, "b", "c")),
            writer.submit(req(other.token, "a")),
            writer.submit(req(device.token, "a", None)),
        )
    finally:
        await writer.stop()
    assert writer.batches == 1
    assert [(r.accepted, r.duplicates) for r in results] == [(2, 1), (1, 1), (1, 0), (1, 1)]
    assert writer.rows == 5


async def test_requests_within_the_linger_share_one_commit(api: LiveApi) -> None:
    device = await register(api)

    def req() -> SignalRequest:
        row = SignalRow(datetime.now(UTC), 52.52, 13.4, None, None, None, {})
        return SignalRequest(tokens.hash_token(device.token), [row])

    linger_s = 3.0  # longer than INGEST_LINGER_MS allows: a slow machine cannot outlast it
    writer = SignalWriter(api.ctx.store, linger_s=linger_s)
    await writer.start()
    try:
        # After a quiet spell a request is committed at once, without lingering.
        started = time.monotonic()
        await writer.submit(req())
        assert time.monotonic() - started < linger_s
        assert writer.batches == 1
        # Five requests 50 ms apart, each a wake-up of the writer: one commit, a linger after
        # the last one began.
        waiting = []
        started = time.monotonic()
        for _ in range(5):
            waiting.append(asyncio.create_task(writer.submit(req())))
            await asyncio.sleep(0.05)
        arrived_within = time.monotonic() - started
        async with asyncio.timeout(30):
            results = await asyncio.gather(*waiting)
    finally:
        await writer.stop()
    assert [r.accepted for r in results] == [1] * 5
    assert arrived_within < linger_s, "the machine stalled: the requests were too slow"
    assert writer.batches == 2
    assert writer.rows == 6
