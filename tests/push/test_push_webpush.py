"""Message building: VAPID caching, headers, TTL, Topic, size limit, Retry-After."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from service import tokens
from service.errors import PushPayloadTooLarge
from service.push.retry import MAX_RETRY_AFTER, parse_retry_after
from service.testing import MAX_BODY, make_keys, verify_vapid
from service.webpush.base64url import b64url_decode
from service.webpush.encryption import MAX_PLAINTEXT, encrypt
from service.webpush.message import (
    BASE_URL_BUDGET,
    build_headers,
    render_payload,
    rendered_size_bound,
    topic_header,
    ttl_seconds,
)
from service.webpush.vapid import VapidSigner, public_key_b64url

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


BASE = "https://push.example.com"
DATA = {
    "delivery_id": 7,
    "rule": "lunch",
    "variant": "b",
    "events_url": BASE + "/v1/events",
    "event_token": "tok7",
}


def test_render_payload_is_a_declarative_message_with_click_links() -> None:
    stored = {
        "title": "Mittag im Café?",
        "body": "80 m",
        "url": "https://example.com/o/3",
        "icon": "https://example.com/i.png",
        "image": "https://example.com/big.jpg",
        "tag": "lunch",
        "lang": "de",
        "actions": [
            {"action": "book", "title": "Tisch buchen", "url": "https://example.com/book"},
            {"action": "menu", "title": "Karte", "url": "https://example.com/menu"},
        ],
    }
    rendered = render_payload(stored, DATA, base_url=BASE)
    assert json.loads(rendered) == {
        "web_push": 8030,
        "notification": {
            "title": "Mittag im Café?",
            "body": "80 m",
            "navigate": BASE + "/c/7/open?t=tok7",
            "lang": "de",
            "tag": "lunch",
            "icon": "https://example.com/i.png",
            "image": "https://example.com/big.jpg",
            "actions": [
                {"action": "book", "title": "Tisch buchen", "navigate": BASE + "/c/7/book?t=tok7"},
                {"action": "menu", "title": "Karte", "navigate": BASE + "/c/7/menu?t=tok7"},
            ],
            "data": {**DATA, "url": "https://example.com/o/3"},
        },
        "mutable": True,
    }
    # Compact UTF-8, no escapes: every byte counts against the 3993.
    assert "Café".encode() in rendered and b", " not in rendered
    # The actions' own urls stay with the delivery: GET /c/ looks them up.
    assert b"example.com/book" not in rendered


def test_render_payload_defaults() -> None:
    message = json.loads(render_payload({"title": "T", "body": "B"}, DATA, base_url=BASE))
    notification = message["notification"]
    assert notification["lang"] == ""
    assert notification["navigate"] == BASE + "/c/7/open?t=tok7"
    assert notification["data"]["url"] is None
    assert not {"icon", "image", "actions"} & set(notification)
    # Extra data stored with the message is kept; the per-delivery values win.
    stored = {"title": "T", "body": "B", "data": {"extra": 1, "rule": "old"}}
    data = json.loads(render_payload(stored, DATA, base_url=BASE))["notification"]["data"]
    assert data == {"extra": 1, **DATA, "url": None}


def test_every_notification_has_a_tag_one_delivery_shows_once() -> None:
    # A push sent twice (its outcome lost with a killed sender) must show once on the device:
    # without a tag of the message's own, the delivery's tag; the copy does not alert again.
    notification = json.loads(render_payload({"title": "T"}, DATA, base_url=BASE))["notification"]
    assert (notification["tag"], notification["renotify"]) == ("mc-7", False)
    tagged = {"title": "T", "tag": "lunch"}
    notification = json.loads(render_payload(tagged, DATA, base_url=BASE))["notification"]
    assert notification["tag"] == "lunch" and "renotify" not in notification


def test_rendered_size_bound_covers_the_longest_ids_tokens_and_urls() -> None:
    stored = {
        "title": "T" * 40,
        "body": "B" * 100,
        "url": "https://example.com/" + "u" * 50,
        "tag": "lunch",
        "actions": [{"action": "a" * 64, "title": "x", "url": "https://example.com/a"}] * 2,
    }
    bound = rendered_size_bound(stored, rule="lunch", variant="b")
    delivery_id = 2**63 - 1
    data = {
        **DATA,
        "delivery_id": delivery_id,
        "event_token": tokens.event_token(b"k" * 32, delivery_id),
        "events_url": "https://" + "h" * (BASE_URL_BUDGET - 8) + "/v1/events",
    }
    actual = render_payload(stored, data, base_url="https://" + "h" * (BASE_URL_BUDGET - 8))
    assert len(actual) == bound
    assert len(render_payload(stored, DATA, base_url=BASE)) < bound


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
