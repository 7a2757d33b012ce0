"""The backtest: the stored signals of a period through the engine with a rule set, read
through the store and writing nothing (``momentcast rules backtest``, ``GET /v1/backtest``).

The signals (within SIGNAL_RETENTION: older processed ones are deleted) are read in one
read-only snapshot, a chunk of whole subscribers at a time, with the subscribers' current
profiles; the pure :class:`service.rules.backtest.Backtest` runs them from fresh presence and
caps, and the report puts beside each rule what the live rules decided and sent in the same
period (deliveries by decision time, test pushes left out).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from service.errors import DatabaseError
from service.rows import profile_of, signal_of
from service.rules.backtest import Backtest, LiveSends
from service.rules.ruleset import Ruleset
from service.store import Store

CHUNK_SUBSCRIBERS = 500


async def run_backtest(
    store: Store,
    ruleset: Ruleset,
    period: timedelta,
    *,
    retention: timedelta | None = None,
    until: datetime | None = None,
    offload: bool = False,
    chunk: int = CHUNK_SUBSCRIBERS,
) -> dict[str, Any]:
    """The backtest report of ``ruleset`` over the ``period`` before ``until`` (default now).
    ``offload`` runs the engine in a thread (the API's event loop stays free)."""
    end = until or datetime.now(UTC)
    start = end - period
    bt = Backtest(ruleset)
    async with store.transaction(isolation="repeatable_read", readonly=True) as tx:
        if not await tx.backtest_ready():
            raise DatabaseError("the database is not migrated: run momentcast migrate first")
        stored_since = await tx.backtest_stored_since()
        after = None
        while True:
            part = await tx.backtest_chunk(since=start, until=end, after=after, limit=chunk)
            if part.last is None:
                break
            signals = [signal_of(r) for r in part.signals]
            profiles = {s.id: profile_of(s) for s in part.subscribers}
            if offload:
                await asyncio.to_thread(bt.add, signals, profiles)
            else:
                bt.add(signals, profiles)
            after = part.last
        live = [
            LiveSends(x.rule_id, x.decided, x.sent)
            for x in await tx.backtest_live(since=start, until=end)
        ]
    return bt.report(
        since=start, until=end, live=live, retention=retention, stored_since=stored_since
    )
