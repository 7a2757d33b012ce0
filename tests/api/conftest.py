"""Fixtures of the API tests: real browser-like subscription keys and registered devices."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.conftest import LiveApi


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def push_subscription(endpoint: str | None = None) -> dict[str, Any]:
    """What PushSubscription.toJSON() gives: a fresh P-256 key pair and auth secret."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {
        "endpoint": endpoint or f"http://127.0.0.1:9/push/{secrets.token_hex(16)}",
        "expirationTime": None,
        "keys": {"p256dh": b64url(point), "auth": b64url(secrets.token_bytes(16))},
    }


@dataclass
class Device:
    id: str
    token: str
    subscription: dict[str, Any]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(api: LiveApi, **profile: Any) -> Device:
    sub = push_subscription()
    async with api.http.post(
        api.url + "/v1/subscriptions", json={"subscription": sub, **profile}
    ) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    return Device(body["id"], body["token"], sub)


@pytest.fixture
async def device(api: LiveApi) -> Device:
    return await register(api, timezone="Europe/Berlin", locale="de-DE", topics=["food"])


@pytest.fixture
async def other_device(api: LiveApi) -> Device:
    return await register(api)
