"""What the campaign use cases return: the admin API answers them as JSON (and documents them
in /openapi.json), the CLI prints them. A campaign's results are service.stats'
:class:`CampaignResult`, which GET /v1/stats lists too."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.stats import (
    CampaignExperiment,
    CampaignResult,
    CampaignVariantResult,
    Schedule,
)


class CampaignCreated(BaseModel):
    id: str
    status: str
    audience: int = Field(description="active, unpaused subscriptions in the audience now")


class CampaignSample(BaseModel):
    variant: str
    locale: str = Field(description="the message's locale ('' is the default)")
    from_audience: bool = Field(
        description="rendered with the attributes of an audience member of that locale "
        "(false: with none, no such member)"
    )
    notification: dict[str, Any]


class CampaignDryRun(BaseModel):
    id: str
    audience: int
    send_at: str | dict[str, str]
    ttl_s: int
    variants: list[dict[str, Any]]
    samples: list[CampaignSample]
    schedule: Schedule | None = Field(
        None, description="send_at.optimal only: how the plan would send the audience"
    )


class CampaignList(BaseModel):
    campaigns: list[CampaignResult]


class CampaignCancelled(CampaignResult):
    cancelled_now: int = Field(description="pending pushes this call cancelled")


__all__ = [
    "CampaignCancelled",
    "CampaignCreated",
    "CampaignDryRun",
    "CampaignExperiment",
    "CampaignList",
    "CampaignResult",
    "CampaignSample",
    "CampaignVariantResult",
    "Schedule",
]
