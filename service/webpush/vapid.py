"""VAPID (RFC 8292): the key pair and the signer of the tokens in every push's Authorization.

The key pair is generated once into DATA_DIR, or given by VAPID_PRIVATE_KEY. The signer makes
one token per push-service origin and reuses it until it is half-way to expiry (signing per
message would cost more CPU than the encryption and buys nothing).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import jwt as vapid_jwt

from service.errors import ConfigError
from service.files import write_secret_file
from service.webpush.base64url import b64url, b64url_decode

KEY_FILE = "vapid_private.pem"

# Apple rejects tokens more than a day ahead; 12 h leaves room for clock skew between us and
# them, and re-signing at half-life means a cached token never gets near its expiry.
VAPID_LIFETIME = 12 * 3600
VAPID_REFRESH_AFTER = 6 * 3600


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_to_b64url(key: ec.EllipticCurvePrivateKey) -> str:
    """The raw 32-byte scalar, base64url: the form VAPID_PRIVATE_KEY takes."""
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def public_key_b64url(key: ec.EllipticCurvePrivateKey) -> str:
    """The 65-byte uncompressed P-256 point, base64url (browsers' applicationServerKey)."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


def parse_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """Accept a PEM (PKCS#8 or SEC1) or a base64url raw 32-byte scalar."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = b64url_decode(text)
            if len(raw) != 32:
                raise ValueError(f"expected 32 bytes, got {len(raw)}")
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"MOMENTCAST_VAPID_PRIVATE_KEY: not a P-256 private key (PEM or base64url): {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError("MOMENTCAST_VAPID_PRIVATE_KEY: the key must be on the P-256 curve")
    return key


def load_or_create(data_dir: Path, configured: str | None) -> ec.EllipticCurvePrivateKey:
    """The configured key, else the one kept in DATA_DIR, else a new one saved there (0600)."""
    if configured:
        return parse_private_key(configured)
    path = data_dir / KEY_FILE
    if path.exists():
        try:
            return parse_private_key(path.read_text(encoding="ascii"))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    key = generate_private_key()
    write_secret_file(path, private_key_to_pem(key))
    return key


def rotate(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """Replace the kept key. Existing browser subscriptions are bound to the old public key."""
    key = generate_private_key()
    path = data_dir / KEY_FILE
    if path.exists():
        os.replace(path, path.with_suffix(".pem.old"))
    write_secret_file(path, private_key_to_pem(key))
    return key


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
        # py_vapid assembles and signs the ES256 JWT (raw r||s, as JWS wants). Its Vapid class
        # would also re-check the claims on every call; the subject is checked once, at
        # start-up (settings), and the audience is the endpoint's origin, so its jwt.sign.
        jwt = vapid_jwt.sign({"aud": origin, "exp": expires_at, "sub": self._subject}, self._key)
        self.signatures += 1
        if self._on_sign is not None:
            self._on_sign(origin)
        return _Token(f"vapid t={jwt}, k={self.public_key}", now, expires_at)
