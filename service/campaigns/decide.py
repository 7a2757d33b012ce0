"""An experiment campaign's fan-out tick: the test share, the decision, the rest (see
service/campaigns/experiment.py). Called by the fan-out (service/fanout.py) inside the tick's
transaction, which holds the campaign's row lock: one process at a time starts and decides
an experiment, and the decision commits with the rest's first pushes or not at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from service.campaigns.experiment import share_threshold
from service.stats import best_variant, campaign_results
from service.store.campaigns import CampaignRow, ZoneStep, read_campaign_counts
from service.store.experiments import ExperimentGroup, ExperimentRow

if TYPE_CHECKING:
    from service.campaigns.plan import Tick
    from service.store import Store

# Plans this tick as if the campaign had been created at the given time (the rest of an
# experiment's audience: when the winner was decided): the plan and its steps.
PlanFrom = Callable[[datetime], Awaitable[tuple["Tick", list[ZoneStep]]]]
# Fans the steps out to one group of the audience; answers how many pushes it queued.
FanOutGroup = Callable[[Sequence[ZoneStep], ExperimentGroup], Awaitable[int]]


async def tick(
    tx: Store, row: CampaignRow, *, now: datetime, plan: PlanFrom, fan_out: FanOutGroup
) -> list[Tick]:
    """One fan-out tick of an experiment's campaign, inside the tick's transaction (the
    campaign's row is locked): the test share, then (once decided) the rest. Returns the
    plans whose completion and next looks are the campaign's."""
    found = await tx.experiment(campaign_id=row.id)
    if found is None:  # pragma: no cover - stored with the campaign, never deleted
        raise RuntimeError(f"campaign {row.id} has no stored experiment")
    exp = found
    threshold = share_threshold(exp.test_share)
    test, steps = await plan(row.created_at)
    queued = await fan_out(steps, ExperimentGroup(threshold, test=True))
    if exp.started_at is None and (queued or test.complete):
        exp = await tx.start_experiment(campaign_id=row.id, at=now)
    if exp.decided_at is None and exp.decide_at is not None and now >= exp.decide_at:
        exp = await _decide(tx, row, exp, now)
    if exp.decided_at is None or exp.winner is None:
        # The rest waits: this campaign is not complete, and looked at again by the decision.
        return [test, replace(test, zones=[], next_check=exp.decide_at, complete=False)]
    rest, steps = await plan(exp.decided_at)
    winner = [str(v) for v in row.programs["variants"]].index(exp.winner) + 1
    await fan_out(steps, ExperimentGroup(threshold, test=False, winner=winner))
    return [test, rest]


async def _decide(tx: Store, row: CampaignRow, exp: ExperimentRow, now: datetime) -> ExperimentRow:
    """The winner from the test pushes sent so far, stored once: the same numbers as the
    campaign's results show while it tests (service.stats.campaign_results)."""
    [result] = campaign_results(await read_campaign_counts(tx, row.id))
    prob_best: dict[str, float] = result["experiment"]["prob_best"]
    return await tx.decide_experiment(
        campaign_id=row.id, at=now, winner=best_variant(prob_best), prob_best=prob_best
    )
