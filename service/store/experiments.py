"""Queries of campaign experiments (migrations/0017_campaign_experiments.sql): their
settings, stored with the campaign; the start and the decision, stored by the fan-out's tick
under the campaign's row lock; read with the campaigns' results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.store.base import Row, StoreBase


@dataclass(frozen=True, slots=True)
class ExperimentRow(Row):
    campaign_id: str
    test_share: float
    decide_after: timedelta
    metric: str
    started_at: datetime | None
    decided_at: datetime | None
    winner: str | None
    prob_best: dict[str, Any] | None

    @property
    def decide_at(self) -> datetime | None:
        """When the decision is due (None before the test pushes start going)."""
        return None if self.started_at is None else self.started_at + self.decide_after


@dataclass(frozen=True, slots=True)
class ExperimentGroup:
    """Which part of an experiment's audience one fan-out statement handles: the test share
    (``test``; its members get the variants by weight) or the rest (``winner``: the variant
    number, from 1, they all get)."""

    threshold: int  # in the test share: momentcast_test_point(subscription, campaign) < this
    test: bool
    winner: int | None = None


class ExperimentQueries(StoreBase):
    async def create_experiment(
        self, *, campaign_id: str, test_share: float, decide_after: timedelta, metric: str
    ) -> None:
        """The experiment of a campaign being created (in the transaction that stores it)."""
        await self._execute("experiment_insert", campaign_id, test_share, decide_after, metric)

    async def experiment(self, *, campaign_id: str) -> ExperimentRow | None:
        row = await self._fetchrow("experiment_get", campaign_id)
        return None if row is None else ExperimentRow.from_row(row)

    async def start_experiment(self, *, campaign_id: str, at: datetime) -> ExperimentRow:
        """Record when the test pushes start going (the first call's ``at`` stays)."""
        row = await self._fetchrow("experiment_start", campaign_id, at)
        assert row is not None
        return ExperimentRow.from_row(row)

    async def decide_experiment(
        self, *, campaign_id: str, at: datetime, winner: str, prob_best: dict[str, float]
    ) -> ExperimentRow:
        """Store the decision, once (a decided experiment keeps its first)."""
        row = await self._fetchrow("experiment_decide", campaign_id, at, winner, prob_best)
        assert row is not None
        return ExperimentRow.from_row(row)


async def read_experiments(db: StoreBase, campaign_id: str | None) -> list[ExperimentRow]:
    """The experiments of one campaign (or of all), on ``db`` as it is (the caller's
    snapshot)."""
    return [ExperimentRow.from_row(r) for r in await db._fetch("experiment_list", campaign_id)]
