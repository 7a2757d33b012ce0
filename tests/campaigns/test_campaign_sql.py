"""The SQL side of campaigns (migrations/0009_campaigns.sql) agrees with the Python side
(service/campaigns/body.py and the rules' conditions and templates) it mirrors."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from service.campaigns.body import parse_campaign, render, sql_argument, variant_point
from service.rules.conditions import Condition, holds
from service.rules.templates import attribute_value
from service.vocabulary import OPERATORS
from tests.factories import insert_subscription

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
VALUES: list[Any] = [
    "gold",
    "Gold",
    "",
    "3",
    "ä" * 70,
    0,
    1,
    -1,
    3,
    3.0,
    3.5,
    -0.0,
    1e-7,
    0.1 + 0.2,
    1e20,
    1234567890123456.5,
    2**53,
    -(2**63),
    True,
    False,
]
ARGS: list[Any] = [3, 3.0, 2.5, 0, "gold", "3", True, False]
LISTS: list[Any] = [[3, "gold"], ["x"], [True, 1], [], [2.5, False]]


Case = tuple[dict[str, Any], str, Any]


def _cases() -> list[Case]:
    cases: list[Case] = []
    for value in [*VALUES, None, "<missing>"]:
        attrs = {} if value == "<missing>" else {"k": value}
        for op in OPERATORS:
            args = [True, False] if op == "exists" else LISTS if op in ("in", "not_in") else ARGS
            cases += [(attrs, op, arg) for arg in args]
    return cases


async def _sql_holds(
    pool: asyncpg.Pool, cases: list[tuple[dict[str, Any], str, Any]]
) -> list[bool]:
    rows = await pool.fetch(
        "SELECT momentcast_holds(a::jsonb, 'k', o, v::jsonb) AS h FROM unnest($1::text[],"
        " $2::text[], $3::text[]) WITH ORDINALITY AS t(a, o, v, i) ORDER BY i",
        [json.dumps(c[0]) for c in cases],
        [c[1] for c in cases],
        [json.dumps(sql_argument(_condition(c[1], c[2]))) for c in cases],
    )
    return [r["h"] for r in rows]


def _condition(op: str, arg: Any) -> Condition:
    value = tuple(arg) if isinstance(arg, list) else arg
    return Condition("attributes", "k", op, value)  # type: ignore[arg-type]


def _py_holds(attrs: dict[str, Any], op: str, arg: Any) -> bool:
    return holds(_condition(op, arg), attrs.get("k"), "k" in attrs)


async def test_audience_operators_agree_with_the_rule_operators(pool: asyncpg.Pool) -> None:
    cases = _cases()
    assert len(cases) > 1000
    sql = await _sql_holds(pool, cases)
    differ = [(c, s) for c, s in zip(cases, sql, strict=True) if _py_holds(*c) != s]
    assert differ == []


def _random_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(["", "a", "b", "gold", "3", "A"])
    if kind == 1:
        return rng.randint(-3, 3)
    if kind == 2:
        return rng.choice([-2.5, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 1e-9])
    return rng.random() < 0.5


async def test_audience_operators_agree_on_random_values(pool: asyncpg.Pool) -> None:
    rng = random.Random(11)
    cases: list[Case] = []
    for _ in range(3000):
        op = rng.choice(OPERATORS)
        attrs = {} if rng.random() < 0.15 else {"k": _random_scalar(rng)}
        if op in ("in", "not_in"):
            arg: Any = [_random_scalar(rng) for _ in range(rng.randrange(4))]
        elif op == "exists":
            arg = rng.random() < 0.5
        else:
            arg = _random_scalar(rng)
        cases.append((attrs, op, arg))
    sql = await _sql_holds(pool, cases)
    assert [c for c, s in zip(cases, sql, strict=True) if _py_holds(*c) != s] == []


async def test_attribute_text_renders_as_in_rules(pool: asyncpg.Pool) -> None:
    for value in VALUES:
        # Python sees an attribute as the store hands it over: through jsonb.
        stored = await pool.fetchval("SELECT $1::jsonb", {"k": value})
        sql = await pool.fetchval("SELECT momentcast_text_value($1::jsonb -> 'k')", {"k": value})
        assert sql == attribute_value(stored["k"]), value


async def test_variant_points_equal_the_python_hash(pool: asyncpg.Pool) -> None:
    for i in range(200):
        sub, campaign, total = uuid.uuid4(), f"campaign-{i}", 1 + i * 97
        sql = await pool.fetchval(
            "SELECT momentcast_variant_point($1, $2, $3)", sub, campaign, total
        )
        assert sql == variant_point(str(sub), campaign, total)


MESSAGE = {
    "title": "Hi {attributes.name}, {{not a field}}",
    "body": "{attributes.visits} visits, gold: {attributes.gold}, {attributes.missing}",
    "url": "https://example.com/{attributes.city}",
    "locales": {"de": {"title": "Hallo {attributes.name}"}},
    "actions": [
        {"action": "book", "title": "Book in {attributes.city}"},
        {"action": "map", "title": "Map", "url": "https://maps.example/{attributes.city}"},
    ],
}
PROFILES: list[dict[str, Any]] = [
    {"name": "Ana", "visits": 3, "gold": True, "city": "Köln"},
    {"name": "<b>" * 30, "visits": 2.5, "gold": False},
    {},
]


async def test_messages_render_in_sql_as_in_python(pool: asyncpg.Pool) -> None:
    body = {
        "id": "c",
        "audience": {},
        "message": MESSAGE,
        "variants": [
            {"name": "a", "weight": 1},
            {"name": "b", "weight": 1, "message": {"body": "plain, no attributes"}},
        ],
        "send_at": "2026-11-24T09:00:00Z",
    }
    campaign = parse_campaign(json.dumps(body), now=NOW)
    plan = campaign.programs
    assert plan["keys"] == ["", "de"] and plan["names"] == [
        "city",
        "gold",
        "missing",
        "name",
        "visits",
    ]
    for number, template in enumerate(plan["templates"]):
        variant = campaign.variants[number // len(plan["keys"])]
        message = variant.message_for(plan["keys"][number % len(plan["keys"])] or None)
        for attrs in PROFILES:
            stored = await pool.fetchval("SELECT $1::jsonb", attrs)
            sql = await pool.fetchval(
                "SELECT momentcast_fill($1, $2, $3, $4::jsonb)",
                template,
                plan["tokens"],
                plan["names"],
                attrs,
            )
            assert sql == render(message, stored)


async def test_audience_topics_and_locales(pool: asyncpg.Pool) -> None:
    from service.store import Store

    store = Store(pool)
    await pool.execute("TRUNCATE subscriptions CASCADE")
    rows = [
        (["food"], "de-AT"),
        (["deals", "x"], "DE"),
        (["food"], "fr-CA"),
        (["food"], "fr"),
        (["food"], "dee"),
        (["sport"], "de"),
        ([], "de"),
        (["food"], None),
    ]
    for n, (topics, locale) in enumerate(rows):
        await insert_subscription(
            pool, endpoint=f"https://push.example/{n}", topics=topics, locale=locale
        )
    audience = {"topics": ["food", "deals"], "locales": ["de", "fr-ca"], "conditions": []}
    # de matches de-AT and DE; fr-ca only Canadian French; dee is no German.
    assert await store.audience_size(audience=audience) == 3
    assert await store.audience_size(audience={"topics": ["food"]}) == 5
    assert await store.audience_size(audience={}) == len(rows)
    await pool.execute("TRUNCATE subscriptions CASCADE")
