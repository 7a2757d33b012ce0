"""Queries of the marketer's tools: the test push, shadow rules' sends and the backtest."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.store.base import StoreBase
from service.store.signals import PendingSignal, SentRow, Subscriber


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """Whole subscribers' stored signals of a period, with their profiles (the backtest)."""

    signals: list[PendingSignal]
    subscribers: list[Subscriber]
    last: uuid.UUID | None  # the last subscriber's id: where the next chunk starts


@dataclass(frozen=True, slots=True)
class LiveCount:
    rule_id: str
    decided: int
    sent: int


class RuleQueries(StoreBase):
    async def insert_test_delivery(
        self,
        *,
        subscription_id: uuid.UUID,
        rule_id: str,
        variant: str,
        place_id: str | None,
        payload: Mapping[str, Any],
        ttl_s: int,
        urgency: str,
        topic: str | None,
    ) -> int:
        """A test push into the outbox, due now and marked test; returns its delivery id."""
        delivery_id: int = await self._fetchval(
            "insert_test_delivery",
            subscription_id,
            rule_id,
            variant,
            place_id,
            dict(payload),
            ttl_s,
            urgency,
            topic,
        )
        return delivery_id

    async def shadow_history(
        self, *, subscription_ids: Sequence[str], since: datetime
    ) -> list[SentRow]:
        """What shadow rules would have sent to these subscribers after ``since``, oldest
        first."""
        rows = await self._fetch("shadow_history_of", subscription_ids, since)
        return [SentRow.from_row(r) for r in rows]

    async def record_shadow_sends(
        self, *, subscription_ids: Sequence[str], rows: Sequence[SentRow], before: datetime
    ) -> None:
        """Add shadow rules' would-be sends, and drop these subscribers' ones up to
        ``before`` (no limit looks back that far)."""
        await self._execute("purge_shadow_sends", subscription_ids, before)
        if rows:
            await self._execute(
                "insert_shadow_sends",
                [r.subscription_id for r in rows],
                [r.rule_id for r in rows],
                [r.place_id for r in rows],
                [r.decided_at for r in rows],
            )

    # --- the backtest: reads only --------------------------------------------------------

    async def backtest_ready(self) -> bool:
        """Whether the schema has what the backtest reads (migration 0010)."""
        ready: bool = await self._fetchval("backtest_ready")
        return ready

    async def backtest_stored_since(self) -> datetime | None:
        """The time of the oldest stored signal (None: none is stored)."""
        oldest: datetime | None = await self._fetchval("backtest_stored_since")
        return oldest

    async def backtest_chunk(
        self, *, since: datetime, until: datetime, after: uuid.UUID | None, limit: int
    ) -> StoredChunk:
        """The stored signals in [since, until) of the next ``limit`` subscribers after
        ``after`` (by id), each subscriber's in time order, and their profiles."""
        rows = await self._fetch("backtest_subscribers", since, until, after, limit)
        ids = [r["subscription_id"] for r in rows]
        if not ids:
            return StoredChunk([], [], None)
        signals = await self._fetch("backtest_signals", ids, since, until)
        profiles = await self._fetch("backtest_profiles", ids)
        return StoredChunk(
            signals=[PendingSignal.from_row(r) for r in signals],
            subscribers=[Subscriber.from_row(r) for r in profiles],
            last=ids[-1],
        )

    async def backtest_live(self, *, since: datetime, until: datetime) -> list[LiveCount]:
        """Per rule, the deliveries decided in [since, until) and how many were sent (test
        pushes and campaigns left out)."""
        rows = await self._fetch("backtest_live", since, until)
        return [LiveCount(r["rule_id"], r["decided"], r["sent"]) for r in rows]
