"""Queries of the outbox's consumer: claiming due deliveries and recording what became of them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Self

import asyncpg

from service.store.base import StoreBase


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A due delivery leased to one sender, with what it needs of its subscription."""

    id: int
    # This claim's lease token: an outcome is recorded only while the row still carries it.
    lease: uuid.UUID
    subscription_id: uuid.UUID | None
    rule_id: str | None  # a rule's delivery, or
    campaign_id: str | None  # a campaign's
    variant: str
    payload: dict[str, Any] | None  # None once erased
    ttl_s: int
    urgency: str
    topic: str | None
    expires_at: datetime
    attempts: int
    # None when the subscription was deleted (the row keeps no personal data then).
    endpoint: str | None
    p256dh: str | None
    auth: str | None
    subscription_active: bool
    paused: bool
    # The database's clock at claim time: ttl arithmetic must not depend on this host's clock.
    db_now: datetime

    @property
    def source(self) -> dict[str, str]:
        """The payload's ``data`` key naming where the push comes from: rule or campaign."""
        if self.campaign_id is not None:
            return {"campaign": self.campaign_id}
        return {"rule": self.rule_id or ""}

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(
            id=row["id"],
            lease=row["claim_token"],
            subscription_id=row["subscription_id"],
            rule_id=row["rule_id"],
            campaign_id=row["campaign_id"],
            variant=row["variant"],
            payload=row["payload"],
            ttl_s=row["ttl_s"],
            urgency=row["urgency"],
            topic=row["topic"],
            expires_at=row["expires_at"],
            attempts=row["attempts"],
            endpoint=row["endpoint"],
            p256dh=row["p256dh"],
            auth=row["auth"],
            subscription_active=row["subscription_status"] == "active",
            paused=bool(row["paused"]),
            db_now=row["db_now"],
        )


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What became of one claimed delivery; ``status`` 'pending' means retry or release.

    ``lease`` is the claim's token (:attr:`ClaimedDelivery.lease`): without the right one the
    outcome is not recorded."""

    id: int
    status: str
    attempted: int = 0
    http_status: int | None = None
    error: str | None = None
    delay: float | None = None  # seconds from now until the next try, for 'pending'
    gone_subscription: uuid.UUID | None = None
    lease: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class OriginPause:
    """A push-service origin's 429 pause as every sender shares it (table ``push_origins``):
    ``pause_s`` seconds left from the database's now, and the 429s in a row."""

    origin: str
    pause_s: float
    strikes: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(origin=row["origin"], pause_s=row["pause_s"], strikes=row["strikes"])


@dataclass(frozen=True, slots=True)
class Claim:
    """A sender's claimed batch, and every origin's shared 429 pause at the time."""

    rows: list[ClaimedDelivery]
    pauses: list[OriginPause]  # empty when nothing was claimed


class DeliveryQueries(StoreBase):
    async def claim_deliveries(self, *, limit: int, lease_s: float) -> Claim:
        """Lease up to ``limit`` due deliveries to this sender for ``lease_s`` seconds."""
        rows = await self._fetch("push_claim", limit, lease_s)
        pauses = [OriginPause(*pause) for pause in (rows[0]["pauses"] or ())] if rows else []
        return Claim([ClaimedDelivery.from_row(row) for row in rows], pauses)

    async def record_outcomes(
        self,
        outcomes: Sequence[DeliveryOutcome],
        pauses: Sequence[OriginPause] = (),
        *,
        fatigue: tuple[int, timedelta] | None = None,
    ) -> int:
        """Record a batch of outcomes in one transaction; a 404/410 retires its subscription
        and cancels what else was pending for it. ``pauses`` are written in the same
        transaction (see :meth:`pause_origins`).

        Fenced: an outcome whose ``lease`` is no longer the row's claim token (the lease ran
        out and another sender claimed the row, or it was recorded already) changes nothing.
        ``fatigue`` (after, rest): the policy's fatigue guard, whose counts the same
        statement advances (service/engagement/fatigue.py); None when it is off.
        Returns how many outcomes were recorded."""
        if not outcomes and not pauses:
            return 0
        gone = sorted({o.gone_subscription for o in outcomes if o.gone_subscription is not None})
        if not pauses and not gone:
            # The common batch: one statement is atomic by itself, and BEGIN and COMMIT would
            # be two more round trips per batch (a batch of one push at low rates).
            return await self._record(outcomes, fatigue)
        async with self.transaction() as tx:
            if pauses:
                await tx.pause_origins(pauses)
            if not outcomes:
                return 0
            recorded = await tx._record(outcomes, fatigue)
            if gone:
                await tx._execute("push_mark_gone", gone)
                await tx._execute("push_cancel_for_gone", gone)
            return recorded

    async def _record(
        self, outcomes: Sequence[DeliveryOutcome], fatigue: tuple[int, timedelta] | None
    ) -> int:
        recorded = await self._fetchval(
            "push_record",
            [o.id for o in outcomes],
            [o.lease for o in outcomes],
            [o.status for o in outcomes],
            [o.attempted for o in outcomes],
            [o.http_status for o in outcomes],
            [o.error for o in outcomes],
            [o.delay for o in outcomes],
            fatigue[0] if fatigue else None,
            fatigue[1].total_seconds() if fatigue else None,
        )
        return int(recorded)

    async def pause_origins(self, pauses: Sequence[OriginPause]) -> None:
        """Share origins' 429 pauses with every sender: a running pause is only ever made
        longer (the greater end wins); the strikes are this writer's count."""
        if not pauses:
            return
        ordered = sorted(pauses, key=lambda p: p.origin)  # one lock order for all writers
        await self._execute(
            "push_pause_origins",
            [p.origin for p in ordered],
            [max(0.0, p.pause_s) for p in ordered],
            [p.strikes for p in ordered],
        )

    async def paused_origins(self) -> list[OriginPause]:
        """The origins that are paused now, or have 429s in a row on record."""
        rows = await self._fetch("push_paused_origins")
        return [OriginPause.from_row(row) for row in rows]
