"""Campaign experiments that pick a winner: ``"experiment": {"test_share": 0.2,
"decide_after": "2h", "metric": "clicked"}`` on a campaign with two or more variants.

- **The test share.** A subscriber is in it when a hash of the subscription and the campaign
  falls below ``test_share`` (:func:`in_test_share`; ``momentcast_test_point`` in SQL computes the
  same, migrations/0017_campaign_experiments.sql): at random, but the same in every process,
  run and tick. Its members get the variants by weight, at the campaign's moment, as any
  campaign's audience does.
- **The decision.** ``decide_after`` after the test pushes start going (the first tick that
  queues one), the fan-out's tick computes each variant's probability of being best on the
  metric - Beta(1 + successes, 1 + sent - successes) posteriors of the sent test pushes with
  a click (``clicked``; a click link counts) or with a conversion (``converted``), by
  service.engagement.bayes - and stores the most likely best as the winner (ties: the first
  variant in the campaign's order).
- **The rest** of the audience waits for the decision and then gets the winner at its own
  moment; where that moment had passed when the decision was made, the campaign's ``late``
  applies (``skip``: suppressed as missed_local_time; ``send`` and instants: at once).

The decision is stored in the tick's transaction that queues the rest's first pushes
(service/campaigns/decide.py): a crash or a restart between the phases rolls both back or
keeps both, and the dedupe key ``campaign:<id>:<subscription>`` keeps anyone from getting a
second push.

Pure: the body's ``experiment`` and the test share (no I/O).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from service.durations import parse_duration
from service.vocabulary import ExperimentMetric

MIN_DECIDE_AFTER = timedelta(minutes=1)
# Deliveries are rolled up after DELIVERY_RETENTION (90 days by default): the decision reads
# them well before.
MAX_DECIDE_AFTER = timedelta(days=28)
# The test point's range: 7 bytes of SHA-256.
TEST_POINTS = 2**56


def _duration(value: object) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"must be a duration such as 30m or 2h, not {value!r}")
    return parse_duration(value)


class ExperimentSpec(BaseModel):
    """``experiment`` of POST /v1/campaigns: a test share, then the winner to the rest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_share: float = Field(
        description="The share of the audience, above 0 and below 1, that gets the variants "
        "by weight"
    )
    decide_after: Annotated[timedelta, BeforeValidator(_duration)] = Field(
        json_schema_extra={"type": "string", "examples": ["30m", "2h"]},
        description="How long after the test pushes start going the winner is decided (1m to 28d)",
    )
    metric: ExperimentMetric = Field(
        "clicked",
        description="clicked: sent pushes with a click (a click link counts); converted: "
        "sent pushes with a conversion",
    )

    @field_validator("test_share", mode="before")
    @classmethod
    def _share(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number above 0 and below 1, not {value!r}")
        if not 0 < value < 1:
            raise ValueError(f"must be above 0 and below 1 (a share of the audience), not {value}")
        return value

    @field_validator("decide_after")
    @classmethod
    def _decide_after(cls, value: timedelta) -> timedelta:
        if not MIN_DECIDE_AFTER <= value <= MAX_DECIDE_AFTER:
            raise ValueError("must be between 1m and 28d")
        return value


def share_threshold(test_share: float) -> int:
    """The test points below which a subscriber is in the test share."""
    return int(test_share * TEST_POINTS)


def share_point(subscription_id: str, campaign_id: str) -> int:
    """Bytes 8 to 14 of sha256(subscription \\0 campaign): those after the variant point's
    (service.campaigns.body.variant_point), so the test share and the variant are independent.
    momentcast_test_point in SQL computes the same; neither may change."""
    digest = hashlib.sha256(f"{subscription_id}\0{campaign_id}".encode()).digest()
    return int.from_bytes(digest[7:14], "big")


def in_test_share(subscription_id: str, campaign_id: str, test_share: float) -> bool:
    return share_point(subscription_id, campaign_id) < share_threshold(test_share)
