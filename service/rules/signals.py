"""Signals and subscriber profiles as the engine sees them (no storage concerns)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from service.vocabulary import MOMENTS

from .conditions import Column
from .places import FloatArray, IntArray

AttrValue = str | int | float | bool


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

    def attribute_column(self, key: str) -> Column:
        """``key`` of every unique profile's attributes (index it with profile_idx)."""
        col = self._columns.get(("attributes", key))
        if col is None:
            rows = [p.attributes for p in self.unique_profiles]
            col = self._columns[("attributes", key)] = Column.build(rows, key)
        return col

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
        n = len(signals)
        uniq: dict[str, int] = {}
        plist: list[Profile] = []
        pidx = np.empty(n, dtype=np.intp)
        per_signal: list[Profile] = []
        for i, s in enumerate(signals):
            prof = profiles.get(s.subscription_id) or Profile(id=s.subscription_id)
            j = uniq.get(prof.id)
            if j is None:
                j = uniq[prof.id] = len(plist)
                plist.append(prof)
            pidx[i] = j
            per_signal.append(prof)

        def col(values: list[float | None]) -> FloatArray:
            return np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)

        return cls(
            signals=signals,
            profiles=per_signal,
            lat=col([s.lat for s in signals]),
            lon=col([s.lon for s in signals]),
            t=col([s.at.timestamp() for s in signals]),
            accuracy=col([s.accuracy_m for s in signals]),
            speed=col([s.speed_mps for s in signals]),
            moment=np.asarray(
                [MOMENTS.index(s.moment) + 1 if s.moment in MOMENTS else 0 for s in signals],
                dtype=np.intp,
            ),
            profile_idx=pidx,
            unique_profiles=plist,
        )

    def __len__(self) -> int:
        return len(self.lat)
