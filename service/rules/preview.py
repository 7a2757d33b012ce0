"""A rule's message rendered without a signal: `rules preview` and the test push.

The very rendering of the engine's decisions (`engine.render_payload`), for a chosen place
(the rule's first place unless one is named; none for a location-free rule) at 0 m, a
profile (its attributes and locale) and no signal context (`{context.<name>}` renders
empty). Pure, like the rest of the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import RulesError

from .core import Match
from .engine import choose_variant, notification, render_payload
from .ruleset import CompiledRule, CompiledVariant, Ruleset
from .signals import Profile

__all__ = ["Rendered", "preview_match", "render_for", "render_variants"]


@dataclass(frozen=True)
class Rendered:
    """One variant of a rule rendered at one place for one profile."""

    rule: CompiledRule
    variant: CompiledVariant
    place_id: str  # "" for a location-free rule
    place_name: str | None
    payload: dict[str, Any]  # what a decision carries (title, body, url, ..., lang, actions)

    @property
    def ttl_s(self) -> int:
        return max(1, int(self.rule.model.message.ttl.total_seconds()))

    @property
    def urgency(self) -> str:
        return self.rule.model.message.urgency

    @property
    def topic(self) -> str | None:
        return self.rule.model.message.topic

    def notification(self) -> dict[str, Any]:
        """As the phone shows it: title, body, url, icon, image, actions, locale."""
        return notification(self.payload)


def preview_match(rs: Ruleset, rule: CompiledRule, place_id: str | None = None) -> Match:
    """The match a preview renders: at the named place (else the rule's first), 0 m away."""
    if rule.location_free:
        if place_id:
            raise RulesError(f"rule {rule.id} has no places; a place cannot be chosen")
        return Match(rule=rule, place=None, place_id="", distance_m=None, ttl_left_s=None, pair=-1)
    places = [rs.places[i] for i in rule.place_idx]
    if not places:
        raise RulesError(f"rule {rule.id} has no places left after its filter")
    if place_id is None:
        place = places[0]
    else:
        found = [p for p in places if p.id == place_id]
        if not found:
            some = ", ".join(p.id for p in places[:10]) + (", ..." if len(places) > 10 else "")
            raise RulesError(f"rule {rule.id} has no place {place_id!r}; its places: {some}")
        place = found[0]
    return Match(
        rule=rule, place=place, place_id=place.id, distance_m=0.0, ttl_left_s=None, pair=-1
    )


def _rendered(m: Match, variant: CompiledVariant, profile: Profile) -> Rendered:
    return Rendered(
        rule=m.rule,
        variant=variant,
        place_id=m.place_id,
        place_name=m.place.name if m.place is not None else None,
        payload=render_payload(m, variant, profile, {}),
    )


def render_variants(
    rs: Ruleset, rule: CompiledRule, profile: Profile, place_id: str | None = None
) -> list[Rendered]:
    """Every variant of the rule, in file order (`rules preview`)."""
    m = preview_match(rs, rule, place_id)
    return [_rendered(m, v, profile) for v in rule.variants]


def render_for(
    rs: Ruleset, rule: CompiledRule, profile: Profile, place_id: str | None = None
) -> Rendered:
    """The variant the subscriber ``profile.id`` is assigned (the test push)."""
    m = preview_match(rs, rule, place_id)
    return _rendered(m, choose_variant(profile.id, rule), profile)
