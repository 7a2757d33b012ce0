"""The two variant hashes, pinned: a rule's variant (8 bytes of SHA-256) and a campaign's
(7 bytes, what momentcast_variant_point computes in SQL). They differ on purpose and must not
change: a running A/B test would reshuffle its subscribers between variants."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from service.campaigns.body import campaign_variant, variant_point
from service.rules.engine import rule_variant
from service.rules.ruleset import CompiledRule, CompiledVariant

VARIANTS = [
    CompiledVariant("a", 50, {}),
    CompiledVariant("b", 30, {}),
    CompiledVariant("c", 20, {}),
]
SUBSCRIBERS = [f"sub-{i}" for i in range(12)]


def test_a_rules_variant_is_the_8_byte_hash() -> None:
    # The hash reads only the rule's id and variants.
    rule = cast(CompiledRule, SimpleNamespace(id="lunch", variants=VARIANTS))
    picked = "".join(rule_variant(s, rule).name for s in SUBSCRIBERS)
    assert picked == "cbbcccaaacab"


def test_a_campaigns_variant_is_the_7_byte_hash() -> None:
    picked = "".join(campaign_variant(s, "lunch", VARIANTS).name for s in SUBSCRIBERS)
    assert picked == "aabbcbbacaab"
    points = [variant_point(s, "lunch", 100) for s in SUBSCRIBERS]
    assert points == [42, 32, 74, 52, 94, 58, 52, 37, 96, 20, 11, 59]
