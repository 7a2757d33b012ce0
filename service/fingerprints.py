"""The deployment's key fingerprints: one VAPID key pair and one SECRET_KEY for all processes.

Two hosts with different keys would otherwise both start, and then the pushes of one (push
services answer 401/403) or the engagement events of the other (403) fail in silence. The
database is what every process of a deployment shares, so it remembers fingerprints of the
keys - never the keys - and a process with other keys stops at start-up with one line.
"""

from __future__ import annotations

import hashlib
import hmac

from service.errors import ConfigError
from service.settings import ENV_PREFIX
from service.store import Store
from service.vocabulary import DeploymentKey
from service.webpush.base64url import b64url_decode

# The rows' names (service.vocabulary.DEPLOYMENT_KEYS, the column's CHECK list).
VAPID: DeploymentKey = "vapid_public_key"
SECRET: DeploymentKey = "secret_key"  # noqa: S105 - the name of a row, not a secret
# What each fingerprint is of, named by the setting an operator fixes.
SETTINGS = {VAPID: f"{ENV_PREFIX}VAPID_PRIVATE_KEY", SECRET: f"{ENV_PREFIX}SECRET_KEY"}


def vapid_fingerprint(public_key_b64: str) -> str:
    """SHA-256 of the public key's 65 bytes (the public key is public; the hash is short)."""
    return hashlib.sha256(b64url_decode(public_key_b64)).hexdigest()


def secret_fingerprint(secret_key: bytes) -> str:
    """SHA-256 of an HMAC made with the key: equal keys give equal fingerprints, and the
    fingerprint gives nothing to guess the key with offline beyond what the HMAC gives."""
    mac = hmac.new(secret_key, b"momentcast deployment key fingerprint", hashlib.sha256)
    return hashlib.sha256(mac.digest()).hexdigest()


async def check(store: Store, vapid_public_b64: str, secret_key: bytes) -> None:
    """Record this process's fingerprints if none are; else stop unless they are the same."""
    mine = {VAPID: vapid_fingerprint(vapid_public_b64), SECRET: secret_fingerprint(secret_key)}
    for name, fingerprint in mine.items():
        recorded = await store.record_key_fingerprint(name, fingerprint)
        if recorded != fingerprint:
            what = "VAPID key pair" if name == VAPID else "key"
            raise ConfigError(
                f"{SETTINGS[name]}: this process's {what} differs from the one the other "
                f"processes of this deployment use (fingerprint {fingerprint[:12]}, the "
                f"database recorded {recorded[:12]}); give every process the same one, or see "
                "docs/operations.md, Rotating keys"
            )


async def record_vapid_rotation(store: Store, vapid_public_b64: str) -> None:
    """`momentcast vapid --generate`: the new key pair is the deployment's from now on."""
    await store.replace_key_fingerprint(VAPID, vapid_fingerprint(vapid_public_b64))
