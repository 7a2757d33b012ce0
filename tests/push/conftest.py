"""Fixtures of the push tests: a strict push service on loopback and rows put in by SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service.context import Context
from service.metrics import REGISTRY
from service.push import Sender
from service.settings import Settings
from service.testing import PushService
from tests.conftest import make_settings


@pytest.fixture
def settings(data_dir: Path, database_url: str) -> Settings:
    # Short timeouts keep the timeout and shutdown tests quick; the test service is listed
    # explicitly (http://127.0.0.1), as an operator would list a local receiver.
    return make_settings(
        data_dir,
        database_url,
        push_connect_timeout=2,
        push_read_timeout=1,
        shutdown_grace=8,  # the least these timeouts allow: 2 + 1 + 5 s
        worker_poll_interval=1,
        sender_max_attempts=3,
        public_url="https://momentcast.example.com",
    )


@pytest.fixture
async def push_service(ctx: Context) -> AsyncIterator[PushService]:
    service = await PushService(ctx.keys.vapid_public_b64).start()
    yield service
    await service.close()


@pytest.fixture
async def sender(ctx: Context) -> AsyncIterator[Sender]:
    # Small retry delays so that retries are observable within a test.
    async with Sender(ctx, retry_base=0.2, retry_cap=1.0) as s:
        yield s


async def delivery(pool: asyncpg.Pool, delivery_id: int) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", delivery_id)
    return row


async def make_due(pool: asyncpg.Pool) -> None:
    """Skip the wait of scheduled retries (what the clock would do, minus the sleeping)."""
    await pool.execute("UPDATE deliveries SET not_before = now() WHERE status = 'pending'")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
