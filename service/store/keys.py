"""The fingerprints of the deployment's keys (VAPID public key, SECRET_KEY)."""

from __future__ import annotations

from service.store.base import StoreBase


class KeyQueries(StoreBase):
    async def record_key_fingerprint(self, name: str, fingerprint: str) -> str:
        """Record ``fingerprint`` under ``name`` unless one is; return the recorded one."""
        # Two first starts at once: the loser's statement may not see the winner's row in its
        # snapshot (its INSERT waited for it, then did nothing); a second statement does.
        for _ in range(2):
            recorded = await self._fetchval("record_key_fingerprint", name, fingerprint)
            if recorded is not None:
                return str(recorded)
        raise AssertionError(f"no fingerprint recorded for {name}")  # pragma: no cover

    async def replace_key_fingerprint(self, name: str, fingerprint: str) -> None:
        """A deliberate rotation: ``fingerprint`` becomes the deployment's."""
        await self._execute("replace_key_fingerprint", name, fingerprint)
