"""Clicks: GET /c/{delivery_id}/{action} (the navigate links of declarative pushes), the action
of POST /v1/events, and clicked_actions in /v1/stats.

The deliveries are put in as the worker and the sender leave them (a sent row with the stored
message), so each case controls its payload exactly.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from service import tokens
from tests import factories
from tests.conftest import LiveApi
from tests.factories import insert_subscription

MESSAGE: dict[str, Any] = {
    "title": "Coffee at Cafe A",
    "body": "Cafe A is 40 m away",
    "url": "https://example.com/coffee/cafe-a",
    "tag": "coffee",
    "actions": [
        {"action": "menu", "title": "Menu", "url": "https://example.com/menu/cafe-a"},
        {"action": "later", "title": "Remind me later", "url": "https://example.com/later"},
    ],
}


async def insert_delivery(
    pool: asyncpg.Pool, payload: dict[str, Any] | None = None, variant: str = "b"
) -> int:
    subscription_id = await insert_subscription(pool)
    return await factories.insert_delivery(
        pool,
        subscription_id,
        payload=MESSAGE if payload is None else payload,
        rule_id="promo",
        variant=variant,
        topic="coffee",
        status="sent",
    )


def token_of(api: LiveApi, delivery_id: int) -> str:
    return tokens.event_token(api.ctx.keys.secret_key, delivery_id)


async def follow(api: LiveApi, path: str) -> tuple[int, dict[str, str], str]:
    """GET a click link as a browser would, without following the redirect."""
    async with api.http.get(api.url + path, allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.text()


async def clicks(pool: asyncpg.Pool, delivery_id: int | None = None) -> list[tuple[int, Any]]:
    rows = await pool.fetch(
        "SELECT delivery_id, action FROM events WHERE type = 'clicked'"
        " AND ($1::bigint IS NULL OR delivery_id = $1) ORDER BY delivery_id",
        delivery_id,
    )
    return [(r["delivery_id"], r["action"]) for r in rows]


async def post_event(api: LiveApi, body: dict[str, Any]) -> tuple[int, Any]:
    async with api.http.post(
        api.url + "/v1/events", data=json.dumps(body), headers={"Content-Type": "text/plain"}
    ) as r:
        return r.status, await r.json()


async def test_an_action_link_counts_one_click_with_its_action_and_redirects_to_its_url(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    delivery_id = await insert_delivery(clean_db)
    link = f"/c/{delivery_id}/menu?t={token_of(api, delivery_id)}"

    for _ in range(2):  # followed twice (a double tap, a reload): counted once
        status, headers, _ = await follow(api, link)
        assert status == 302
        assert headers["Location"] == "https://example.com/menu/cafe-a"
        assert headers["Cache-Control"] == "no-store"
        # The link holds the event token: the target must not see it as a referrer.
        assert headers["Referrer-Policy"] == "no-referrer"
    assert await clicks(clean_db) == [(delivery_id, "menu")]

    # The notification's own link still leads to its url; the first click's action stays.
    status, headers, _ = await follow(api, f"/c/{delivery_id}/open?t={token_of(api, delivery_id)}")
    assert (status, headers["Location"]) == (302, MESSAGE["url"])
    # And a click the service worker reports as well is a repeat, not a second click.
    body = {"delivery_id": delivery_id, "token": token_of(api, delivery_id), "type": "clicked"}
    assert await post_event(api, {**body, "action": "menu"}) == (
        202,
        {"delivery_id": delivery_id, "type": "clicked", "recorded": False},
    )
    assert await clicks(clean_db) == [(delivery_id, "menu")]
    # The subscriber's export shows the click with its action.
    subscription_id = await clean_db.fetchval(
        "SELECT subscription_id FROM deliveries WHERE id = $1", delivery_id
    )
    async with api.http.get(
        f"{api.url}/v1/subscriptions/{subscription_id}/export", headers=api.admin()
    ) as r:
        assert r.status == 200
        [exported] = (await r.json())["deliveries"]
    assert [(e["type"], e["action"]) for e in exported["events"]] == [("clicked", "menu")]


async def test_the_open_link_redirects_to_the_message_url_and_records_no_action(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    delivery_id = await insert_delivery(clean_db)
    status, headers, _ = await follow(api, f"/c/{delivery_id}/open?t={token_of(api, delivery_id)}")
    assert (status, headers["Location"]) == (302, MESSAGE["url"])
    assert await clicks(clean_db) == [(delivery_id, None)]


async def test_a_message_without_url_counts_the_click_and_shows_a_page(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    payload = {"title": "Rain soon", "body": "Take an umbrella", "actions": [MESSAGE["actions"][1]]}
    delivery_id = await insert_delivery(clean_db, payload)
    status, headers, text = await follow(
        api, f"/c/{delivery_id}/open?t={token_of(api, delivery_id)}"
    )
    assert status == 200 and "Location" not in headers
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == "default-src 'none'"
    assert "opened" in text
    assert await clicks(clean_db) == [(delivery_id, None)]
    # Its action has a url of its own.
    other = await insert_delivery(clean_db, payload)
    status, headers, _ = await follow(api, f"/c/{other}/later?t={token_of(api, other)}")
    assert (status, headers["Location"]) == (302, "https://example.com/later")


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "//evil.example/x", "/relative", "https://ex ample.com"]
)
async def test_a_stored_url_that_is_no_absolute_http_url_is_never_a_redirect(
    api: LiveApi, clean_db: asyncpg.Pool, url: str
) -> None:
    delivery_id = await insert_delivery(clean_db, {**MESSAGE, "url": url})
    status, headers, _ = await follow(api, f"/c/{delivery_id}/open?t={token_of(api, delivery_id)}")
    assert status == 200 and "Location" not in headers


async def test_bad_links_are_404_without_a_redirect_and_count_nothing(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    mine = await insert_delivery(clean_db)
    theirs = await insert_delivery(clean_db)
    erased = await insert_delivery(clean_db)
    await clean_db.execute("UPDATE deliveries SET payload = NULL WHERE id = $1", erased)
    token = token_of(api, mine)
    ghost = 10**12
    evil = "https://evil.example/phish"
    bad = [
        f"/c/{mine}/menu",  # no token
        f"/c/{mine}/menu?t=",
        f"/c/{mine}/menu?t={'x' * 32}",
        f"/c/{mine}/menu?t={token_of(api, theirs)}",  # another delivery's token
        f"/c/{mine}/menu?t={tokens.event_token(b'k' * 32, mine)}",  # another key
        f"/c/{ghost}/open?t={token_of(api, ghost)}",  # no such delivery
        f"/c/{erased}/open?t={token_of(api, erased)}",  # erased: no target kept
        f"/c/{mine}/book?t={token}",  # not one of its actions
        f"/c/{mine}/Menu?t={token}",
        f"/c/{mine}/url?t={token}",  # a payload key is no action
        f"/c/{mine}/title?t={token}",
        # Crafted actions and paths: the target is never taken from the request.
        f"/c/{mine}/{evil.replace('/', '%2F')}?t={token}",
        f"/c/{mine}/%2E%2E%2F%2E%2E%2Fevil?t={token}",
        f"/c/{mine}/menu%00?t={token}",
        f"/c/{mine}/?t={token}",
        f"/c/{mine}?t={token}",
        f"/c/-1/open?t={token}",
        f"/c/0x{mine:x}/open?t={token}",
        f"/c/{mine}.0/open?t={token}",
        f"/c/{'9' * 40}/open?t={token}",
        f"/c/%D9%A3/open?t={token}",  # a non-ASCII digit
    ]
    for path in bad:
        status, headers, _ = await follow(api, path)
        assert status == 404, (path, status)
        assert "Location" not in headers, path
    # Parameters of the request never choose the target.
    for query in (f"url={evil}", f"next={evil}", f"redirect={evil}", f"t={evil}"):
        status, headers, _ = await follow(api, f"/c/{mine}/menu?t={token}&{query}")
        assert (status, headers["Location"]) == (302, "https://example.com/menu/cafe-a"), query
    assert await clicks(clean_db) == [(mine, "menu")]


async def test_head_and_post_do_not_count_a_click(api: LiveApi, clean_db: asyncpg.Pool) -> None:
    delivery_id = await insert_delivery(clean_db)
    link = f"{api.url}/c/{delivery_id}/menu?t={token_of(api, delivery_id)}"
    for method in ("HEAD", "POST"):
        async with api.http.request(method, link, allow_redirects=False) as r:
            assert r.status == 405 and "Location" not in r.headers
    assert await clicks(clean_db) == []


async def test_events_take_the_action_of_a_click(api: LiveApi, clean_db: asyncpg.Pool) -> None:
    delivery_id = await insert_delivery(clean_db)
    base = {"delivery_id": delivery_id, "token": token_of(api, delivery_id)}
    refused = [
        {**base, "type": "clicked", "action": "book"},  # not one of this delivery's
        {**base, "type": "shown", "action": "menu"},  # only clicks have an action
        {**base, "type": "clicked", "action": "../menu"},
        {**base, "type": "clicked", "action": ""},
        {**base, "type": "clicked", "action": 1},
    ]
    for body in refused:
        status, answer = await post_event(api, body)
        assert status == 422, body
        assert answer["error"]["details"][0]["field"] == "action", answer
    assert await clicks(clean_db) == []
    # Without a token that fits, the action is not even looked at.
    status, _ = await post_event(api, {**base, "token": "x" * 32, "type": "clicked"})
    assert status == 403
    status, answer = await post_event(api, {**base, "type": "clicked", "action": "later"})
    assert (status, answer["recorded"]) == (202, True)
    # Later clicks, with or without an action, are repeats: the first action stays.
    status, answer = await post_event(api, {**base, "type": "clicked", "action": "menu"})
    assert (status, answer["recorded"]) == (202, False)
    assert await clicks(clean_db) == [(delivery_id, "later")]
    # "open" is the notification itself, as in the click links.
    other = await insert_delivery(clean_db)
    body = {"delivery_id": other, "token": token_of(api, other), "type": "clicked"}
    status, _ = await post_event(api, {**body, "action": "open"})
    assert status == 202
    assert await clicks(clean_db, other) == [(other, None)]


async def test_stats_count_clicks_per_action(api: LiveApi, clean_db: asyncpg.Pool) -> None:
    # Variant b: two clicks on "menu", one on "later" (by link), one on the notification, one
    # unclicked; variant a: one click on "later" reported by a service worker.
    b = [await insert_delivery(clean_db) for _ in range(5)]
    a = await insert_delivery(clean_db, variant="a")
    for delivery_id, action in zip(b, ["menu", "menu", "later", "open"], strict=False):
        status, _, _ = await follow(
            api, f"/c/{delivery_id}/{action}?t={token_of(api, delivery_id)}"
        )
        assert status == 302
    status, _ = await post_event(
        api, {"delivery_id": a, "token": token_of(api, a), "type": "clicked", "action": "later"}
    )
    assert status == 202
    async with api.http.get(api.url + "/v1/stats", headers=api.admin()) as r:
        assert r.status == 200
        stats = await r.json()
    rows = {row["variant"]: row for row in stats["rules"] if row["rule"] == "promo"}
    assert rows["b"]["clicked"] == 4 and rows["b"]["sent"] == 5
    assert rows["b"]["clicked_actions"] == {"later": 1, "menu": 2}
    assert rows["a"]["clicked"] == 1
    assert rows["a"]["clicked_actions"] == {"later": 1}
    # Every rule row has the map, empty without action clicks.
    assert all(isinstance(row["clicked_actions"], dict) for row in stats["rules"])
