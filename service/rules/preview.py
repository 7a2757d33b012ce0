"""A rule's message rendered without a signal: `rules preview` and the test push.

The very rendering of the engine's decisions (`engine.render_payload`), for a chosen place
(the rule's first place unless one is named; none for a location-free rule) at 0 m, a
profile (its attributes and locale) and no signal context (`{context.<name>}` renders
empty). ``preview`` is the use case of `momentcast rules preview`: the rule loaded from its
folder, every variant's notification as a JSON-ready report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import RulesError, TraceError

from .core import Match
from .engine import notification, render_payload, rule_variant
from .loader import load_ruleset
from .ruleset import CompiledRule, CompiledVariant, Ruleset
from .signals import Profile

__all__ = ["Rendered", "folder_of", "preview", "preview_match", "render_for", "render_variants"]


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
    return _rendered(m, rule_variant(profile.id, rule), profile)


def folder_of(target: str) -> tuple[str, Path | None]:
    """The folder to load and, for a file argument, the file to report: a rule file's
    folder, or for a places file the folder above `places/` that holds policy.yaml."""
    path = Path(target)
    if not path.is_file():
        return target, None
    root = path.parent
    if not (root / "policy.yaml").is_file() and (root.parent / "policy.yaml").is_file():
        root = root.parent
    return str(root), path.resolve()


def preview(
    rules_dir: str,
    rule: str,
    place: str | None = None,
    profile_path: str | None = None,
    locale: str | None = None,
) -> dict[str, Any]:
    """The preview report as a JSON-ready document: every variant's notification. ``rule`` is
    a rule id, or the path of a rule file (its folder is loaded)."""
    directory, only = folder_of(rule) if Path(rule).is_file() else (rules_dir, None)
    rs = load_ruleset(directory)
    if only is not None:
        found = [r for r in rs.rules if Path(r.file).resolve() == only]
        if not found:
            raise TraceError(f"{rule}: not a rule file of {directory}")
        compiled = found[0]
    else:
        compiled_or_none = rs.rule_by_id.get(rule)
        if compiled_or_none is None:
            known = ", ".join(sorted(rs.rule_by_id))
            raise TraceError(f"no rule {rule!r} in {directory}; the rules: {known}")
        compiled = compiled_or_none
    from .replay import load_profile

    profile = load_profile(profile_path) if profile_path else Profile(id="preview")
    if locale:
        profile = dataclasses.replace(profile, locale=locale)
    try:
        variants = render_variants(rs, compiled, profile, place)
    except RulesError as exc:
        raise TraceError(str(exc)) from None
    first = variants[0]
    return {
        "rule": compiled.id,
        "place": first.place_id or None,
        "place_name": first.place_name,
        "profile": profile.id,
        "locale": profile.locale,
        "variants": [
            {
                "variant": v.variant.name,
                "weight": v.variant.weight,
                "notification": v.notification(),
            }
            for v in variants
        ],
    }
