"""Queries of the marketer's tools: the test push, shadow rules' sends and the backtest."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from service.store.base import StoreBase


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
