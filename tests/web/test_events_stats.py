"""POST /v1/events and GET /v1/stats over the real pipeline: API -> worker -> sender -> a strict
push service that decrypts like a browser; then events reported with the decrypted tokens."""

from __future__ import annotations

from collections import Counter
from typing import Any

from service import tokens
from service.rules.engine import rule_variant
from service.testing import PushService
from tests.conftest import LiveApi
from tests.web.conftest import pipeline


async def post_event(
    api: LiveApi, body: Any, content_type: str = "application/json"
) -> tuple[int, Any]:
    import json

    data = body if isinstance(body, str | bytes) else json.dumps(body)
    async with api.http.post(
        f"{api.url}/v1/events", data=data, headers={"Content-Type": content_type}
    ) as r:
        return r.status, await r.json()


async def test_stats_equal_what_happened(api: LiveApi, push_service: PushService) -> None:
    subscribers, processed = await pipeline(api, push_service, n=10, gone=2)
    assert processed == 20
    rule = api.ctx.rules.current.rules[0]
    variant_of = {sid: rule_variant(sid, rule).name for sid, _ in subscribers}
    assert set(variant_of.values()) == {"a", "b"}, "the scenario needs both arms"

    received = [(sid, m) for sid, sub in subscribers for m in sub.messages()]
    assert len(received) == 8
    # The browser side: every push shown; every other one clicked; the first clicked converts.
    expected: dict[str, Counter[str]] = {"a": Counter(), "b": Counter()}
    for i, (sid, message) in enumerate(received):
        data = message["notification"]["data"]
        assert data["variant"] == variant_of[sid]
        base = {"delivery_id": data["delivery_id"], "token": data["event_token"]}
        kinds = ["shown"] + (["clicked"] if i % 2 == 0 else []) + (["converted"] if i == 0 else [])
        for kind in kinds:
            status, body = await post_event(
                api,
                {**base, "type": kind},
                "text/plain" if kind == "converted" else "application/json",
            )
            assert (status, body["recorded"]) == (202, True), body
            expected[data["variant"]][kind] += 1
        # A replay is accepted and not counted again.
        status, body = await post_event(api, {**base, "type": "shown"})
        assert (status, body["recorded"]) == (202, False)

    async with api.http.get(f"{api.url}/v1/stats", headers=api.admin()) as r:
        assert r.status == 200
        stats = await r.json()
    rows = {row["variant"]: row for row in stats["rules"] if row["rule"] == "promo"}
    assert set(rows) == {"a", "b"}
    for v, row in rows.items():
        members = [sid for sid in variant_of if variant_of[sid] == v]
        gone_here = sum(1 for sid, _ in subscribers[:2] if variant_of[sid] == v)
        assert row["matched"] == 2 * len(members)
        assert row["suppressed"] == {"min_gap": len(members)}
        assert row["sent"] == len(members) - gone_here
        assert row["gone"] == gone_here
        assert (row["failed"], row["expired"]) == (0, 0)
        for kind in ("shown", "clicked", "converted", "dismissed"):
            assert row[kind] == expected[v][kind], (v, kind)
        assert row["ctr"] == (expected[v]["clicked"] / row["sent"] if row["sent"] else None)
    [exp] = stats["experiments"]
    assert exp["rule"] == "promo" and exp["variants"] == ["a", "b"]
    # Ten subscribers are far below any needed sample: no winner, whatever the numbers.
    assert exp["winner"] is None
    assert exp["comparisons"][0]["winner"] is None


async def test_forged_foreign_and_malformed_events(api: LiveApi, push_service: PushService) -> None:
    subscribers, _ = await pipeline(api, push_service, n=2, gone=0)
    (_, first), (_, second) = subscribers
    d1, d2 = (sub.messages()[0]["notification"]["data"] for sub in (first, second))
    assert d1["delivery_id"] != d2["delivery_id"]

    def event(delivery: int, token: str, kind: str = "clicked") -> dict[str, Any]:
        return {"delivery_id": delivery, "token": token, "type": kind}

    # The token of another delivery does not open this one.
    status, body = await post_event(api, event(d1["delivery_id"], d2["event_token"]))
    assert status == 403 and body["error"]["code"] == "forbidden"
    # A token made with another key (a forger's guess) neither.
    forged = tokens.event_token(b"k" * 32, d1["delivery_id"])
    status, body = await post_event(api, event(d1["delivery_id"], forged))
    assert status == 403
    # A valid token for a delivery that does not exist (or was erased).
    ghost = 10_000_000
    status, body = await post_event(
        api, event(ghost, tokens.event_token(api.ctx.keys.secret_key, ghost))
    )
    assert status == 404 and body["error"]["code"] == "not_found"
    # Bad requests name the problem.
    status, body = await post_event(api, "{not json")
    assert status == 400
    status, body = await post_event(api, event(d1["delivery_id"], d1["event_token"], "liked"))
    assert status == 422 and body["error"]["details"][0]["field"] == "type"
    status, body = await post_event(
        api, {**event(d1["delivery_id"], d1["event_token"]), "delivery_id": str(d1["delivery_id"])}
    )
    assert status == 422
    status, body = await post_event(
        api, event(d1["delivery_id"], d1["event_token"]), "application/x-www-form-urlencoded"
    )
    assert status == 415
    # Nothing of the above was counted.
    assert await api.ctx.pool.fetchval("SELECT count(*) FROM events") == 0
    status, body = await post_event(api, event(d1["delivery_id"], d1["event_token"]))
    assert status == 202 and body == {
        "delivery_id": d1["delivery_id"],
        "type": "clicked",
        "recorded": True,
    }


async def test_events_are_open_to_any_origin_and_stats_need_admin(
    api: LiveApi, push_service: PushService
) -> None:
    subscribers, _ = await pipeline(api, push_service, n=1, gone=0)
    data = subscribers[0][1].messages()[0]["notification"]["data"]
    async with api.http.post(
        f"{api.url}/v1/events",
        headers={"Origin": "https://shop.example", "Content-Type": "text/plain"},
        json={"delivery_id": data["delivery_id"], "token": data["event_token"], "type": "shown"},
    ) as r:
        assert r.status == 202
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    async with api.http.get(f"{api.url}/v1/stats") as r:
        assert r.status == 401
    async with api.http.get(
        f"{api.url}/v1/stats", headers={"Authorization": "Bearer not-the-admin-token"}
    ) as r:
        assert r.status == 401
