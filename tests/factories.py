"""Test data made one way: subscriptions, deliveries and rule folders.

Plain functions with sensible defaults and keyword overrides (in the manner of procrastinate's
``job_factory``). Subscriptions come either through the real API (``subscribe``: a test about
what a subscriber sees) or as rows (``insert_subscription``: the API is not what is under test,
or the row is one the API would refuse). Deliveries are rows as the engine and the sender leave
them. A rule folder is what an operator writes: policy.yaml, rule files and places/*.geojson.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from service.testing import SAMPLE_PAYLOAD, BrowserSubscription
from tests.conftest import LiveApi

# --- subscriptions through the API -------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What POST /v1/subscriptions answers: the subscription's id and its bearer token."""

    id: str
    token: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register_subscription(
    http: aiohttp.ClientSession,
    url: str,
    subscription: BrowserSubscription | dict[str, Any],
    *,
    location_consent: bool | None = True,
    **profile: Any,
) -> Registration:
    """``subscription`` registered at the API under ``url``, which must answer 201.

    It consents to location use unless ``location_consent`` says no (or, with None, the body
    leaves the field out); ``profile`` adds the body's other fields (timezone, topics...).
    """
    if isinstance(subscription, BrowserSubscription):
        subscription = subscription.to_json()
    body: dict[str, Any] = {"subscription": subscription}
    if location_consent is not None:
        body["location_consent"] = location_consent
    body.update(profile)
    async with http.post(url + "/v1/subscriptions", json=body) as resp:
        assert resp.status == 201, await resp.text()
        answer = await resp.json()
    return Registration(answer["id"], answer["token"])


async def subscribe(
    api: LiveApi, subscription: BrowserSubscription | dict[str, Any], **fields: Any
) -> Registration:
    """``register_subscription`` at a live API of the test process."""
    return await register_subscription(api.http, api.url, subscription, **fields)


# --- rows ----------------------------------------------------------------------------------------


def _insert(
    table: str, row: dict[str, Any], expressions: dict[str, str], *extra: Any
) -> tuple[str, list[Any]]:
    """An INSERT into ``table`` of ``row`` (bound parameters) and ``expressions`` (SQL, which
    may use ``extra`` as the parameters after the row's), returning id."""
    for name in (*row, *expressions):
        assert name.isidentifier(), name  # column names come from test code, never from data
    names = [*row, *expressions]
    values = [f"${i}" for i in range(1, len(row) + 1)] + list(expressions.values())
    query = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(values)}) RETURNING id"
    return query, [*row.values(), *extra]


async def insert_subscription(
    pool: asyncpg.Pool,
    browser: BrowserSubscription | None = None,
    *,
    consented: bool = False,
    **columns: Any,
) -> uuid.UUID:
    """A subscriptions row as the API would store it, without the API.

    The keys are ``browser``'s (a placeholder pair if None); ``columns`` set or override any
    column (``endpoint`` to plant a row the API would refuse, ``id``, ``topics``, ``locale``...).
    ``consented`` stamps ``consent_at`` now, as for a device that consented to location use.
    """
    row: dict[str, Any] = {
        "endpoint": f"http://127.0.0.1:9/push/{secrets.token_hex(16)}",
        "p256dh": "BAAA",
        "auth": "AAAA",
        "token_hash": secrets.token_bytes(32),
    }
    if browser is not None:
        row.update(endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth)
    row.update(columns)
    query, args = _insert("subscriptions", row, {"consent_at": "now()"} if consented else {})
    row_id: uuid.UUID = await pool.fetchval(query, *args)
    return row_id


async def insert_delivery(
    pool: asyncpg.Pool,
    subscription_id: uuid.UUID,
    *,
    payload: dict[str, Any] | None = None,
    ttl_s: int = 1200,
    expires_in: float | None = None,
    urgency: str = "normal",
    topic: str | None = "lunch",
    rule_id: str = "lunch-nearby",
    variant: str = "a",
    events: Sequence[str] = (),
    **columns: Any,
) -> int:
    """A deliveries row as the engine would write it (pending unless ``status`` says otherwise).

    It expires ``expires_in`` seconds from now (``ttl_s`` by default), unless ``expires_at`` is
    given among ``columns`` (any other column: ``status``, ``place_id``, ``created_at``,
    ``test``...). ``events`` are the events rows reported for it, in order.
    """
    row: dict[str, Any] = {
        "subscription_id": subscription_id,
        "rule_id": rule_id,
        "variant": variant,
        "payload": SAMPLE_PAYLOAD if payload is None else payload,
        "ttl_s": ttl_s,
        "urgency": urgency,
        "topic": topic,
        **columns,
    }
    if "expires_at" in row:
        query, args = _insert("deliveries", row, {})
    else:
        expires = float(ttl_s if expires_in is None else expires_in)
        expiry = {"expires_at": f"now() + make_interval(secs => ${len(row) + 1})"}
        query, args = _insert("deliveries", row, expiry, expires)
    delivery_id: int = await pool.fetchval(query, *args)
    for kind in events:
        await pool.execute(
            "INSERT INTO events (delivery_id, type) VALUES ($1, $2)", delivery_id, kind
        )
    return delivery_id


# --- rule folders --------------------------------------------------------------------------------


def place(
    pid: str, lat: float, lon: float, name: str | None = None, **props: Any
) -> dict[str, Any]:
    """A GeoJSON point feature of a places file (its name defaults to the id, titled)."""
    return {
        "type": "Feature",
        "properties": {"id": pid, "name": pid.title() if name is None else name, **props},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def write_rule_folder(
    root: Path,
    *,
    policy: str,
    rules: dict[str, str],
    places: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Path:
    """A rules folder at ``root``: policy.yaml, each of ``rules`` (file name -> text) and, for
    each of ``places`` (file stem -> features), places/<stem>.geojson, one feature a line (so
    that a feature's line number in an error names it)."""
    (root / "places").mkdir(parents=True, exist_ok=True)
    (root / "policy.yaml").write_text(policy)
    for stem, features in (places or {}).items():
        body = ",\n".join(json.dumps(f) for f in features)
        (root / "places" / f"{stem}.geojson").write_text(
            '{"type": "FeatureCollection", "features": [\n' + body + "\n]}\n"
        )
    for name, text in rules.items():
        (root / name).write_text(text)
    return root
