"""The queries of the signal path: ingest, the worker's batch, retention and health.

Bulk writes take a sequence of row dataclasses and turn it into the ``unnest`` column arrays
here, so callers never line up parallel lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import asyncpg

from service.store.base import StoreBase


# Not frozen: a frozen dataclass sets each field through object.__setattr__, 0.58 us a row
# against 0.13 us, and ingest builds one per signal (500 per batch request).
@dataclass(slots=True)
class SignalRow:
    """One signal as a device sent it."""

    at: datetime | None  # None: the time its request was received
    lat: float | None  # None with lon: a context signal
    lon: float | None
    accuracy_m: float | None
    speed_mps: float | None
    moment: str | None
    context: Mapping[str, object]
    # Chosen by the client, unique per subscription: a signal whose id is already stored (a
    # retry) is not stored again. None: no id, never a duplicate.
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class SignalRequest:
    """The signals of one request, with the hash of the device token that sent them."""

    token_hash: bytes
    signals: Sequence[SignalRow]
    # What a signal without ``at`` gets: one value per request, not one per row to send.
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class IngestedBatch:
    known: frozenset[bytes]  # token hashes that belong to a subscription
    paused: frozenset[bytes]  # of those, the paused ones (their signals were dropped)
    # Requests (by position) holding a location without location consent: none of their
    # signals were stored.
    consent_refused: frozenset[int]
    stored: int
    duplicates: int  # signals of stored requests refused by their client id
    # Per request (by position): its signals stored by this batch. The others of a stored
    # request were duplicates (their client id already stored, or repeated in the batch).
    accepted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A subscription locked by a worker: the profile the engine needs."""

    id: str
    timezone: str | None
    locale: str | None
    topics: tuple[str, ...]
    attributes: Mapping[str, Any]
    paused: bool
    gone: bool
    last_signal_at: datetime | None
    # The fatigue guard's latest rest (push_fatigue), where the query reads it.
    resting_since: datetime | None = None
    resting_until: datetime | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(
            id=str(row["id"]),
            timezone=row["timezone"],
            locale=row["locale"],
            topics=tuple(row["topics"] or ()),
            attributes=row["attributes"] or {},
            paused=row["paused"],
            gone=row["status"] == "gone",
            last_signal_at=row["last_signal_at"],
            resting_since=row.get("resting_since"),
            resting_until=row.get("resting_until"),
        )


@dataclass(frozen=True, slots=True)
class PendingSignal:
    id: int
    subscription_id: str
    at: datetime
    lat: float | None  # None with lon: a context signal
    lon: float | None
    accuracy_m: float | None
    speed_mps: float | None
    moment: str | None
    context: Mapping[str, Any]
    received_at: datetime | None = None  # read by the backtest only

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(
            id=row["id"],
            subscription_id=str(row["subscription_id"]),
            at=row["at"],
            lat=row["lat"],
            lon=row["lon"],
            accuracy_m=row["accuracy_m"],
            speed_mps=row["speed_mps"],
            moment=row["moment"],
            context=row["context"] or {},
            received_at=row.get("received_at"),
        )


@dataclass(frozen=True, slots=True)
class PresenceRow:
    """A subscriber inside a rule's place since ``entered_at``."""

    subscription_id: str
    rule_id: str
    place_id: str
    entered_at: datetime
    dwell_fired: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(
            subscription_id=str(row["subscription_id"]),
            rule_id=row["rule_id"],
            place_id=row["place_id"],
            entered_at=row["entered_at"],
            dwell_fired=row["dwell_fired"],
        )


