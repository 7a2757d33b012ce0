"""The backtest's arithmetic: stored signals through the engine with another rule set.

Pure: the caller (service/reports/backtest.py) reads the signals of a period and the subscribers'
profiles through the store, in chunks of whole subscribers, and hands them to
:meth:`Backtest.add`; every subscriber starts from fresh presence and no pushes (nothing of
the live state is read, nothing is written). Each signal is judged at its own time, in time
order per subscriber, like ``rules replay``. The report puts beside each rule what the live
rules actually decided and sent in the same period.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .engine import SubscriberState, decide
from .ruleset import Ruleset
from .signals import Profile, Signal

__all__ = ["Backtest", "LiveSends"]


@dataclass(frozen=True)
class LiveSends:
    """What the live rules decided in the period (test pushes left out), and how many of
    those the push service accepted."""

    rule_id: str
    decided: int
    sent: int


@dataclass
class _Tally:
    matched: int = 0
    would_send: int = 0
    shadow_sent: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    silent: Counter[str] = field(default_factory=Counter)  # matched, triggered nothing
    not_matched: Counter[str] = field(default_factory=Counter)


class Backtest:
    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.signals = 0
        self.subscribers = 0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self._tally = {r.id: _Tally() for r in ruleset.rules}

    def add(self, signals: Sequence[Signal], profiles: Mapping[str, Profile]) -> None:
        """Whole subscribers' signals of the period (a subscriber's signals are never split
        over two calls), each subscriber from fresh presence and caps."""
        if not signals:
            return
        states: dict[str, SubscriberState] = {}
        not_matched: Counter[tuple[str, str]] = Counter()
        outcomes = decide(self.ruleset, signals, profiles, states, None, not_matched=not_matched)
        self.signals += len(signals)
        self.subscribers += len(states)
        at = [s.at for s in signals]
        self.first = min([*at, *([self.first] if self.first else [])])
        self.last = max([*at, *([self.last] if self.last else [])])
        tally = self._tally
        for o in outcomes:
            for m in o.fired:
                tally[m.rule.id].matched += 1
            if o.decision is not None:
                tally[o.decision.rule_id].would_send += 1
            for m in o.shadow:
                tally[m.rule.id].shadow_sent += 1
            for s in o.suppressed:
                tally[s.rule_id].suppressed[s.reason] += 1
            for rule_id, _ in o.silent:
                tally[rule_id].silent["stale" if o.stale else "not_triggered"] += 1
        for (rule_id, reason), n in not_matched.items():
            tally[rule_id].not_matched[reason] += n

    def report(
        self,
        *,
        since: datetime,
        until: datetime,
        live: Sequence[LiveSends],
        retention: timedelta | None = None,
        stored_since: datetime | None = None,
    ) -> dict[str, Any]:
        """The JSON-ready report: per rule of the backtested set, would-send, suppressed and
        not matched by reason beside the live sends; live rules not in the set follow."""
        sent = {x.rule_id: x for x in live}
        rules = []
        for rule in self.ruleset.rules:
            t = self._tally[rule.id]
            x = sent.get(rule.id)
            rules.append(
                {
                    "rule": rule.id,
                    "mode": rule.model.mode,
                    "matched": t.matched,
                    "would_send": t.would_send,
                    "shadow_sent": t.shadow_sent,
                    "suppressed": dict(sorted(t.suppressed.items())),
                    "silent": dict(sorted(t.silent.items())),
                    "not_matched": dict(sorted(t.not_matched.items())),
                    "live": {"decided": x.decided if x else 0, "sent": x.sent if x else 0},
                }
            )
        backtested = set(self._tally)
        notes = []
        if retention is not None and until - since > retention:
            notes.append(
                f"the period reaches beyond SIGNAL_RETENTION ({_duration(retention)}): processed "
                "signals older than that are deleted"
            )
        if stored_since is not None and stored_since > since:
            notes.append(
                f"no stored signal is older than {stored_since.isoformat()}: the period is "
                "covered from then on"
            )
        return {
            "rules_version": self.ruleset.version,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "signals": self.signals,
            "subscribers": self.subscribers,
            "first_signal": self.first.isoformat() if self.first else None,
            "last_signal": self.last.isoformat() if self.last else None,
            "rules": rules,
            "live_only": [
                {"rule": x.rule_id, "decided": x.decided, "sent": x.sent}
                for x in sorted(live, key=lambda x: x.rule_id)
                if x.rule_id not in backtested
            ],
            "totals": {
                "would_send": sum(r["would_send"] for r in rules),
                "live_decided": sum(x.decided for x in live),
                "live_sent": sum(x.sent for x in live),
            },
            "notes": notes,
        }


def _duration(d: timedelta) -> str:
    s = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0 and s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
