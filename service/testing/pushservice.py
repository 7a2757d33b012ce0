"""A strict stand-in for a browser push service (FCM, Mozilla autopush, Apple), on loopback.

It checks what real push services check (RFC 8030 headers, an RFC 8292 VAPID token bound to
this origin and to the expected server key, the 4096-byte limit), decrypts every message with
the subscriber's private key as a browser would (RFC 8291), and keeps the plaintext for the
test to read. Per-subscription fault switches make it answer like a push service on a bad day.

Usage::

    service = await PushService(ctx.keys.vapid_public_b64).start()
    sub = service.subscribe()              # browser-like keys, endpoint on this service
    ...                                    # insert sub.endpoint / sub.p256dh / sub.auth
    await service.close()

With ``ssl_context=`` (for instance :func:`service.testing.tls.make_test_certificates`'
``server_context()``) it serves https, and its endpoints are ``https://`` URLs.

Over HTTP (what ``momentcast testing push-service`` offers client developers):
``POST /subscriptions`` makes a new browser-like subscription and answers its
PushSubscriptionJSON (201), ``GET /subscriptions/{id}/messages`` lists the decrypted messages
of one, and ``POST /push/{id}`` is the push endpoint.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from service.webpush.base64url import b64url, b64url_decode

MAX_BODY = 4096
MAX_EXP_AHEAD = 24 * 3600
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_URGENCIES = {"very-low", "low", "normal", "high"}
_VAPID_HEADER = re.compile(r"^vapid\s+(.*)$", re.IGNORECASE)

# A rendered promotion as the worker stores it (the sender adds `data`).
SAMPLE_PAYLOAD = {
    "title": "Lunch at Zur Letzten Instanz?",
    "body": "Zur Letzten Instanz is 120 m away: 2-for-1 mains until 14:00.",
    "url": "https://example.com/offers/instanz",
    "icon": "https://example.com/icon.png",
    "tag": "lunch",
}


class VapidError(Exception):
    """The Authorization header is missing, malformed, badly signed or not for us."""


def verify_vapid(
    authorization: str,
    *,
    audience: str,
    expected_key: str | None,
    now: float | None = None,
    check_expiry: bool = True,
) -> dict[str, Any]:
    """Check a ``vapid t=..., k=...`` header as a push service does; return its claims."""
    match = _VAPID_HEADER.match(authorization.strip())
    if not match:
        raise VapidError("Authorization is not a vapid scheme")
    params: dict[str, str] = {}
    for part in match.group(1).split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise VapidError(f"malformed vapid parameter {part!r}")
        params[name.strip().lower()] = value.strip()
    token, key_b64 = params.get("t"), params.get("k")
    if not token or not key_b64:
        raise VapidError("vapid needs both t and k")
    if expected_key is not None and key_b64 != expected_key:
        raise VapidError("k is not the application server key of this subscription")
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b64url_decode(key_b64)
        )
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(claims_b64))
        signature = b64url_decode(signature_b64)
    except (ValueError, TypeError) as exc:
        raise VapidError(f"malformed token: {exc}") from None
    if header.get("alg") != "ES256":
        raise VapidError("alg must be ES256")
    if len(signature) != 64:
        raise VapidError("an ES256 signature is 64 bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        public_key.verify(
            der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise VapidError("bad signature") from None
    if not isinstance(claims, dict) or claims.get("aud") != audience:
        raise VapidError(f"aud must be {audience!r}")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise VapidError("sub must be a mailto: or https: URI")
    if check_expiry:
        exp = claims.get("exp")
        current = time.time() if now is None else now
        if not isinstance(exp, int) or exp <= current or exp > current + MAX_EXP_AHEAD:
            raise VapidError("exp must be in the future and at most 24 h ahead")
    return claims


@dataclass
class Fault:
    """How to misbehave for one subscription. ``times`` limits it to the first N requests.

    ``read_first`` reads the whole request before the ``delay``: a push service that has the
    message but is slow to answer, and delivers it even if the sender goes away meanwhile."""

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    read_first: bool = False
    reset: bool = False
    redirect_to: str | None = None
    times: int | None = None


@dataclass
class Received:
    """One accepted message, decrypted."""

    plaintext: bytes
    headers: dict[str, str]
    token: str
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.plaintext)


@dataclass
class BrowserSubscription:
    """What a browser holds for one push subscription: the key pair, the auth secret, and
    what its push service has received for it."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    p256dh: str
    auth: str
    fault: Fault | None = None
    received: list[Received] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``PushSubscription.toJSON()`` as a browser sends it."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }

    def messages(self) -> list[Any]:
        return [r.json() for r in self.received]


def make_keys() -> tuple[ec.EllipticCurvePrivateKey, str, str]:
    """A browser-like subscription key pair (P-256) and 16-byte auth secret, base64url."""
    private = ec.generate_private_key(ec.SECP256R1())
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return private, b64url(point), b64url(secrets.token_bytes(16))


