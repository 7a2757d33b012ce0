"""The replay use case: what a recorded trace would have triggered, as a JSON-ready report
(``momentcast rules replay``; the CLI formats it). Also the subscriber profile file that
replay and preview read."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from service.errors import SourceError, TraceError

from .core import evaluate
from .engine import Outcome, SubscriberState, decide
from .loader import load_ruleset
from .localtime import local_datetime
from .ruleset import Ruleset
from .signals import Profile, SignalBatch
from .source import load_located
from .trace import read_trace
from .whynot import why_not


def load_profile(path: str | None) -> Profile:
    if path is None:
        return Profile(id="replay")
    try:
        data = load_located(Path(path).read_text(encoding="utf-8")).data or {}
    except (OSError, SourceError) as exc:
        raise TraceError(f"{path}: cannot read the profile: {exc}") from None
    if not isinstance(data, dict):
        raise TraceError(f"{path}: a profile is a mapping (timezone, topics, attributes, paused)")
    allowed = {"id", "timezone", "locale", "topics", "attributes", "paused", "resting_until"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise TraceError(f"{path}: unknown profile keys {unknown}; allowed: {sorted(allowed)}")
    return Profile(
        id=str(data.get("id", "replay")),
        timezone=data.get("timezone"),
        locale=data.get("locale"),
        topics=frozenset(data.get("topics") or []),
        attributes=dict(data.get("attributes") or {}),
        paused=bool(data.get("paused", False)),
        resting_until=_resting_until(path, data.get("resting_until")),
    )


def _resting_until(path: str, value: Any) -> datetime | None:
    """The profile's `resting_until` (the fatigue guard's rest, e.g. 2026-12-20T00:00:00Z):
    signals before it are suppressed `fatigued` while the policy has `fatigue`."""
    if value is None:
        return None
    try:
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise TraceError(
            f"{path}: resting_until must be a time with its offset, e.g. 2026-12-20T00:00:00Z"
        ) from None
    return at


def replay_rows(
    rs: Ruleset,
    outcomes: list[Outcome],
    profile: Profile,
    why: list[dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One row per signal; ``why`` (per signal, in the same order): the rules within reach
    that did not match, with the first failed condition (`whynot.why_not`)."""
    rows = []
    for n, o in enumerate(outcomes):
        s = o.signal
        if o.local_offset_s is not None:
            local = s.at.astimezone(timezone(timedelta(seconds=o.local_offset_s)))
        else:
            local = local_datetime(s.at, s.lat, s.lon, profile.timezone)
        d = o.decision
        rows.append(
            {
                "time": local.isoformat(),
                "lat": s.lat,
                "lon": s.lon,
                "entered": [f"{r}@{p}" for r, p in o.entered],
                "left": [f"{r}@{p}" for r, p in o.left],
                "decision": None
                if d is None
                else {
                    "rule": d.rule_id,
                    "place": d.place_id,
                    "distance_m": d.distance_m,
                    "variant": d.variant,
                    "ttl_s": d.ttl_s,
                    **d.payload,
                },
                "suppressed": [
                    {"rule": x.rule_id, "place": x.place_id, "reason": x.reason}
                    for x in o.suppressed
                ],
                # Shadow rules that would have sent (mode: shadow sends nothing).
                "shadow": [{"rule": m.rule.id, "place": m.place_id} for m in o.shadow],
                # Matched rules that triggered nothing, and why (stale, not_triggered).
                "silent": [
                    {"rule": r, "place": p, "reason": "stale" if o.stale else "not_triggered"}
                    for r, p in o.silent
                ],
                "not_matched": [
                    {"rule": rule, "reason": reason}
                    for rule, reason in (why[n] if why is not None else {}).items()
                ],
                "note": "out_of_order" if not o.applied else ("stale" if o.stale else None),
            }
        )
    return rows


def replay(rules_dir: str, trace: str, profile_path: str | None) -> dict[str, Any]:
    """The replay report as a JSON-ready document (also what tests compare)."""
    rs = load_ruleset(rules_dir)
    profile = load_profile(profile_path)
    signals = read_trace(trace, profile.id)
    states: dict[str, SubscriberState] = {}
    profiles = {profile.id: profile}
    outcomes = decide(rs, signals, profiles, states, now=None, arrival_order=True)
    # The signals in the same order as decide's (arrival order): why each rule whose places
    # were within reach of the fix did not match.
    ev = evaluate(rs, SignalBatch.build(signals, profiles))
    rows = replay_rows(
        rs, outcomes, profile, [why_not(ev, i, places_only=True) for i in range(len(signals))]
    )
    reasons = Counter(x["reason"] for r in rows for x in r["suppressed"])
    silent = Counter(x["reason"] for r in rows for x in r["silent"])
    not_matched: dict[str, Counter[str]] = {}
    for r in rows:
        for x in r["not_matched"]:
            not_matched.setdefault(x["rule"], Counter())[x["reason"]] += 1
    return {
        "rules_version": rs.version,
        "profile": profile.id,
        "rows": rows,
        "summary": {
            "signals": len(rows),
            "sent": sum(1 for r in rows if r["decision"]),
            "shadow_sent": sum(len(r["shadow"]) for r in rows),
            "suppressed": dict(sorted(reasons.items())),
            # Matched but triggered nothing: stale signals, enter rules already inside.
            "silent": dict(sorted(silent.items())),
            # Per rule, the signals within its reach that did not match it, by reason.
            "not_matched": {
                rule: dict(sorted(c.items())) for rule, c in sorted(not_matched.items())
            },
        },
    }
