"""Fixtures of the push tests: a strict push service on loopback and rows put in by SQL."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.context import Context
from service.metrics import REGISTRY
from service.push import Sender
from service.settings import Settings
from service.testing import SAMPLE_PAYLOAD as PAYLOAD
from service.testing import BrowserSubscription, PushService
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


async def insert_subscription(
    pool: asyncpg.Pool, sub: BrowserSubscription | None = None, *, endpoint: str | None = None
) -> uuid.UUID:
    """A subscriptions row as the API would store it (the API is not needed for this).

    ``endpoint`` overrides the subscription's own, to plant rows the API would refuse.
    """
    if sub is not None:
        endpoint, p256dh, auth = endpoint or sub.endpoint, sub.p256dh, sub.auth
    else:
        assert endpoint is not None
        p256dh, auth = "BAAA", "AAAA"
    row_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO subscriptions (endpoint, p256dh, auth, token_hash) "
        "VALUES ($1, $2, $3, $4) RETURNING id",
        endpoint,
        p256dh,
        auth,
        secrets.token_bytes(32),
    )
    return row_id


async def insert_delivery(
    pool: asyncpg.Pool,
    subscription_id: uuid.UUID,
    *,
    payload: dict[str, Any] | None = None,
    ttl_s: int = 1200,
    expires_in: float | None = None,
    urgency: str = "normal",
    topic: str | None = "lunch",
    rule_id: str = "lunch-nearby",
    variant: str = "a",
) -> int:
    """A pending deliveries row as the engine would write it."""
    expires = ttl_s if expires_in is None else expires_in
    delivery_id: int = await pool.fetchval(
        "INSERT INTO deliveries (subscription_id, rule_id, variant, payload, ttl_s, urgency,"
        " topic, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
        " now() + make_interval(secs => $8)) RETURNING id",
        subscription_id,
        rule_id,
        variant,
        PAYLOAD if payload is None else payload,
        ttl_s,
        urgency,
        topic,
        float(expires),
    )
    return delivery_id


async def delivery(pool: asyncpg.Pool, delivery_id: int) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", delivery_id)
    return row


async def make_due(pool: asyncpg.Pool) -> None:
    """Skip the wait of scheduled retries (what the clock would do, minus the sleeping)."""
    await pool.execute("UPDATE deliveries SET not_before = now() WHERE status = 'pending'")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
