"""Queries of the subscriptions API: registration, device tokens, profiles and erasure."""

from __future__ import annotations

import enum
import hmac
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

import asyncpg

from service.store.base import Row, StoreBase


class Keep(enum.Enum):
    """A profile field a change leaves as stored (``None`` would clear it instead)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class Registration:
    """A browser's push subscription with the profile fields its request carried; ``None``
    means "not given", so a re-registration keeps what is stored."""

    endpoint: str
    p256dh: str
    auth: str
    token_hash: bytes
    timezone: str | None = None
    locale: str | None = None
    topics: list[str] | None = None
    attributes: dict[str, Any] | None = None
    location_consent: bool | None = None
    # The SHA-256 of the device token the request carried, if any: with the same keys.auth,
    # the proof that lets it renew an endpoint that is already registered.
    presented_token_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class Registered:
    id: uuid.UUID
    # False when the endpoint was already registered and kept its id.
    created: bool


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """The fields of a profile to change; the others keep their stored value."""

    timezone: str | Keep | None = KEEP
    locale: str | Keep | None = KEEP
    topics: list[str] | Keep = KEEP
    attributes: dict[str, Any] | Keep = KEEP
    paused: bool | Keep = KEEP
    # True records now as the time of consent, False withdraws it.
    location_consent: bool | Keep = KEEP


@dataclass(frozen=True, slots=True)
class DeviceToken:
    subscription_id: uuid.UUID
    token_hash: bytes

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(subscription_id=row["id"], token_hash=bytes(row["token_hash"]))


@dataclass(frozen=True, slots=True)
class ProfileRow(Row):
    """What a subscription holds besides its keys and token."""

    id: uuid.UUID
    timezone: str | None
    locale: str | None
    topics: list[str]
    attributes: dict[str, Any]
    paused: bool
    consent_at: datetime | None
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SubscriptionExport:
    """Everything stored about one subscription except its keys and token hash, read in one
    snapshot: what a data-subject access request returns."""

    profile: ProfileRow
    signals: list[dict[str, Any]]
    presence: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    shadow_sends: list[dict[str, Any]]
    campaign_suppressions: list[dict[str, Any]] = field(default_factory=list)
    fatigue: dict[str, Any] | None = None  # the fatigue guard's count and latest rest


@dataclass(frozen=True, slots=True)
class RecentSubscription(Row):
    """A test recipient the dashboard offers: nothing that reaches or locates the device."""

    id: uuid.UUID
    created_at: datetime
    last_seen_at: datetime | None  # the newest signal applied, if any
    push_host: str  # the endpoint's host only: which push service, never the endpoint
    locale: str | None
    topics: list[str]
    location_consent: bool


@dataclass(frozen=True, slots=True)
class SubscriberTotals(Row):
    """The subscriptions held now, by state (``sharing_location``: of ``active``)."""

    active: int
    paused: int
    gone: int
    sharing_location: int


class SubscriptionQueries(StoreBase):
    async def register(self, *, registration: Registration) -> Registered | None:
        """Insert the subscription, or renew the keys and token of its endpoint when the
        registration proves it holds that subscription: the stored keys.auth (the browser
        sends its same subscription again) or the stored device token. None when it proves
        neither: an endpoint URL is no secret, so nothing is changed."""
        r = registration
        profile = (r.timezone, r.locale, r.topics, r.attributes, r.location_consent)
        async with self.transaction() as tx:
            found = await tx._fetchrow("subscription_by_endpoint", r.endpoint)
            while found is None:
                new_id = await tx._fetchval(
                    "subscription_insert", r.endpoint, r.p256dh, r.auth, r.token_hash, *profile
                )
                if new_id is not None:
                    return Registered(id=new_id, created=True)
                # Registered by a request that committed while this insert waited for it
                # (and if that one is erased again by now, the insert is tried again).
                found = await tx._fetchrow("subscription_by_endpoint", r.endpoint)
            if not _proves_ownership(r, found["auth"], bytes(found["token_hash"])):
                return None
            await tx._execute(
                "subscription_renew", found["id"], r.p256dh, r.auth, r.token_hash, *profile
            )
            return Registered(id=found["id"], created=False)

    async def device_token(self, *, token_hash: bytes) -> DeviceToken | None:
        row = await self._fetchrow("subscription_auth", token_hash)
        return None if row is None else DeviceToken.from_row(row)

    async def recent_subscriptions(self, *, limit: int) -> list[RecentSubscription]:
        """The ``limit`` active, unpaused subscriptions seen or registered last."""
        return [
            RecentSubscription.from_row(r) for r in await self._fetch("subscriptions_recent", limit)
        ]

    async def subscriber_totals(self) -> SubscriberTotals:
        row = await self._fetchrow("subscriber_totals")
        assert row is not None  # an aggregate without GROUP BY: always one row
        return SubscriberTotals.from_row(row)

    async def subscription_profile(self, *, subscription_id: uuid.UUID) -> ProfileRow | None:
        row = await self._fetchrow("subscription_profile", subscription_id)
        return None if row is None else ProfileRow.from_row(row)

    async def change_profile(
        self, *, subscription_id: uuid.UUID, change: ProfileChange
    ) -> ProfileRow | None:
        """Apply ``change``; None when there is no such subscription."""
        c = change
        args: list[object] = [subscription_id]
        # subscription_patch takes a (given, value) pair per field, in this order.
        for value in (c.timezone, c.locale, c.topics, c.attributes, c.paused, c.location_consent):
            args += (value is not KEEP, None if value is KEEP else value)
        row = await self._fetchrow("subscription_patch", *args)
        return None if row is None else ProfileRow.from_row(row)

    async def export_subscription(self, *, subscription_id: uuid.UUID) -> SubscriptionExport | None:
        """Everything stored about the subscription, consistent across tables; None if there
        is no such subscription."""
        async with self.transaction(isolation="repeatable_read", readonly=True) as tx:
            profile = await tx.subscription_profile(subscription_id=subscription_id)
            if profile is None:
                return None
            return SubscriptionExport(
                profile=profile,
                signals=[dict(r) for r in await tx._fetch("export_signals", subscription_id)],
                presence=[dict(r) for r in await tx._fetch("export_presence", subscription_id)],
                deliveries=[dict(r) for r in await tx._fetch("export_deliveries", subscription_id)],
                shadow_sends=[
                    dict(r) for r in await tx._fetch("export_shadow_sends", subscription_id)
                ],
                campaign_suppressions=[
                    dict(r)
                    for r in await tx._fetch("export_campaign_suppressions", subscription_id)
                ],
                fatigue=_dict_or_none(await tx._fetchrow("export_fatigue", subscription_id)),
            )

    async def erase_subscription(self, *, subscription_id: uuid.UUID) -> bool:
        """Erase the subscription, its signals, presence and the personal fields of its
        deliveries in one transaction; False if there was no such subscription."""
        async with self.transaction() as tx:
            # Lock the row first so a concurrent signal batch or worker waits for the erasure.
            if not await tx._fetchval("erase_lock", subscription_id):
                return False
            for name in (
                "erase_presence",
                "erase_signals",
                "erase_deliveries",
                "erase_fatigue",
                "erase_subscription",
            ):
                await tx._execute(name, subscription_id)
        return True


def _dict_or_none(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None


def _proves_ownership(registration: Registration, auth: str, token_hash: bytes) -> bool:
    """Whether the registration holds the stored subscription: both secrets are compared in
    constant time (and both always), so the answer's timing tells nothing about either."""
    # base64url with or without its padding is the same secret (validation allows both).
    same_auth = hmac.compare_digest(
        registration.auth.rstrip("=").encode("utf-8", "surrogatepass"),
        auth.rstrip("=").encode("utf-8", "surrogatepass"),
    )
    presented = registration.presented_token_hash
    same_token = presented is not None and hmac.compare_digest(presented, token_hash)
    return same_auth or same_token
