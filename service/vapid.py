"""VAPID key pair (RFC 8292): generated once into DATA_DIR, or given by VAPID_PRIVATE_KEY."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.errors import ConfigError
from service.files import write_secret_file

KEY_FILE = "vapid_private.pem"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding (browsers send it without)."""
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
