"""Queries of retention: shadow rules' would-be sends by age, and the daily roll-up of
deliveries, events and campaigns' suppressions (migrations/0013_rollups.sql)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from service.store.base import StoreBase


@dataclass(frozen=True, slots=True)
class RolledUp:
    """What one batch of the roll-up added to the daily counts and deleted."""

    deliveries: int = 0
    events: int = 0
    suppressions: int = 0


class RetentionQueries(StoreBase):
    async def purge_shadow_sends(self, *, older_than: timedelta) -> int:
        """Delete every shadow rule's would-be send older than ``older_than``; how many went."""
        status = await self._execute("purge_shadow_sends_older", older_than)
        return int(status.split()[-1])

    async def rollup_cutoff(self, *, older_than: timedelta) -> datetime:
        """Midnight UTC of the day ``older_than`` ago, by the database's clock: rows created
        before it are rolled up, whole days at a time."""
        cutoff: datetime = await self._fetchval("rollup_cutoff", older_than)
        return cutoff

    async def roll_up_batch(self, *, before: datetime, limit: int) -> RolledUp | None:
        """Roll up at most ``limit`` deliveries (with their events) and ``limit`` campaign
        suppressions created before ``before``, oldest first, in one transaction: added to the
        daily counts and deleted. None when another process is rolling up (it holds the lock)."""
        async with self.transaction() as tx:
            if not await tx._fetchval("rollup_lock"):
                return None
            # Lock first, count after: the second statement's snapshot then holds every event
            # recorded before the lock, and none can come in until the commit.
            ids = [r["id"] for r in await tx._fetch("rollup_claim_deliveries", before, limit)]
            deliveries = events = 0
            if ids:
                row = await tx._fetchrow("rollup_deliveries", ids)
                assert row is not None
                deliveries, events = row["deliveries"], row["events"]
            suppressions: int = await tx._fetchval("rollup_suppressions", before, limit)
            return RolledUp(deliveries, events, suppressions)
