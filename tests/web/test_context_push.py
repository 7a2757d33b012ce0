"""Context-aware rules end to end: public API -> worker -> sender -> the strict push service,
which decrypts each push as the browser would."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from service.testing import PushService
from tests.conftest import LiveApi, make_settings
from tests.web.conftest import CAFES, deliver, notification, send, subscriber, write_rules

# No window, so the test passes at any hour; quiet hours and caps out of the way.
PAGE = """
description: A know moment from a page category, without a place
priority: 2
who:
  moments: [know]
  context: {page_category: {in: [hiking-boots]}, trail: {exists: true}}
message:
  title: "Boots for the {context.trail}?"
  body: "Read before you buy"
  url: "https://example.com/guides/boots"
  locales:
    de: {title: "Stiefel für den {context.trail}?"}
  actions:
    - {action: guide, title: "Read the guide"}
    - {action: shop, title: "Shop", url: "https://example.com/shop/boots"}
  ttl: 20m
"""


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    root = write_rules(tmp_path / "rules")
    (root / "page.yaml").write_text(PAGE)
    (root / "policy.yaml").write_text("limits: {}\nstale_after: 10m\nhysteresis_m: 30\n")
    return make_settings(data_dir, database_url, rules_dir=root)


PAGE_VIEW = {"moment": "know", "context": {"page_category": "hiking-boots", "trail": "GR20"}}


async def test_a_context_signal_sends_one_push_in_the_subscribers_language(
    api: LiveApi, push_service: PushService
) -> None:
    # No location consent needed for a context signal.
    people = {
        locale: await subscriber(api, push_service, locale=locale)
        for locale in ("de-DE", "de-AT", "en-GB", "pt-BR")
    }
    for _, token in people.values():
        await send(api, token, PAGE_VIEW)
    await deliver(api)
    titles = {}
    for locale, (sub, _) in people.items():
        [message] = sub.messages()
        shown = notification(message)
        titles[locale] = shown["title"]
        assert shown["body"] == "Read before you buy"
        assert [(a["action"], a["title"]) for a in shown["actions"]] == [
            ("guide", "Read the guide"),
            ("shop", "Shop"),
        ]
    assert titles == {
        "de-DE": "Stiefel für den GR20?",
        "de-AT": "Stiefel für den GR20?",
        "en-GB": "Boots for the GR20?",
        "pt-BR": "Boots for the GR20?",
    }


async def test_a_page_view_without_the_condition_sends_nothing_and_places_still_work(
    api: LiveApi, push_service: PushService
) -> None:
    sub, token = await subscriber(api, push_service, location_consent=True)
    await send(api, token, {"moment": "know", "context": {"page_category": "tents"}})
    await deliver(api)
    assert sub.messages() == []
    # The same subscriber walks into a café: the geofenced rule still fires.
    lat, lon = CAFES["cafe-a"]
    await send(api, token, {"lat": lat, "lon": lon, "accuracy_m": 10})
    await deliver(api)
    [message] = sub.messages()
    assert notification(message)["title"] in ("Coffee at Cafe A", "Espresso break at Cafe A?")


async def test_a_retried_signal_is_decided_and_pushed_once(
    api: LiveApi, push_service: PushService
) -> None:
    # The PAGE rule has no caps: every stored signal that matches is a push.
    sub, token = await subscriber(api, push_service)
    headers = {"Authorization": f"Bearer {token}"}
    answers = []
    for signal in ({**PAGE_VIEW, "id": "view-1"}, {**PAGE_VIEW, "id": "view-1"}):
        # The second is a client's retry of a request whose 202 it never saw.
        async with api.http.post(f"{api.url}/v1/signals", json=signal, headers=headers) as r:
            assert r.status == 202, await r.text()
            answers.append(await r.json())
    assert answers == [{"accepted": 1, "duplicates": 0}, {"accepted": 0, "duplicates": 1}]
    await deliver(api)
    assert len(sub.messages()) == 1
    # Another id is another signal: decided, and pushed, again.
    await send(api, token, {**PAGE_VIEW, "id": "view-2"})
    await deliver(api)
    assert len(sub.messages()) == 2
