"""Bearer tokens: device tokens (stored as SHA-256 only) and the admin token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from service.files import read_or_create_secret
from service.webpush.base64url import b64url

ADMIN_TOKEN_FILE = "admin_token"  # noqa: S105 - a file name, not a secret
SECRET_KEY_FILE = "secret_key"  # noqa: S105


def new_token() -> str:
    """32 random bytes, base64url: shown to its holder once, never stored in the clear."""
    return b64url(secrets.token_bytes(32))


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def tokens_equal(token: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


class AdminAuth:
    """Checks the admin token; only its hash is kept in memory after start-up."""

    def __init__(self, token: str) -> None:
        self._hash = hash_token(token)

    def check(self, token: str) -> bool:
        return tokens_equal(token, self._hash)


def admin_token_path(data_dir: Path) -> Path:
    return data_dir / ADMIN_TOKEN_FILE


def load_admin_token(data_dir: Path, configured: str | None) -> str:
    """ADMIN_TOKEN when set, else the one generated once into DATA_DIR (mode 0600)."""
    if configured:
        return configured
    raw = read_or_create_secret(admin_token_path(data_dir), (new_token() + "\n").encode())
    return raw.decode("ascii").strip()


def load_secret_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The server-side key for HMACs (event tokens): SECRET_KEY when set (every process of a
    deployment needs the same one), else the one generated once into DATA_DIR."""
    if configured:
        return configured.encode("utf-8")
    return read_or_create_secret(data_dir / SECRET_KEY_FILE, secrets.token_bytes(32))


def event_token(secret_key: bytes, delivery_id: int) -> str:
    """The per-delivery token that lets a device report shown/clicked for that delivery only."""
    mac = hmac.new(secret_key, f"delivery:{delivery_id}".encode(), hashlib.sha256).digest()
    return b64url(mac[:24])


def check_event_token(secret_key: bytes, delivery_id: int, token: str) -> bool:
    # Bytes, not str: compare_digest refuses non-ASCII str, and a token is attacker input.
    expected = event_token(secret_key, delivery_id).encode("ascii")
    return hmac.compare_digest(expected, token.encode("utf-8", "surrogatepass"))
