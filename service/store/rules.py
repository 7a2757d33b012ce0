"""Queries of the marketer's tools: the test push, shadow rules' sends and the backtest."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from service.store.base import StoreBase
from service.store.signals import SentRow


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
