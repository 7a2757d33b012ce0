"""Signals and subscriber profiles as the engine sees them (no storage concerns)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from service.vocabulary import MOMENTS

from .conditions import Column
from .places import FloatArray, IntArray

AttrValue = str | int | float | bool
_MOMENT_CODE: dict[str | None, int] = {m: i + 1 for i, m in enumerate(MOMENTS)}


@dataclass(frozen=True)
class Signal:
    subscription_id: str
    lat: float | None  # None with lon: a context signal (no location)
    lon: float | None
    at: datetime  # aware
    accuracy_m: float | None = None
    speed_mps: float | None = None
    moment: str | None = None
    context: Mapping[str, AttrValue] = field(default_factory=dict)
    id: int | str | None = None  # the stored signal's id, when there is one
    # When the server received it (stored signals): with no ``now`` (backtest), a signal
    # received later than stale_after after its ``at`` is judged stale, as the worker did.
    received_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("Signal.at must be timezone-aware")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("Signal.lat and lon come together or not at all")

    @property
    def located(self) -> bool:
        return self.lat is not None


@dataclass(frozen=True)
class Profile:
    id: str
    timezone: str | None = None
    locale: str | None = None
    topics: frozenset[str] = frozenset()
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)
    paused: bool = False
    gone: bool = False  # the push service answered 404/410: never send again
    # The fatigue guard's latest rest [since, until) (service/engagement/fatigue.py): pushes
    # decided inside it are suppressed `fatigued` while the policy has `fatigue`.
    resting_since: datetime | None = None
    resting_until: datetime | None = None


@dataclass(frozen=True)
class SignalBatch:
    """Column view of a batch of signals, what the vectorised core works on."""

    signals: Sequence[Signal]
    profiles: Sequence[Profile]  # one per signal (same object for one subscriber)
    lat: FloatArray
    lon: FloatArray
    t: FloatArray  # POSIX seconds
    accuracy: FloatArray  # NaN: unknown
    speed: FloatArray  # NaN: unknown
    moment: IntArray  # 0: none, 1..4: know, go, do, buy
    profile_idx: IntArray  # index into unique_profiles
    unique_profiles: list[Profile]
    # Columns of the keys conditions ask about, built on first use.
    _columns: dict[tuple[str, str], Column] = field(default_factory=dict, repr=False)
    # Per topic, the unique profiles that have it: gathered on first use into this (the
    # batch is frozen) one-element list.
    _topics: list[dict[str, IntArray]] = field(default_factory=list, repr=False)

    def attribute_column(self, key: str) -> Column:
        """``key`` of every unique profile's attributes (index it with profile_idx)."""
        col = self._columns.get(("attributes", key))
        if col is None:
            rows = [p.attributes for p in self.unique_profiles]
            col = self._columns[("attributes", key)] = Column.build(rows, key)
        return col

    def having_topics(self, topics: Iterable[str]) -> npt.NDArray[np.bool_]:
        """Per unique profile: it has at least one of ``topics`` (index it with profile_idx).
        The batch's topic memberships are gathered once, so each rule costs one pass over
        the profiles with its topics, not a set intersection per profile."""
        if not self._topics:
            members: dict[str, list[int]] = {}
            for j, p in enumerate(self.unique_profiles):
                for t in p.topics:
                    members.setdefault(t, []).append(j)
            self._topics.append({t: np.asarray(js, dtype=np.intp) for t, js in members.items()})
        having = self._topics[0]
        has = np.zeros(len(self.unique_profiles), dtype=bool)
        for t in topics:
            js = having.get(t)
            if js is not None:
                has[js] = True
        return has

    def context_column(self, key: str) -> Column:
        """``key`` of every signal's context."""
        col = self._columns.get(("context", key))
        if col is None:
            col = self._columns[("context", key)] = Column.build(self.contexts(), key)
        return col

    def contexts(self, which: IntArray | None = None) -> Sequence[Mapping[str, object]]:
        """The contexts of the signals ``which`` (all by default)."""
        n = len(self) if which is None else len(which)
        if len(self.signals) != len(self):  # a batch built from columns carries no contexts
            return [{}] * n
        if which is None:
            return [s.context for s in self.signals]
        signals = self.signals
        return [signals[i].context for i in which.tolist()]

    @classmethod
    def build(cls, signals: Sequence[Signal], profiles: Mapping[str, Profile]) -> SignalBatch:
        # Per subscription once: its profile and that profile's index.
        index_of: dict[str, int] = {}
        uniq: dict[str, int] = {}
        plist: list[Profile] = []
        per_sub: list[Profile] = []
        pidx: list[int] = []
        for s in signals:
            sid = s.subscription_id
            j = index_of.get(sid)
            if j is None:
                prof = profiles.get(sid) or Profile(id=sid)
                u = uniq.get(prof.id)
                if u is None:
                    u = uniq[prof.id] = len(plist)
                    plist.append(prof)
                j = index_of[sid] = len(per_sub)
                per_sub.append(prof)
            pidx.append(j)
        sub_profile = np.asarray([uniq[p.id] for p in per_sub], dtype=np.intp)

        def col(values: list[float | None]) -> FloatArray:
            return np.asarray(values, dtype=np.float64)  # None becomes NaN

        return cls(
            signals=signals,
            profiles=[per_sub[j] for j in pidx],
            lat=col([s.lat for s in signals]),
            lon=col([s.lon for s in signals]),
            t=col([s.at.timestamp() for s in signals]),
            accuracy=col([s.accuracy_m for s in signals]),
            speed=col([s.speed_mps for s in signals]),
            moment=np.asarray([_MOMENT_CODE.get(s.moment, 0) for s in signals], dtype=np.intp),
            profile_idx=sub_profile[np.asarray(pidx, dtype=np.intp)],
            unique_profiles=plist,
        )

    def __len__(self) -> int:
        return len(self.lat)