@dataclass(frozen=True, slots=True)
class SentRow:
    """A decision already made, as far as caps, gaps and cooldowns care."""

    subscription_id: str
    rule_id: str
    place_id: str
    decided_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(
            subscription_id=str(row["subscription_id"]),
            rule_id=row["rule_id"],
            place_id=row["place_id"] or "",
            decided_at=row["decided_at"],
        )


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A decided push for the outbox; ``dedupe_key`` makes it at most once."""

    subscription_id: str
    signal_id: int
    rule_id: str
    variant: str
    place_id: str | None  # None for a rule without places
    dedupe_key: str
    payload: Mapping[str, str]
    distance_m: float | None  # None for a rule without places
    local_hour: int | None
    ttl_s: int
    urgency: str
    topic: str | None
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class SignalFailure:
    """A signal whose evaluation raised, and why (the exception, never the signal's data)."""

    signal_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class FailedSignal:
    signal_id: int
    attempts: int
    quarantined: bool


@dataclass(frozen=True, slots=True)
class CounterRow:
    rule_id: str
    variant: str
    counter: str  # "matched" or "suppressed:<reason>"
    n: int


class SignalQueries(StoreBase):
    # --- ingest -------------------------------------------------------------------------

    async def ingest_signals(
        self, *, requests: Sequence[SignalRequest], channel: str
    ) -> IngestedBatch:
        """Store the signals of many requests in one statement, committed when it returns,
        and NOTIFY ``channel`` with that COMMIT if any row was stored."""
        # Per request: its token, its time of receipt, whether it carries a location.
        token_hash: list[bytes] = []
        received_at: list[datetime] = []
        located: list[bool] = []
        # Per signal: its request (1-based, as WITH ORDINALITY counts), then its columns.
        request_no: list[int] = []
        at: list[datetime | None] = []
        lat: list[float | None] = []
        lon: list[float | None] = []
        accuracy: list[float | None] = []
        speed: list[float | None] = []
        moment: list[str | None] = []
        context: list[Mapping[str, object]] = []
        client_id: list[str | None] = []
        for number, request in enumerate(requests, 1):
            token_hash.append(request.token_hash)
            received_at.append(request.received_at)
            has_location = False
            for s in request.signals:
                request_no.append(number)
                at.append(s.at)
                lat.append(s.lat)
                lon.append(s.lon)
                has_location = has_location or s.lat is not None
                accuracy.append(s.accuracy_m)
                speed.append(s.speed_mps)
                moment.append(s.moment)
                context.append(s.context)
                client_id.append(s.client_id)
            located.append(has_location)
        args = (
            token_hash,
            received_at,
            located,
            request_no,
            at,
            lat,
            lon,
            accuracy,
            speed,
            moment,
            json.dumps(context),
            client_id,
            channel,
        )
        try:
            row = await self._fetchrow("ingest_signals", *args)
        except asyncpg.ForeignKeyViolationError:
            # A subscription was erased between the join and the insert; the retry's join no
            # longer sees it, so its rows are dropped like an unknown token's.
            row = await self._fetchrow("ingest_signals", *args)
        except asyncpg.DeadlockDetectedError:
            # Two concurrent batches inserting the same client ids in opposite orders wait for
            # each other; PostgreSQL aborted this one, the other commits. Run again, its ids
            # are duplicates now.
            row = await self._fetchrow("ingest_signals", *args)
        assert row is not None
        accepted = [0] * len(requests)
        for position, n in zip(row["accepted_requests"], row["accepted_counts"], strict=True):
            accepted[position] = n
        return IngestedBatch(
            known=frozenset(bytes(h) for h in row["known"]),
            paused=frozenset(bytes(h) for h in row["paused"]),
            consent_refused=frozenset(row["refused"]),
            stored=int(row["stored"]),
            duplicates=int(row["duplicates"]),
            accepted=tuple(accepted),
        )

    # --- the worker's batch ---------------------------------------------------------------

    async def claim_signals(self, *, limit: int, lease: timedelta) -> list[str]:
        """Lease up to ``limit`` unprocessed signals; return their subscribers, sorted."""
        rows = await self._fetch("claim_signals", limit, lease)
        return sorted({str(r["subscription_id"]) for r in rows})

    async def lock_subscriptions(self, *, ids: Sequence[str]) -> list[Subscriber]:
        """Lock those of ``ids`` no other transaction holds, until this transaction ends."""
        return [Subscriber.from_row(r) for r in await self._fetch("lock_subscriptions", ids)]

    async def release_claims(self, *, subscription_ids: Sequence[str]) -> None:
        await self._execute("release_claims", subscription_ids)

    async def record_signal_failures(
        self, *, failures: Sequence[SignalFailure], quarantine_after: int
    ) -> list[FailedSignal]:
        """Count a failed evaluation of each signal; quarantine those that have now failed
        ``quarantine_after`` times."""
        if not failures:
            return []
        rows = await self._fetch(
            "record_signal_failures",
            [f.signal_id for f in failures],
            [f.reason for f in failures],
            quarantine_after,
        )
        return [FailedSignal(r["id"], r["attempts"], r["quarantined"]) for r in rows]

    async def processing_lag(self) -> float:
        """Seconds since the oldest unprocessed signal arrived (0 for an empty queue)."""
        lag: float = await self._fetchval("processing_lag")
        return lag

    async def backlog(self) -> int:
        """Signals not yet decided plus deliveries not yet sent (0: the pipeline is idle)."""
        n: int = await self._fetchval("backlog")
        return n

    async def notify(self, *, channel: str) -> None:
        await self._execute("notify", channel)

    # --- housekeeping ---------------------------------------------------------------------

    async def purge_signals(self, *, older_than: timedelta) -> int:
        """Delete processed signals older than ``older_than``; return how many went."""
        status = await self._execute("purge_signals", older_than)
        return int(status.split()[-1])
