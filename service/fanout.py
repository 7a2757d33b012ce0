"""The campaigns' fan-out: each campaign's pushes go into the outbox just in time.

A campaign is looked at when its ``next_check_at`` has come (by this component's clock,
injectable like the worker's). One tick, in one transaction: lock the campaign row (one
process at a time per campaign), read the time zones of the audience it has not handled yet,
let the pure core plan each zone (``service.campaigns.plan.plan_tick``: its moment has come
or not, quiet hours hold it, its ttl ran out, a local moment missed at creation), then one
set-based statement queues a delivery for every due subscriber - or an expired one, or a
suppression by reason - with the dedupe key ``campaign:<id>:<subscription>``, and the
campaign's next look is stored. A crash rolls the tick back; the next one does the same work
again, and the dedupe key and the suppressions' unique index keep anything from happening
twice. The sender then sends what is due, paced by it and by each origin's backoff.

A campaign with an ``experiment`` runs the statement once per group of its audience: the test
share, and once decided (in the same transaction), the rest with the winner
(service/campaigns/decide.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from service.campaigns import decide, sendtime
from service.campaigns.body import SendAt
from service.campaigns.plan import LOCKED_RETRY, RESCAN, Tick, plan_tick
from service.context import Context
from service.metrics import REGISTRY
from service.queue import CAMPAIGNS_CHANNEL, DELIVERIES_CHANNEL, DatabaseRetry, Listener
from service.rules.models import PolicyModel
from service.store import DATABASE_ERRORS, Store
from service.store.campaigns import CampaignRow, Caps, FanOutResult, ZoneStep
from service.store.experiments import ExperimentGroup
from service.vocabulary import Late
from service.waiting import wait_any

log = logging.getLogger(__name__)

CAMPAIGN_PUSHES = PromCounter(
    "momentcast_campaign_pushes_total",
    "Campaign audience members handled by the fan-out, by outcome (queued, expired, or the "
    "suppression reason)",
    ["outcome"],
    registry=REGISTRY,
)
TICK_SECONDS = Histogram(
    "momentcast_fanout_tick_seconds",
    "Time of one campaign's fan-out tick",
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FANOUT_ERRORS = PromCounter(
    "momentcast_fanout_errors_total",
    "Fan-out ticks that failed (database errors, or a campaign that could not be ticked) and "
    "were retried",
    registry=REGISTRY,
)

Clock = Callable[[], datetime]

# When a campaign whose tick raised is looked at again.
RETRY_FAILED = timedelta(minutes=1)
# The longest pause between two tries while the database fails (the first is 0.25 s).
RETRY_CAP_S = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class TickResult:
    campaigns: int = 0  # campaigns ticked
    queued: int = 0
    expired: int = 0
    suppressed: int = 0


def _caps(policy: PolicyModel) -> Caps:
    limits = policy.limits
    per = limits.per_subscriber
    return Caps(
        per_subscriber=per.count if per else None,
        period=per.period if per else None,
        min_gap=limits.min_gap,
        fatigue=policy.fatigue is not None,
    )


def _plan(
    row: CampaignRow,
    zones: Sequence[str],
    now: datetime,
    policy: PolicyModel,
    *,
    created_at: datetime,
) -> tuple[Tick, list[ZoneStep]]:
    """What this tick does per time zone of the audience still to handle; moments that had
    passed at ``created_at`` (the campaign's creation, or for an experiment's rest the
    decision) follow ``late``."""
    late: Late = "send" if row.late == "send" else "skip"
    send_at = SendAt(instant=row.send_at, local=row.send_local, late=late)
    plan = plan_tick(
        send_at,
        created_at=created_at,
        ttl=timedelta(seconds=row.ttl_s),
        zones=zones,
        now=now,
        quiet=policy.quiet_hours,
    )
    return plan, [ZoneStep(z.zone, z.action, z.expires_at) for z in plan.zones]


async def _planner(
    tx: Store, row: CampaignRow, now: datetime, policy: PolicyModel
) -> Callable[[datetime], Awaitable[tuple[Tick, list[ZoneStep]]]]:
    """Read the audience still to handle (its time zones; for send_at.optimal, its zones and
    planned local minutes) and answer the tick's plan for a given ``created_at``."""
    if row.optimal is not None:
        groups = await sendtime.zone_minutes(tx, row)

        async def optimal(created_at: datetime) -> tuple[Tick, list[ZoneStep]]:
            return sendtime.plan_steps(
                row, groups, now=now, quiet=policy.quiet_hours, created_at=created_at
            )

        return optimal
    zones = await tx.campaign_zones(campaign=row)

    async def plan(created_at: datetime) -> tuple[Tick, list[ZoneStep]]:
        return _plan(row, zones, now, policy, created_at=created_at)

    return plan


class _Statements:
    """The fan-out statements of one tick (one, or an experiment's one per group of the
    audience): their results added up, and with a rate the next free send slot."""

    def __init__(self, tx: Store, row: CampaignRow, now: datetime, caps: Caps) -> None:
        self.tx, self.row, self.now, self.caps = tx, row, now, caps
        self.next_slot = row.next_slot
        self.result = FanOutResult(due=0, locked=0, queued=0, expired=0)

    async def fan_out(self, steps: Sequence[ZoneStep], group: ExperimentGroup | None) -> int:
        """Queue what ``steps`` say is due (of ``group`` only); answer how many were queued."""
        if all(z.action == "wait" for z in steps):
            return 0
        now = self.now
        start = max(now, self.next_slot) if self.next_slot is not None else now
        done = await self.tx.fan_out(
            campaign=self.row,
            now=now,
            zones=steps,
            caps=self.caps,
            first_delay_s=(start - now).total_seconds(),
            group=group,
        )
        if self.row.rate_per_s and done.queued:
            self.next_slot = start + timedelta(seconds=done.queued / self.row.rate_per_s)
        r = self.result
        suppressed = dict(r.suppressed)
        for reason, n in done.suppressed.items():
            suppressed[reason] = suppressed.get(reason, 0) + n
        self.result = FanOutResult(
            due=r.due + done.due,
            locked=r.locked + done.locked,
            queued=r.queued + done.queued,
            expired=r.expired + done.expired,
            suppressed=suppressed,
        )
        return done.queued


