"""Conditions on subscriber attributes and signal context, evaluated as masks over a batch.

A condition is ``{key: value}`` (equality) or ``{key: {operator: value}}``. Values are JSON
scalars of three kinds - text, number (int and float alike) and bool (never a number, so
``tier: 1`` does not match ``tier: true``). A comparison that does not apply to a value's kind
does not match: ``gt: 3`` against ``"gold"``, ``ne: rain`` against ``7``, or a missing key
(only ``exists: false`` matches a missing key). :func:`holds` is the plain scalar definition;
:func:`mask` computes the same for a whole :class:`Column` at once, without a Python loop per
row (the property test in tests/rules checks that the two agree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from service.vocabulary import Operator

Scalar = str | int | float | bool
Kind = Literal["text", "number", "bool"]
Mask = npt.NDArray[np.bool_]
ORDERING: Final[frozenset[Operator]] = frozenset({"gt", "gte", "lt", "lte"})
LISTS: Final[frozenset[Operator]] = frozenset({"in", "not_in"})


class _Missing:
    """The value of a key a row does not have."""


_MISSING = _Missing()
_NUMBER_TYPES = frozenset({int, float})  # exact types: a bool is no number here


def kind(value: object) -> Kind | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return None if isinstance(value, float) and math.isnan(value) else "number"
    if isinstance(value, str):
        return "text"
    return None


@dataclass(frozen=True)
class Condition:
    """``source.key op value``; ``value`` is a tuple for in/not_in, a bool for exists."""

    source: Literal["attributes", "context"]
    key: str
    op: Operator
    value: Scalar | tuple[Scalar, ...]

    @property
    def reason(self) -> str:
        return f"{self.source}.{self.key}"

    def never_applies(self) -> str | None:
        """Why this condition can never hold, whatever the value (None: it can)."""
        if self.op in ORDERING and kind(self.value) != "number":
            return f"{self.op} compares numbers; {self.value!r} is not a number"
        if self.op in LISTS and not self.value:
            return f"{self.op} needs at least one value"
        return None


def holds(cond: Condition, value: object, present: bool) -> bool:
    """The scalar definition: does ``value`` (``present``: the key exists) satisfy it?"""
    if cond.op == "exists":
        return present is bool(cond.value)
    k = kind(value) if present else None
    if k is None:
        return False
    if cond.op in ("eq", "ne"):
        if kind(cond.value) != k:
            return False
        return (value == cond.value) is (cond.op == "eq")
    if cond.op in LISTS:
        wanted = cond.value if isinstance(cond.value, tuple) else (cond.value,)
        same_kind = [w for w in wanted if kind(w) == k]
        if cond.op == "in":
            return any(value == w for w in same_kind)
        return bool(same_kind) and all(value != w for w in same_kind)
    if kind(cond.value) != "number" or k != "number":
        return False
    v, w = float(value), float(cond.value)  # type: ignore[arg-type]
    return {"gt": v > w, "gte": v >= w, "lt": v < w, "lte": v <= w}[cond.op]


@dataclass
class Column:
    """One key's values over the rows of a batch, split by kind."""

    present: Mask
    number: npt.NDArray[np.float64]  # NaN where the value is not a number
    boolean: npt.NDArray[np.int8]  # -1 where the value is not a bool, else 0 or 1
    text: npt.NDArray[np.int32]  # -1 where the value is not text, else an index into words
    words: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, rows: Sequence[Mapping[str, object]], key: str) -> Column:
        # List comprehensions over exact types: this runs once per key and batch, over every
        # signal, and is the only per-row Python work of a condition.
        values = [row.get(key, _MISSING) for row in rows]
        words: dict[str, int] = {}
        present = np.array([v is not _MISSING for v in values], dtype=bool)
        number = np.array(
            [v if type(v) in _NUMBER_TYPES else math.nan for v in values], dtype=np.float64
        )
        boolean = np.array([(1 if v else 0) if type(v) is bool else -1 for v in values], np.int8)
        text = np.array(
            [words.setdefault(v, len(words)) if type(v) is str else -1 for v in values],
            dtype=np.int32,
        )
        return cls(present, number, boolean, text, words)

    def equal(self, value: Scalar) -> Mask:
        k = kind(value)
        if k == "bool":
            return np.asarray(self.boolean == int(bool(value)))
        if k == "number":
            return np.asarray(self.number == float(value))
        if k == "text":
            code = self.words.get(str(value))
            if code is None:
                return np.zeros(len(self.present), dtype=bool)
            return np.asarray(self.text == code)
        return np.zeros(len(self.present), dtype=bool)

    def of_kind(self, k: Kind | None) -> Mask:
        if k == "bool":
            return np.asarray(self.boolean >= 0)
        if k == "number":
            return np.asarray(~np.isnan(self.number))
        if k == "text":
            return np.asarray(self.text >= 0)
        return np.zeros(len(self.present), dtype=bool)


def mask(cond: Condition, col: Column) -> Mask:
    """:func:`holds` for every row of ``col`` at once."""
    op = cond.op
    if op == "exists":
        return col.present.copy() if cond.value else ~col.present
    if op == "eq":
        return col.equal(cond.value)  # type: ignore[arg-type]
    if op == "ne":
        k = kind(cond.value)
        return col.of_kind(k) & ~col.equal(cond.value)  # type: ignore[arg-type]
    if op in LISTS:
        wanted = cond.value if isinstance(cond.value, tuple) else (cond.value,)
        hit = np.zeros(len(col.present), dtype=bool)
        for w in wanted:
            hit |= col.equal(w)
        if op == "in":
            return hit
        kinds = np.zeros(len(col.present), dtype=bool)
        for k in {kind(w) for w in wanted}:
            kinds |= col.of_kind(k)
        return kinds & ~hit
    if kind(cond.value) != "number":
        return np.zeros(len(col.present), dtype=bool)
    w = float(cond.value)  # type: ignore[arg-type]
    x = col.number
    with np.errstate(invalid="ignore"):
        out = {"gt": x > w, "gte": x >= w, "lt": x < w, "lte": x <= w}[op]
    return np.asarray(out)  # NaN (not a number) compares False
