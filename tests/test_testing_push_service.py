"""`momentcast testing push-service`: the strict test push service as a local push sink."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from service.testing import SAMPLE_PAYLOAD
from service.webpush import vapid
from service.webpush.encryption import encrypt
from service.webpush.message import build_headers
from service.webpush.vapid import VapidSigner

SUBJECT = "mailto:dev@momentcast.example.com"


@dataclass
class Sink:
    proc: subprocess.Popen[str]
    url: str
    banner: list[str]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MOMENTCAST_")}


def _start(cwd: Path, *args: str) -> Sink:
    # A folder of its own: no .env of the checkout reaches the command's settings.
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "testing", "push-service", "--port", "0", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    banner: list[str] = []
    url = ""
    for line in proc.stdout:
        banner.append(line.rstrip("\n"))
        if line.startswith("test push service listening on "):
            url = line.split()[-1]
        if line.startswith("Ctrl-C stops it."):
            return Sink(proc, url, banner)
    proc.kill()
    raise AssertionError(f"no banner: {banner} {proc.communicate()[1]}")


@pytest.fixture
def server_key() -> ec.EllipticCurvePrivateKey:
    return vapid.generate_private_key()


@pytest.fixture
def sink(server_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> Iterator[Sink]:
    started = _start(tmp_path, "--vapid-public-key", vapid.public_key_b64url(server_key))
    yield started
    if started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait(10)


async def _push(
    http: aiohttp.ClientSession,
    subscription: dict[str, object],
    key: ec.EllipticCurvePrivateKey,
    origin: str,
    message: dict[str, object],
) -> int:
    keys = subscription["keys"]
    assert isinstance(keys, dict)
    body = encrypt(json.dumps(message).encode(), keys["p256dh"], keys["auth"])
    headers = build_headers(
        authorization=VapidSigner(key, SUBJECT).authorization(origin),
        ttl=600,
        urgency="high",
        topic="lunch",
    )
    async with http.post(str(subscription["endpoint"]), data=body, headers=headers) as r:
        return r.status


async def test_push_service_decrypts_pushes_and_logs_their_titles(
    sink: Sink, server_key: ec.EllipticCurvePrivateKey
) -> None:
    assert sink.url.startswith("http://127.0.0.1:")
    assert any(f"MOMENTCAST_PUSH_HOSTS lists {sink.url}" in line for line in sink.banner)
    message = {"web_push": 8030, "notification": {**SAMPLE_PAYLOAD, "navigate": "https://x.test/"}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sink.url}/subscriptions") as r:
            assert r.status == 201
            subscription = await r.json()
        endpoint = subscription["endpoint"]
        assert endpoint.startswith(f"{sink.url}/push/")
        assert set(subscription["keys"]) == {"p256dh", "auth"}
        sub_id = endpoint.rsplit("/", 1)[1]

        assert await _push(http, subscription, server_key, sink.url, message) == 201
        # Signed by another application server: a push service refuses it (403).
        other = vapid.generate_private_key()
        assert await _push(http, subscription, other, sink.url, message) == 403

        async with http.get(f"{sink.url}/subscriptions/{sub_id}/messages") as r:
            assert r.status == 200
            assert await r.json() == [message]

    sink.proc.send_signal(signal.SIGINT)
    _, stderr = sink.proc.communicate(timeout=15)
    assert sink.proc.returncode == 0, stderr
    assert f"push to subscription {sub_id}: {SAMPLE_PAYLOAD['title']!r}" in stderr
    assert "urgency high, TTL 600 s, topic lunch" in stderr
    assert f"refused a push to subscription {sub_id} with 403" in stderr
    # The title only: not the body, the URL or anything else of the message.
    assert str(SAMPLE_PAYLOAD["body"]) not in stderr
    assert str(SAMPLE_PAYLOAD["url"]) not in stderr


def test_push_service_refuses_a_malformed_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service", "testing", "push-service", "--vapid-public-key", "x"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--vapid-public-key must be a base64url P-256 public key" in proc.stderr
