"""Message building: VAPID caching, headers, TTL, Topic, size limit, Retry-After."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from service.errors import PushPayloadTooLarge
from service.push.retry import MAX_RETRY_AFTER, parse_retry_after
from service.testing import MAX_BODY, make_keys, verify_vapid
from service.vapid import b64url_decode, public_key_b64url
from service.webpush import (
    MAX_PLAINTEXT,
    VapidSigner,
    build_headers,
    encrypt,
    render_payload,
    topic_header,
    ttl_seconds,
)

SUBJECT = "mailto:ops@momentcast.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _claims(header: str) -> dict[str, object]:
    token = header.split("t=", 1)[1].split(",", 1)[0]
    result: dict[str, object] = json.loads(b64url_decode(token.split(".")[1]))
    return result


def test_signer_caches_per_origin_and_resigns_before_expiry() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    clock = Clock()
    signed: list[str] = []
    signer = VapidSigner(key, SUBJECT, clock=clock, on_sign=signed.append)
    fcm = signer.authorization("https://fcm.googleapis.com")
    for _ in range(100):
        assert signer.authorization("https://fcm.googleapis.com") == fcm
    apple = signer.authorization("https://web.push.apple.com")
    assert signed == ["https://fcm.googleapis.com", "https://web.push.apple.com"]

    claims = _claims(fcm)
    assert claims == {
        "aud": "https://fcm.googleapis.com",
        "exp": int(clock.now) + 12 * 3600,
        "sub": SUBJECT,
    }
    assert _claims(apple)["aud"] == "https://web.push.apple.com"
    verify_vapid(
        fcm,
        audience="https://fcm.googleapis.com",
        expected_key=public_key_b64url(key),
        now=clock.now,
    )

    clock.now += 6 * 3600 - 1
    assert signer.authorization("https://fcm.googleapis.com") == fcm
    clock.now += 1  # half-way to expiry: a fresh token, long before the old one lapses
    fresh = signer.authorization("https://fcm.googleapis.com")
    assert fresh != fcm and signer.signatures == 3
    assert _claims(fresh)["exp"] == int(clock.now) + 12 * 3600


def test_ttl_rounds_down_and_zero_means_expired() -> None:
    now = datetime(2026, 11, 2, 12, tzinfo=UTC)
    assert ttl_seconds(now + timedelta(seconds=1200), now) == 1200
    assert ttl_seconds(now + timedelta(seconds=59.9), now) == 59
    assert ttl_seconds(now + timedelta(seconds=0.9), now) == 0
    assert ttl_seconds(now - timedelta(seconds=10), now) == 0
    with pytest.raises(ValueError, match="ttl"):
        build_headers(authorization="vapid t=x, k=y", ttl=0)


def test_headers() -> None:
    headers = build_headers(authorization="vapid t=a, k=b", ttl=90, urgency="low", topic="lunch")
    assert headers == {
        "TTL": "90",
        "Urgency": "low",
        "Topic": "lunch",
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Authorization": "vapid t=a, k=b",
    }
    assert "Topic" not in build_headers(authorization="a", ttl=1, topic=None)
    with pytest.raises(ValueError, match="urgency"):
        build_headers(authorization="a", ttl=1, urgency="urgent")


@pytest.mark.parametrize(
    "topic",
    ["lunch offers", "x" * 33, "déjeuner", "a/b", "lunch:berlin"],
)
def test_topic_is_always_valid_and_deterministic(topic: str) -> None:
    value = topic_header(topic)
    assert value is not None and 1 <= len(value) <= 32
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in value)
    assert topic_header(topic) == value
    assert topic_header(topic + "!") != value


def test_payload_limit_is_one_record_of_4096_bytes() -> None:
    private, p256dh, auth = make_keys()
    body = encrypt(b"x" * MAX_PLAINTEXT, p256dh, auth)
    assert len(body) == MAX_BODY
    plain = http_ece.decrypt(
        body, private_key=private, auth_secret=b64url_decode(auth), version="aes128gcm"
    )
    assert plain == b"x" * MAX_PLAINTEXT
    with pytest.raises(PushPayloadTooLarge):
        encrypt(b"x" * (MAX_PLAINTEXT + 1), p256dh, auth)


def test_render_payload_adds_data_and_keeps_stored_fields() -> None:
    rendered = render_payload(
        {"title": "T", "body": "B", "data": {"extra": 1, "rule": "old"}},
        {"delivery_id": 7, "rule": "lunch"},
    )
    assert json.loads(rendered) == {
        "title": "T",
        "body": "B",
        "data": {"extra": 1, "rule": "lunch", "delivery_id": 7},
    }
    assert json.loads(render_payload({"title": "Café"}, {}))["title"] == "Café"


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 2, 12, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 7 ", now) == 7
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after("Mon, 02 Nov 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("999999", now) == MAX_RETRY_AFTER
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) is None


def test_encryption_output_differs_for_the_same_input() -> None:
    _, p256dh, auth = make_keys()
    bodies = {encrypt(b"same", p256dh, auth) for _ in range(20)}
    assert len(bodies) == 20
