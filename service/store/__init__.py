"""The data-access layer: the only code that runs SQL or imports asyncpg.

:class:`Store` is one class assembled from one query module per area; each method runs a
named query of ``sql/*.sql`` with named, typed arguments and returns row dataclasses.
"""

from __future__ import annotations

from service.store.base import DATABASE_ERRORS, StoreBase, database_unavailable
from service.store.batch import BatchQueries
from service.store.campaigns import CampaignQueries
from service.store.db import create_pool
from service.store.deliveries import DeliveryQueries
from service.store.engagement import EngagementQueries
from service.store.experiments import ExperimentQueries
from service.store.keys import KeyQueries
from service.store.retention import RetentionQueries
from service.store.rules import RuleQueries
from service.store.signals import SignalQueries
from service.store.subscriptions import SubscriptionQueries


class Store(
    BatchQueries,
    SignalQueries,
    SubscriptionQueries,
    EngagementQueries,
    DeliveryQueries,
    RuleQueries,
    CampaignQueries,
    ExperimentQueries,
    RetentionQueries,
    KeyQueries,
    StoreBase,
):
    """Every query of momentcast."""


async def open_store(dsn: str, *, min_size: int = 1, max_size: int = 10) -> Store:
    return Store(await create_pool(dsn, min_size=min_size, max_size=max_size), dsn=dsn)


__all__ = ["DATABASE_ERRORS", "Store", "database_unavailable", "open_store"]
