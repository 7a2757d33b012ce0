"""Schemathesis against the live app's /openapi.json: no 5xx, every answer fits the schema.

Every operation is called with the admin token and with a device token, and half the time
with real ids (the device's subscription, a campaign, a rule, a delivery and its event
token) in its path and body, so that the fuzzer gets past authentication and "not found"
into each handler. The test fails unless each operation was really reached that way.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.runtime import load_rules
from tests.api.conftest import RealIds, later, push_subscription, real_ids
from tests.conftest import ADMIN_TOKEN, LiveApi

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 60
# /readyz answers 503 by design when rules are not loaded; that is its documented job.
SKIP = {("GET", "/readyz")}
# schemathesis leaves out the operation serving the schema it loaded (it is that schema).
SCHEMA_ITSELF = ("GET", "/openapi.json")
WHO = ("admin", "device")
# Answers that say the request never got into the handler's work.
REFUSED = {401, 403}


@dataclass
class Fixture:
    """The real ids the cases use; the device is registered again when a case erased it."""

    url: str
    ids: RealIds
    lock: threading.Lock = field(default_factory=threading.Lock)

    def headers(self, who: str) -> dict[str, str]:
        token = ADMIN_TOKEN if who == "admin" else self.ids.device.token
        return {"Authorization": f"Bearer {token}"}

    def use_real_ids(self, case: Any, path: str) -> None:
        ids = self.ids
        params = case.path_parameters
        if params is not None:
            if "id" in params:
                if path.startswith("/v1/campaigns/"):
                    params["id"] = ids.campaign_id
                elif path.startswith("/v1/rules/"):
                    params["id"] = ids.rule_id
                else:
                    params["id"] = ids.device.id
            if "delivery_id" in params:
                params["delivery_id"] = str(ids.delivery_id)
                params["action"] = "open"
                case.query = {**(case.query or {}), "t": ids.event_token}
            if "name" in params:
                params["name"] = "momentcast.css"
            if "path" in params:
                params["path"] = "leaflet.js"
        body = case.body
        if isinstance(body, dict):
            if "subscription_id" in body:
                body["subscription_id"] = ids.device.id
            if path == "/v1/events":
                body["delivery_id"] = ids.delivery_id
                body["token"] = ids.event_token
            if path == "/v1/subscriptions" and "subscription" in body:
                # The device's own endpoint with valid keys (which the fuzzer cannot make):
                # a 409, or a renewal with the device's token.
                body["subscription"] = push_subscription(ids.device.subscription["endpoint"])
            if path == "/v1/campaigns" and "send_at" in body:
                body["send_at"] = later()  # the fuzzer's instants are long past

    def after(self, case: Any, path: str, response: requests.Response) -> None:
        """Keep the device usable: follow a renewal of its token, replace it once erased."""
        ids = self.ids
        if path == "/v1/subscriptions" and response.status_code == 200:
            answer = response.json()
            if answer.get("id") == ids.device.id:
                ids.device.token = answer["token"]
                ids.device.subscription = case.body["subscription"]
        erased = (
            case.method.upper() == "DELETE"
            and path == "/v1/subscriptions/{id}"
            and response.status_code == 204
            and (case.path_parameters or {}).get("id") == ids.device.id
        )
        if erased:
            sub = push_subscription()
            answer = requests.post(
                self.url + "/v1/subscriptions",
                json={"subscription": sub, "topics": ["food"], "location_consent": True},
                timeout=30,
            )
            assert answer.status_code == 201, answer.text
            ids.device.id = answer.json()["id"]
            ids.device.token = answer.json()["token"]
            ids.device.subscription = sub


def _fuzz_operation(
    operation: Any,
    fixture: Fixture,
    session: requests.Session,
    reached: dict[str, set[tuple[str, bool, int]]],
) -> None:
    method, path = operation.method.upper(), operation.path
    name = f"{method} {path}"

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @hypothesis.given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ),
        who=st.sampled_from(WHO),
        real=st.booleans(),
    )
    def run(case: Any, who: str, real: bool) -> None:
        with fixture.lock:
            if real:
                fixture.use_real_ids(case, path)
            response = case.call_and_validate(
                base_url=fixture.url,
                session=session,
                headers=fixture.headers(who),
                checks=CHECKS,
            )
            reached[name].add((who, real, response.status_code))
            fixture.after(case, path, response)

    run()


def _fuzz(fixture: Fixture, reached: dict[str, set[tuple[str, bool, int]]]) -> list[str]:
    schema = schemathesis.openapi.from_url(fixture.url + "/openapi.json")
    failures: list[str] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = cast(Any, result).ok()  # an invalid operation raises here
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        reached[f"{operation.method.upper()} {operation.path}"] = set()
        try:
            _fuzz_operation(operation, fixture, session, reached)
        except Exception as exc:  # collect all operations' failures, not just the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures


def _not_reached(reached: dict[str, set[tuple[str, bool, int]]]) -> list[str]:
    """Operations the fuzzer never got into: no answer past authentication, or (with an id
    in the path) none with a real id other than 404."""
    missing = []
    for name, answers in sorted(reached.items()):
        if not any(status not in REFUSED for _, _, status in answers):
            missing.append(f"{name}: only {sorted(answers)}")
        elif "{" in name and not any(
            real and status not in REFUSED | {404} for _, real, status in answers
        ):
            missing.append(f"{name}: no real id answered: {sorted(answers)}")
    return missing


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error(api_with: Any) -> None:
    # A generous rate limit: the fuzzer is one device sending many requests.
    api: LiveApi = await api_with(signal_rate_burst=100_000)
    await load_rules(api.ctx)  # the rule routes' real work, and a rule to send a test push of
    fixture = Fixture(api.url, await real_ids(api))
    reached: dict[str, set[tuple[str, bool, int]]] = defaultdict(set)
    failures = await asyncio.to_thread(_fuzz, fixture, reached)
    assert not failures, "\n\n".join(failures)
    spec_operations = {
        f"{method.upper()} {path}"
        for path, methods in (await _spec(api)).items()
        for method in methods
    } - {f"{m} {p}" for m, p in {*SKIP, SCHEMA_ITSELF}}
    assert set(reached) == spec_operations
    assert not _not_reached(reached), "\n".join(_not_reached(reached))
    # The fuzzer's device is still there or was erased cleanly; the app still answers.
    async with api.http.get(api.url + "/healthz") as resp:
        assert resp.status == 200


async def _spec(api: LiveApi) -> dict[str, dict[str, Any]]:
    async with api.http.get(api.url + "/openapi.json") as resp:
        paths: dict[str, dict[str, Any]] = (await resp.json())["paths"]
    return paths


# Every JSON type, for every place a body holds a value: the fuzzer draws few of these
# (it found a TypeError in a campaign's topic check only after thousands of cases).
WRONG_TYPES: list[Any] = [None, True, 0, -1.5, "x", [], [1], {}, {"a": 1}]


def _valid_bodies(ids: RealIds) -> dict[tuple[str, str], tuple[str | None, str, Any]]:
    """(method, path) -> (who, query, a valid body giving every field a value)."""
    signal = {
        "lat": 52.52,
        "lon": 13.405,
        "accuracy_m": 12.5,
        "speed_mps": 1.2,
        "moment": "buy",
        "context": {"weather": "rain", "temp_c": 4.5, "indoor": False},
    }
    profile = {
        "timezone": "Europe/Berlin",
        "locale": "de-DE",
        "topics": ["food", "coffee"],
        "attributes": {"tier": "gold", "visits": 4, "vip": True},
    }
    message = {
        "title": "Lunch is on, {attributes.tier}",
        "body": "2-for-1 mains until 14:00.",
        "url": "https://example.com/offers/lunch",
        "locales": {"de": {"title": "Mittagszeit", "body": "2-für-1 bis 14:00."}},
        "actions": [{"action": "menu", "title": "See the menu", "url": "https://example.com/m"}],
    }
    campaign = {
        "id": "typed-sweep",
        "description": "Tuesday lunch offer to food lovers",
        "audience": {
            "topics": ["food", "coffee"],
            "attributes": {"tier": {"in": ["gold", "silver"]}, "visits": {"gte": 3}, "vip": True},
            "locales": ["de", "en"],
        },
        "send_at": {"local": later()[:16], "late": "skip"},
        "ttl": "2h",
        "urgency": "normal",
        "topic": "lunch-dec",
        "rate": "100/s",
        "message": message,
        "variants": [
            {"name": "a", "weight": 50},
            {"name": "b", "weight": 50, "message": {"title": "Hungry? 2-for-1 today"}},
        ],
    }
    return {
        ("POST", "/v1/subscriptions"): (
            None,
            "",
            {"subscription": push_subscription(), **profile, "location_consent": True},
        ),
        ("PATCH", "/v1/subscriptions/{id}"): (
            "device",
            "",
            {**profile, "paused": False, "location_consent": True},
        ),
        ("POST", "/v1/signals"): ("device", "", {"signals": [signal, {"context": {"k": 1}}]}),
        ("POST", "/v1/events"): (
            None,
            "",
            {
                "delivery_id": ids.delivery_id,
                "token": ids.event_token,
                "type": "clicked",
                "action": "open",
            },
        ),
        ("POST", "/v1/simulate"): (
            "admin",
            "",
            {"signal": {**signal, "at": "2026-12-01T12:15:00+01:00"}, "profile": profile},
        ),
        ("POST", "/v1/rules/{id}/test"): (
            "admin",
            "",
            {"subscription_id": ids.device.id, "place_id": None, "locale": "de-DE"},
        ),
        # A dry run validates as a creation does and stores nothing.
        ("POST", "/v1/campaigns"): ("admin", "?dry_run=true", campaign),
    }


def _places(node: Any, at: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key and list item of a JSON document, nested ones too."""
    children: list[tuple[str | int, Any]] = []
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    out = []
    for key, value in children:
        out.append((*at, key))
        out += _places(value, (*at, key))
    return out