class PushService:
    """The app, its runner and the subscriptions it knows."""

    def __init__(
        self,
        vapid_public_key: str | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        audience: str | None = None,
        check_expiry: bool = True,
        on_receive: Callable[[BrowserSubscription, Received], None] | None = None,
        on_reject: Callable[[BrowserSubscription | None, int, str], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.vapid_public_key = vapid_public_key
        # Serve https with this context (see service.testing.tls), as real push services do.
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.on_receive = on_receive
        self.on_reject = on_reject
        self._audience = audience
        self.check_expiry = check_expiry
        self.subscriptions: dict[str, BrowserSubscription] = {}
        self.tokens: set[str] = set()
        self.rejections: list[tuple[int, str]] = []
        self.origin = ""
        self._runner: web.AppRunner | None = None

    @property
    def audience(self) -> str:
        return self._audience or self.origin

    async def start(self) -> PushService:
        # Larger than MAX_BODY so that oversized bodies reach the handler and get our 413.
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/push/{sub_id}", self._handle)
        app.router.add_post("/subscriptions", self._new_subscription)
        app.router.add_get("/subscriptions/{sub_id}/messages", self._messages)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except BaseException:
            await self.close()
            raise
        port = int(self._runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        self.origin = f"{scheme}://{host}:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def subscribe(self, fault: Fault | None = None) -> BrowserSubscription:
        private, p256dh, auth = make_keys()
        sub_id = secrets.token_urlsafe(12)
        sub = BrowserSubscription(
            sub_id, f"{self.origin}/push/{sub_id}", private, p256dh, auth, fault
        )
        self.subscriptions[sub_id] = sub
        return sub

    def all_received(self) -> list[Received]:
        return [r for sub in self.subscriptions.values() for r in sub.received]

    async def _new_subscription(self, request: web.Request) -> web.Response:
        return web.json_response(self.subscribe().to_json(), status=201)

    async def _messages(self, request: web.Request) -> web.Response:
        sub = self.subscriptions.get(request.match_info["sub_id"])
        if sub is None:
            return web.json_response({"code": 404, "reason": "no such subscription"}, status=404)
        messages: list[Any] = []
        for received in sub.received:
            try:
                messages.append(received.json())
            except ValueError:  # not JSON: show the text as it came
                messages.append(received.plaintext.decode("utf-8", "replace"))
        return web.json_response(messages)

    def _reject(self, sub: BrowserSubscription | None, status: int, reason: str) -> web.Response:
        self.rejections.append((status, reason))
        if sub is not None:
            sub.statuses.append(status)
        if self.on_reject is not None:
            self.on_reject(sub, status, reason)
        return web.json_response({"code": status, "reason": reason}, status=status)

    def _active_fault(self, sub: BrowserSubscription) -> Fault | None:
        fault = sub.fault
        if fault is None:
            return None
        if fault.times is not None:
            if fault.times <= 0:
                return None
            fault.times -= 1
        return fault

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sub = self.subscriptions.get(request.match_info["sub_id"])
        if sub is None:
            return self._reject(None, 404, "no such subscription")
        sub.request_times.append(time.monotonic())
        fault = self._active_fault(sub)
        if fault is not None and fault.read_first:
            await request.read()  # cached: read() below returns it again
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.reset:
            assert request.transport is not None
            request.transport.abort()
            sub.statuses.append(0)
            raise ConnectionResetError("fault: connection reset")
        body = await request.read()
        if len(body) > MAX_BODY:
            return self._reject(sub, 413, f"body is {len(body)} bytes")
        problem = self._check_headers(request)
        if problem:
            return self._reject(sub, 400, problem)
        authorization = request.headers.get("Authorization")
        if not authorization:
            return self._reject(sub, 401, "missing Authorization")
        try:
            verify_vapid(
                authorization,
                audience=self.audience,
                expected_key=self.vapid_public_key,
                check_expiry=self.check_expiry,
            )
        except VapidError as exc:
            return self._reject(sub, 403, str(exc))
        try:
            plaintext = http_ece.decrypt(
                body,
                private_key=sub.private_key,
                auth_secret=b64url_decode(sub.auth),
                version="aes128gcm",
            )
        except Exception as exc:  # http_ece raises several types for a bad body
            return self._reject(sub, 400, f"cannot decrypt: {exc!r}")
        token = authorization.split("t=", 1)[1].split(",", 1)[0].strip()
        self.tokens.add(token)
        if fault is not None and fault.redirect_to:
            sub.statuses.append(307)
            raise web.HTTPTemporaryRedirect(fault.redirect_to)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            sub.statuses.append(fault.status)
            self.rejections.append((fault.status, "fault"))
            return web.Response(status=fault.status, text="fault", headers=headers)
        received = Received(plaintext, dict(request.headers), token)
        sub.received.append(received)
        sub.statuses.append(201)
        if self.on_receive is not None:
            self.on_receive(sub, received)
        return web.Response(
            status=201, headers={"Location": f"{self.origin}/m/{secrets.token_urlsafe(9)}"}
        )

    @staticmethod
    def _check_headers(request: web.Request) -> str | None:
        ttl = request.headers.get("TTL")
        if ttl is None or not ttl.isdigit():
            return "TTL header missing or not a non-negative integer"
        urgency = request.headers.get("Urgency")
        if urgency is not None and urgency not in _URGENCIES:
            return f"bad Urgency {urgency!r}"
        topic = request.headers.get("Topic")
        if topic is not None and not _TOPIC.match(topic):
            return f"bad Topic {topic!r}"
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return "Content-Encoding must be aes128gcm"
        return None
