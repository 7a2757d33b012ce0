"""The campaign use cases on the store: create, dry run, results, cancel.

The admin API (service/api/campaigns.py) and ``momentcast campaign`` (service/cli/campaigns.py)
both call these, so both say the same. They raise domain errors (service.errors:
:class:`CampaignInvalid`, :class:`CampaignMalformed`, :class:`CampaignExists`,
:class:`CampaignNotFound`), which the API maps to HTTP, and return the typed models of
service/campaigns/models.py. The checked body (service/campaigns/body.py) is imported with the
first call: importing the API must not load the rules engine.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

from service.campaigns.models import (
    CampaignCancelled,
    CampaignDryRun,
    CampaignResult,
    CampaignSample,
    Schedule,
)
from service.errors import CampaignExists, CampaignMalformed, CampaignNotFound
from service.queue import CAMPAIGNS_CHANNEL
from service.stats import campaign_results
from service.store import Store
from service.store.campaigns import CampaignRow, NewCampaign

if TYPE_CHECKING:
    from service.campaigns.body import Campaign
    from service.rules.units import Window


def parse(raw: bytes | str, now: datetime) -> Campaign:
    """The checked campaign; CampaignMalformed for text that is not JSON, CampaignInvalid
    naming each field that is wrong."""
    from service.campaigns.body import parse_campaign

    try:
        json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CampaignMalformed(f"malformed JSON: {exc}") from None
    return parse_campaign(raw, now=now)


def _new(campaign: Campaign, created_at: datetime) -> NewCampaign:
    at = campaign.send_at
    return NewCampaign(
        id=campaign.id,
        description=campaign.description,
        spec=campaign.spec,
        audience=campaign.audience,
        programs=campaign.programs,
        send_at=at.instant,
        send_local=at.local,
        late=at.late if at.local is not None else None,
        ttl_s=campaign.ttl_s,
        urgency=campaign.urgency,
        topic=campaign.topic,
        rate_per_s=campaign.rate_per_s,
        created_at=created_at,
    )


async def create(
    store: Store, raw: bytes | str, *, now: datetime, quiet: Window | None = None
) -> CampaignRow:
    """Check, store (audience counted in the same statement) and wake the fan-out; nothing is
    stored for a bad body or a taken id (CampaignExists). ``quiet``: the policy's quiet hours,
    which an optimal campaign's plan avoids."""
    campaign = parse(raw, now)
    optimal = campaign.send_at.optimal
    if optimal is not None:
        from service.campaigns import sendtime

        sendtime.check(optimal, quiet)
    async with store.transaction() as tx:
        row = await tx.create_campaign(campaign=_new(campaign, now))
        if row is not None and campaign.experiment is not None:
            test = campaign.experiment
            await tx.create_experiment(
                campaign_id=row.id,
                test_share=test.test_share,
                decide_after=test.decide_after,
                metric=test.metric,
            )
        if row is not None and optimal is not None:
            row = await sendtime.store_plan(tx, campaign, row, now=now, quiet=quiet)
    if row is None:
        raise CampaignExists(
            f"campaign {campaign.id!r} exists; a campaign is not changed once created "
            "(cancel it and send one with another id)"
        )
    await store.notify(channel=CAMPAIGNS_CHANNEL)
    return row


async def dry_run(
    store: Store, raw: bytes | str, *, now: datetime, quiet: Window | None = None
) -> CampaignDryRun:
    """What ``create`` would send, stored nowhere: the audience size and, per variant and
    message locale, the notification as an audience member of that locale would see it (and
    for send_at.optimal, the plan's ``schedule``)."""
    from service.campaigns.body import render
    from service.rules.engine import notification

    campaign = parse(raw, now)
    audience = await store.audience_size(audience=campaign.audience)
    schedule = None
    if campaign.send_at.optimal is not None:
        from service.campaigns import sendtime

        sendtime.check(campaign.send_at.optimal, quiet)
        made = await sendtime.plan(store, campaign, audience=audience, now=now, quiet=quiet)
        schedule = Schedule.model_validate(made.schedule)
    tags = sorted({tag for v in campaign.variants for tag in v.messages})
    samples = {
        s.locale: s.attributes
        for s in await store.audience_samples(audience=campaign.audience, locales=tags)
    }
    return CampaignDryRun(
        id=campaign.id,
        audience=audience,
        send_at=campaign.send_at.as_json(),
        ttl_s=campaign.ttl_s,
        variants=[{"variant": v.name, "weight": v.weight} for v in campaign.variants],
        samples=[
            CampaignSample(
                variant=v.name,
                locale=tag,
                from_audience=tag in samples,
                notification=notification(render(message, samples.get(tag, {}))),
            )
            for v in campaign.variants
            for tag, message in sorted(v.messages.items())
        ],
        schedule=schedule,
    )


async def result(store: Store, campaign_id: str) -> CampaignResult:
    found = campaign_results(await store.campaign_counts(campaign_id=campaign_id))
    if not found:
        raise CampaignNotFound(f"no campaign {campaign_id!r}")
    return CampaignResult.model_validate(found[0])


async def results(store: Store) -> list[CampaignResult]:
    return [
        CampaignResult.model_validate(c) for c in campaign_results(await store.campaign_counts())
    ]


async def cancel(store: Store, campaign_id: str) -> CampaignCancelled:
    """Stop the fan-out and cancel every push not sent yet; CampaignNotFound for an unknown
    id."""
    cancelled = await store.cancel_campaign(campaign_id=campaign_id)
    if not cancelled.found:
        raise CampaignNotFound(f"no campaign {campaign_id!r}")
    found = await result(store, campaign_id)
    return CampaignCancelled(**found.model_dump(), cancelled_now=cancelled.cancelled)
