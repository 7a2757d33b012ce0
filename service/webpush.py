"""Web Push message building: RFC 8291 encryption, RFC 8292 VAPID and RFC 8030 headers.

The crypto primitives come from http-ece and cryptography; this module only decides what goes
in: a fresh sender key and salt for every message, one record, and one VAPID token per
push-service origin reused until it is half-way to expiry (signing per message would cost
more CPU than the encryption and buys nothing).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import http_ece
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from service.errors import PushPayloadTooLarge
from service.vapid import b64url, b64url_decode, public_key_b64url

# The push service's limit is 4096 bytes of body. The aes128gcm header with a 65-byte key id
# takes 86 and one record adds a delimiter byte and a 16-byte tag: 4096 - 86 - 17 = 3993.
MAX_PLAINTEXT = 3993
RECORD_SIZE = 4096

URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

# Apple rejects tokens more than a day ahead; 12 h leaves room for clock skew between us and
# them, and re-signing at half-life means a cached token never gets near its expiry.
VAPID_LIFETIME = 12 * 3600
VAPID_REFRESH_AFTER = 6 * 3600


def encrypt(plaintext: bytes, p256dh: str | bytes, auth: str | bytes) -> bytes:
    """The aes128gcm body for one subscriber: fresh ECDH key and salt, a single record."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise PushPayloadTooLarge(
            f"payload is {len(plaintext)} bytes; the limit is {MAX_PLAINTEXT}"
        )
    ua_public = b64url_decode(p256dh) if isinstance(p256dh, str) else p256dh
    auth_secret = b64url_decode(auth) if isinstance(auth, str) else auth
    # A new key per message is what makes the ciphertexts of one subscriber unlinkable.
    sender_key = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        plaintext,
        private_key=sender_key,
        dh=ua_public,
        auth_secret=auth_secret,
        version="aes128gcm",
        rs=RECORD_SIZE,
    )
    return body


def render_payload(payload: dict[str, Any], data: dict[str, Any]) -> bytes:
    """The JSON the service worker receives: the stored message plus per-delivery ``data``."""
    message = dict(payload)
    stored = message.get("data")
    message["data"] = {**stored, **data} if isinstance(stored, dict) else dict(data)
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def topic_header(topic: str | None) -> str | None:
    """A valid RFC 8030 Topic derived from the rule's topic (None when it has none).

    Topics that already fit (<= 32 URL-safe characters) pass unchanged so they stay readable
    in push-service dashboards; others are hashed so the mapping stays deterministic and a
    newer message with the same rule topic still replaces an undelivered older one.
    """
    if not topic:
        return None
    if _TOPIC_RE.match(topic):
        return topic
    return b64url(hashlib.sha256(topic.encode("utf-8")).digest())[:32]


def ttl_seconds(expires_at: datetime, now: datetime) -> int:
    """Whole seconds left; rounding down so the push service never keeps a message too long.

    0 means the delivery has expired and must not be sent (a TTL of 0 would ask the push
    service to try once and drop it, which is not what the rule asked for).
    """
    remaining = (expires_at - now).total_seconds()
    return max(0, math.floor(remaining))


def build_headers(
    *, authorization: str, ttl: int, urgency: str = "normal", topic: str | None = None
) -> dict[str, str]:
    """Request headers of one push message."""
    if ttl < 1:
        raise ValueError("ttl must be at least 1 second; expired deliveries are not sent")
    if urgency not in URGENCIES:
        raise ValueError(f"urgency must be one of {sorted(URGENCIES)}")
    headers = {
        "TTL": str(ttl),
        "Urgency": urgency,
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Authorization": authorization,
    }
    topic_value = topic_header(topic)
    if topic_value is not None:
        headers["Topic"] = topic_value
    return headers


@dataclass
class _Token:
    header: str
    signed_at: float
    expires_at: int


class VapidSigner:
    """Signs one ES256 JWT per push-service origin and hands out the cached header."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        subject: str,
        *,
        lifetime: int = VAPID_LIFETIME,
        refresh_after: int = VAPID_REFRESH_AFTER,
        clock: Callable[[], float] = time.time,
        on_sign: Callable[[str], None] | None = None,
    ) -> None:
        if refresh_after >= lifetime:
            raise ValueError("refresh_after must be shorter than the token lifetime")
        self._key = private_key
        self._subject = subject
        self._lifetime = lifetime
        self._refresh_after = refresh_after
        self._clock = clock
        self._on_sign = on_sign
        self.public_key = public_key_b64url(private_key)
        self._header_b64 = b64url(b'{"typ":"JWT","alg":"ES256"}')
        self._tokens: dict[str, _Token] = {}
        # The benchmark and tests may sign from threads; the cache must not sign twice.
        self._lock = threading.Lock()
        self.signatures = 0

    def authorization(self, origin: str) -> str:
        """``vapid t=<jwt>, k=<public key>`` for requests to ``origin``."""
        now = self._clock()
        token = self._tokens.get(origin)
        if token is not None and now - token.signed_at < self._refresh_after:
            return token.header
        with self._lock:
            token = self._tokens.get(origin)
            if token is None or now - token.signed_at >= self._refresh_after:
                token = self._sign(origin, now)
                self._tokens[origin] = token
            return token.header

    def _sign(self, origin: str, now: float) -> _Token:
        expires_at = int(now) + self._lifetime
        claims = {"aud": origin, "exp": expires_at, "sub": self._subject}
        claims_b64 = b64url(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        signing_input = f"{self._header_b64}.{claims_b64}".encode("ascii")
        der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS wants the raw 64-byte r||s, not the DER structure cryptography returns.
        signature = b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        self.signatures += 1
        if self._on_sign is not None:
            self._on_sign(origin)
        jwt = f"{self._header_b64}.{claims_b64}.{signature}"
        return _Token(f"vapid t={jwt}, k={self.public_key}", now, expires_at)
