"""The signal and subscriber counts of GET /v1/stats over real HTTP and a real worker: stored,
stale (also a metric), duplicates (also a metric) and quarantined signals; active, paused,
gone subscribers and location consent. Signal retention leaves the running totals as they
are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.metrics import REGISTRY
from service.worker import Worker
from tests.api.conftest import register
from tests.conftest import LiveApi
from tests.worker.conftest import CAFE_A


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def stats(api: LiveApi) -> Any:
    async with api.http.get(f"{api.url}/v1/stats", headers=api.admin()) as r:
        assert r.status == 202 or r.status == 200, await r.text()
        return await r.json()


async def post(api: LiveApi, token: str, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with api.http.post(f"{api.url}/v1/signals", json=body, headers=headers) as r:
        assert r.status == 202, await r.text()
        return await r.json()


async def test_stats_count_signals_and_subscribers(wapi: LiveApi) -> None:
    before = await stats(wapi)
    assert before["signals"] == {"stored": 0, "stale": 0, "duplicates": 0, "quarantined": 0}
    assert before["subscribers"] == {"active": 0, "paused": 0, "gone": 0, "location_consent": 0}
    stale0 = metric("momentcast_signals_stale_total")
    dup0 = metric("momentcast_signals_duplicate_total")

    device = await register(wapi)
    other = await register(wapi, location_consent=False)
    paused = await register(wapi)
    gone = await register(wapi)
    pool = wapi.ctx.pool
    await pool.execute("UPDATE subscriptions SET paused = true WHERE id = $1::uuid", paused.id)
    await pool.execute("UPDATE subscriptions SET status = 'gone' WHERE id = $1::uuid", gone.id)

    now = datetime.now(UTC)
    lat, lon = CAFE_A
    fresh = {"lat": lat, "lon": lon, "at": now.isoformat(), "id": "fresh"}
    old = {"lat": lat, "lon": lon, "at": (now - timedelta(minutes=30)).isoformat(), "id": "old"}
    assert await post(wapi, device.token, {"signals": [old, fresh]}) == {
        "accepted": 2,
        "duplicates": 0,
    }
    # A retry of both, and one more without an id: two duplicates, one stored.
    retry = {"signals": [old, fresh, {"lat": lat, "lon": lon}]}
    assert await post(wapi, device.token, retry) == {"accepted": 1, "duplicates": 2}
    # A context signal of a subscriber without location consent.
    await post(wapi, other.token, {"context": {"page_category": "menu"}})

    assert await Worker(wapi.ctx).drain() == 4
    got = await stats(wapi)
    assert got["signals"] == {"stored": 4, "stale": 1, "duplicates": 2, "quarantined": 0}
    assert got["subscribers"] == {"active": 2, "paused": 1, "gone": 1, "location_consent": 2}
    assert metric("momentcast_signals_stale_total") == stale0 + 1
    assert metric("momentcast_signals_duplicate_total") == dup0 + 2

    # A quarantined signal is counted while it is held; retention deleting processed signals
    # lowers none of the running totals.
    await post(wapi, device.token, {"lat": lat, "lon": lon})
    await pool.execute(
        "UPDATE signals SET quarantined_at = now() WHERE id = (SELECT max(id) FROM signals)"
    )
    await pool.execute("DELETE FROM signals WHERE processed_at IS NOT NULL")
    got = await stats(wapi)
    assert got["signals"] == {"stored": 5, "stale": 1, "duplicates": 2, "quarantined": 1}
