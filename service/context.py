"""What a running momentcast process holds: settings, the pool, keys and the active rules."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from service import tokens
from service.settings import Settings
from service.store import Store
from service.store.base import Pool
from service.webpush import vapid

log = logging.getLogger(__name__)


@dataclass
class Keys:
    """Secrets loaded once at start-up from settings or DATA_DIR."""

    vapid_private: ec.EllipticCurvePrivateKey
    vapid_public_b64: str
    admin: tokens.AdminAuth
    secret_key: bytes

    @classmethod
    def load(cls, settings: Settings) -> Keys:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        private = vapid.load_or_create(settings.data_dir, settings.vapid_private_key)
        admin_token = tokens.load_admin_token(settings.data_dir, settings.admin_token)
        return cls(
            vapid_private=private,
            vapid_public_b64=vapid.public_key_b64url(private),
            admin=tokens.AdminAuth(admin_token),
            secret_key=tokens.load_secret_key(settings.data_dir, settings.secret_key),
        )


@dataclass
class Context:
    """Shared by the API, the worker and the sender of one process."""

    settings: Settings
    store: Store
    keys: Keys
    # service.reload.holder.RulesHolder once rules are loaded; Any keeps this module free of rules/.
    rules: Any = None

    @property
    def pool(self) -> Pool:
        """The store's pool, for tests and benchmarks that inspect the database directly."""
        return self.store.pool
