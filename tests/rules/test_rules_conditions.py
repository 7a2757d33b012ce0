"""The vectorised condition masks agree with the scalar definition, on any data."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.rules.conditions import Column, Condition, holds, mask
from service.vocabulary import OPERATORS

KEY = "k"
scalars = st.one_of(
    st.sampled_from(["rain", "snow", "gold", "", "Rain"]),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.booleans(),
)
rows = st.lists(
    st.one_of(
        st.fixed_dictionaries({KEY: scalars}),
        st.just({}),  # the key is missing
        st.fixed_dictionaries({"other": scalars}),
    ),
    max_size=40,
)


@st.composite
def conditions(draw: Any) -> Condition:
    op = draw(st.sampled_from(OPERATORS))
    if op in ("in", "not_in"):
        value: Any = tuple(draw(st.lists(scalars, max_size=4)))
    elif op == "exists":
        value = draw(st.booleans())
    else:
        value = draw(scalars)
    return Condition(draw(st.sampled_from(["attributes", "context"])), KEY, op, value)


@settings(max_examples=600, deadline=None)
@given(rows, conditions())
def test_mask_agrees_with_the_scalar_definition(
    data: list[dict[str, Any]], cond: Condition
) -> None:
    expected = [holds(cond, row.get(KEY), KEY in row) for row in data]
    assert mask(cond, Column.build(data, KEY)).tolist() == expected


def test_kinds_do_not_mix() -> None:
    data: list[dict[str, Any]] = [{KEY: True}, {KEY: 1}, {KEY: 1.0}, {KEY: "1"}, {}]
    col = Column.build(data, KEY)

    def m(op: Any, value: Any) -> list[bool]:
        return mask(Condition("context", KEY, op, value), col).tolist()

    assert m("eq", 1) == [False, True, True, False, False]
    assert m("eq", True) == [True, False, False, False, False]
    assert m("ne", 2) == [False, True, True, False, False]  # a bool or text is not "not 2"
    assert m("gt", 0) == [False, True, True, False, False]
    assert m("not_in", ("rain",)) == [False, False, False, True, False]
    assert m("exists", False) == [False, False, False, False, True]


def test_conditions_that_can_never_apply_say_why() -> None:
    assert Condition("context", "x", "gt", "20").never_applies() is not None
    assert Condition("context", "x", "in", ()).never_applies() is not None
    assert Condition("context", "x", "gte", 3).never_applies() is None