class FanOut:
    """Ticks due campaigns. ``clock`` is injectable so tests walk through a day of time zones
    without waiting for it."""

    def __init__(self, ctx: Context, *, clock: Clock = utcnow) -> None:
        self.ctx = ctx
        self.clock = clock

    def _policy(self) -> PolicyModel | None:
        holder = self.ctx.rules
        ruleset = holder.current if holder is not None else None
        return ruleset.policy if ruleset is not None else None

    async def run_once(self) -> TickResult:
        """Tick every campaign whose next look is due; mark finished ones done."""
        policy = self._policy()
        if policy is None:  # quiet hours and caps come with the rules: wait for them
            return TickResult()
        store = self.ctx.store
        now = self.clock()
        total = TickResult()
        for campaign_id in await store.due_campaigns(now=now):
            try:
                result = await self.tick(campaign_id, now, policy)
            except DATABASE_ERRORS:
                raise
            except Exception:
                # One campaign the fan-out cannot tick (a bug, data it does not expect) must
                # not stop the others, nor be retried in a tight loop: a minute later.
                FANOUT_ERRORS.inc()
                log.exception("fan-out: campaign %s failed; trying again in a minute", campaign_id)
                await store.postpone_campaign(campaign_id=campaign_id, until=now + RETRY_FAILED)
                continue
            if result is None:
                continue
            total.campaigns += 1
            total.queued += result.queued
            total.expired += result.expired
            total.suppressed += sum(result.suppressed.values())
        if total.queued:
            await store.notify(channel=DELIVERIES_CHANNEL)
        for done in await store.finish_campaigns():
            log.info("campaign %s done", done)
        return total

    async def tick(
        self, campaign_id: str, now: datetime, policy: PolicyModel
    ) -> FanOutResult | None:
        """One campaign's tick in one transaction; None if it is not running or another
        process is ticking it."""
        started = time.perf_counter()
        async with self.ctx.store.transaction() as tx:
            row = await tx.lock_campaign(campaign_id=campaign_id)
            if row is None:
                return None
            result = await self._tick(tx, row, now, policy)
        TICK_SECONDS.observe(time.perf_counter() - started)
        if result.queued:
            CAMPAIGN_PUSHES.labels("queued").inc(result.queued)
        if result.expired:
            CAMPAIGN_PUSHES.labels("expired").inc(result.expired)
        for reason, n in result.suppressed.items():
            CAMPAIGN_PUSHES.labels(reason).inc(n)
        return result

    async def _tick(
        self, tx: Store, row: CampaignRow, now: datetime, policy: PolicyModel
    ) -> FanOutResult:
        plan = await _planner(tx, row, now, policy)

        step = _Statements(tx, row, now, _caps(policy))
        if row.spec.get("experiment") is not None:
            # A test share first, the rest its winner (service/campaigns/decide.py).
            plans = await decide.tick(tx, row, now=now, plan=plan, fan_out=step.fan_out)
        else:
            first, steps = await plan(row.created_at)
            await step.fan_out(steps, None)
            plans = [first]
        result = step.result
        complete = all(p.complete for p in plans)
        checks = [p.next_check for p in plans if p.next_check is not None]
        next_check = None if complete else min(checks, default=now + RESCAN)
        if result.locked < result.due:
            # Subscribers another transaction held (the worker deciding their signals): soon.
            complete = False
            retry = now + LOCKED_RETRY
            next_check = retry if next_check is None else min(next_check, retry)
        started = any(p.started for p in plans) or row.status == "sending"
        await tx.campaign_progress(
            campaign_id=row.id,
            status="sending" if started else "scheduled",
            next_check_at=None if complete else next_check,
            next_slot=step.next_slot,
            fanned_out=complete,
        )
        if complete:
            log.info("campaign %s fanned out", row.id)
        return result

    async def drain(self) -> TickResult:
        """Tick until no campaign is due at this clock's now (tests)."""
        total = TickResult()
        while True:
            result = await self.run_once()
            if result.campaigns == 0:
                return total
            total.campaigns += result.campaigns
            total.queued += result.queued
            total.expired += result.expired
            total.suppressed += result.suppressed


async def run(ctx: Context, stop: asyncio.Event) -> None:
    """The fan-out component of ``momentcast serve`` and ``momentcast worker``: tick due
    campaigns every poll interval, and at once when one is created (NOTIFY)."""
    wake = asyncio.Event()
    listening = asyncio.create_task(
        Listener(ctx.store, CAMPAIGNS_CHANNEL, wake).run(stop), name="fanout-listen"
    )
    fanout = FanOut(ctx)
    poll = ctx.settings.worker_poll_interval.total_seconds()
    retry = DatabaseRetry("fanout", log, cap_s=max(RETRY_CAP_S, poll))
    try:
        while not stop.is_set():
            wake.clear()
            try:
                await fanout.run_once()
            except DATABASE_ERRORS as exc:
                # Nothing was committed; the campaign is still due and is ticked again.
                FANOUT_ERRORS.inc()
                await retry.pause(exc, stop)
                continue
            retry.succeeded()
            await wait_any(stop, wake, seconds=poll)
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
