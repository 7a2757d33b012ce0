"""Requests schemathesis found a 500 or a traceback with: each is a clear 4xx and a clean log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import assert_error, later
from tests.conftest import LiveApi


@pytest.mark.parametrize("topic", [{}, 1, True, None, [], 1.5])
async def test_a_campaign_topic_that_is_no_string_is_a_422_naming_it(
    api: LiveApi, topic: Any
) -> None:
    # Measured: a TypeError in the topic check, a 500.
    body = {
        "id": "typed",
        "audience": {"topics": ["food", topic]},
        "message": {"title": "Lunch", "body": "2-for-1"},
        "send_at": later(),
    }
    for dry_run in ("", "?dry_run=true"):
        async with api.http.post(
            api.url + "/v1/campaigns" + dry_run, json=body, headers=api.admin()
        ) as resp:
            answer = await resp.json()
            assert resp.status == 422, answer
        assert_error(answer, 422, "invalid", "audience.topics.1")
    assert await api.ctx.pool.fetchval("SELECT count(*) FROM campaigns") == 0


# Requests aiohttp answers 400 itself, before routing: a control character in the path, a
# malformed header line, a request line that is no HTTP, a header line over the limit.
MALFORMED = [
    b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
]


@pytest.mark.parametrize("raw", MALFORMED, ids=["path", "header", "request-line", "long-header"])
async def test_requests_refused_before_routing_are_logged_without_a_traceback(
    api: LiveApi, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # Measured: the access log's route name asserted on them ("Unhandled exception",
    # AssertionError and a traceback for each).
    caplog.set_level(logging.INFO)
    url = urlsplit(api.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", answer[:100]
    # The access log line comes after the answer is written.

    def logged() -> tuple[list[str], list[str]]:
        access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
        failed = [
            r.getMessage()
            for r in caplog.records
            if r.exc_info and isinstance(r.exc_info[1], AssertionError)
        ]
        return access, failed

    async with asyncio.timeout(30):
        while not any(logged()):
            await asyncio.sleep(0.05)
    access, failed = logged()
    assert not failed, failed
    assert [line.split(" ")[1:3] for line in access] == [["unmatched", "400"]], access
    # The app still answers.
    async with api.http.get(api.url + "/healthz") as resp:
        assert resp.status == 200
