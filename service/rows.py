"""The store's rows of the signal path as the engine's types: what the worker and the backtest
hand to the pure core (neither the store nor the core may import the other)."""

from __future__ import annotations

from service.rules.signals import Profile, Signal
from service.store.signals import PendingSignal, Subscriber


def signal_of(row: PendingSignal) -> Signal:
    return Signal(
        subscription_id=row.subscription_id,
        lat=row.lat,
        lon=row.lon,
        at=row.at,
        accuracy_m=row.accuracy_m,
        speed_mps=row.speed_mps,
        moment=row.moment,
        context=row.context,
        id=row.id,
        received_at=row.received_at,
    )


def profile_of(sub: Subscriber) -> Profile:
    return Profile(
        id=sub.id,
        timezone=sub.timezone,
        locale=sub.locale,
        topics=frozenset(sub.topics),
        attributes=sub.attributes,
        paused=sub.paused,
        gone=sub.gone,
        resting_since=sub.resting_since,
        resting_until=sub.resting_until,
    )