def _replaced(body: Any, place: tuple[str | int, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(body))
    node = copy
    for key in place[:-1]:
        node = node[key]
    node[place[-1]] = value
    return copy


@pytest.mark.slow
async def test_every_body_field_of_every_type_is_a_client_error_or_accepted(
    api: LiveApi,
) -> None:
    await load_rules(api.ctx)
    ids = await real_ids(api)
    spec = await _spec(api)
    with_body = {
        (method.upper(), path)
        for path, methods in spec.items()
        for method, operation in methods.items()
        if "requestBody" in operation
    }
    bodies = _valid_bodies(ids)
    assert set(bodies) == with_body, "give every operation with a body a valid one here"
    headers = {"admin": api.admin(), "device": ids.device.auth(), None: {}}
    errors = []
    for (method, path), (who, query, body) in sorted(bodies.items()):
        url = api.url + path.replace("{id}", ids.rule_id if "rules" in path else ids.device.id)
        # The valid body itself passes, so each variant below differs in one place only.
        async with api.http.request(method, url + query, json=body, headers=headers[who]) as resp:
            assert resp.status < 300, (method, path, resp.status, await resp.text())
        for place in _places(body):
            for wrong in WRONG_TYPES:
                async with api.http.request(
                    method, url + query, json=_replaced(body, place, wrong), headers=headers[who]
                ) as resp:
                    if resp.status >= 500:
                        errors.append(f"{method} {path} {place}={wrong!r}: {resp.status}")
    assert not errors, "\n".join(errors)
