"""POST /v1/signals over real HTTP against real PostgreSQL: validation, auth, group commit."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from service import tokens
from service.queue import SIGNALS_CHANNEL
from service.store import migrations
from service.store.db import create_pool
from service.store.signals import SignalRequest, SignalRow
from tests.api.conftest import Device, assert_error, count_rows, register
from tests.conftest import LiveApi, PgServer

BERLIN = {"lat": 52.52, "lon": 13.405}


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


BAD_SIGNALS: list[tuple[str, Any, str]] = [
    ("lat above 90", {"lat": 90.5, "lon": 0}, "lat"),
    ("lat below -90", {"lat": -91, "lon": 0}, "lat"),
    ("lon above 180", {"lat": 0, "lon": 180.01}, "lon"),
    ("lat as a string", {"lat": "52.5", "lon": 13}, "lat"),
    ("lat a bool", {"lat": True, "lon": 13}, "lat"),
    ("lon missing", {"lat": 52.5}, "lon"),
    ("accuracy negative", {**BERLIN, "accuracy_m": -1}, "accuracy_m"),
    ("speed negative", {**BERLIN, "speed_mps": -0.5}, "speed_mps"),
    ("at without offset", {**BERLIN, "at": "2030-01-01T12:00:00"}, "at"),
    ("at a number", {**BERLIN, "at": 1700000000}, "at"),
    ("at in the future", {**BERLIN, "at": _ago(minutes=-10)}, "at"),
    ("at too old", {**BERLIN, "at": _ago(hours=25)}, "at"),
    ("moment unknown", {**BERLIN, "moment": "eat"}, "moment"),
    ("context nested", {**BERLIN, "context": {"a": [1]}}, "context.a"),
    ("context too big", {**BERLIN, "context": {f"k{i}": 1 for i in range(17)}}, "context"),
    ("context bad key", {**BERLIN, "context": {"a b": 1}}, "context.a b.[key]"),
    ("unknown field", {**BERLIN, "altitude": 3}, "altitude"),
    ("not an object", [BERLIN], "(body)"),
    ("empty batch", {"signals": []}, "signals"),
    ("batch of 501", {"signals": [BERLIN] * 501}, "signals"),
    ("id empty", {**BERLIN, "id": ""}, "id"),
    ("id of 65 characters", {**BERLIN, "id": "x" * 65}, "id"),
    ("id with a slash", {**BERLIN, "id": "a/b"}, "id"),
    ("id with a space", {**BERLIN, "id": "a b"}, "id"),
    ("id ending in a newline", {**BERLIN, "id": "abc\n"}, "id"),
    ("id not ASCII", {**BERLIN, "id": "caf\u00e9"}, "id"),
    ("id a number", {**BERLIN, "id": 7}, "id"),
    ("id in a batch", {"signals": [BERLIN, {**BERLIN, "id": "a%b"}]}, "signals.1.id"),
]


@pytest.mark.parametrize(("name", "body", "field"), BAD_SIGNALS, ids=[b[0] for b in BAD_SIGNALS])
async def test_bad_signal_is_422_and_stores_nothing(
    api: LiveApi, device: Device, name: str, body: Any, field: str
) -> None:
    async with api.http.post(api.url + "/v1/signals", json=body, headers=device.auth()) as resp:
        assert resp.status == 422, await resp.text()
        payload = await resp.json()
    assert_error(payload, 422, "invalid", field)
    assert payload["error"]["details"][0]["field"] == field
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 0


async def test_nan_and_infinity_are_refused(api: LiveApi, device: Device) -> None:
    # Python's json (and some clients) write these non-standard literals.
    for raw in (b'{"lat": NaN, "lon": 1}', b'{"lat": 1, "lon": Infinity}'):
        async with api.http.post(
            api.url + "/v1/signals",
            data=raw,
            headers={**device.auth(), "Content-Type": "application/json"},
        ) as resp:
            assert resp.status in (400, 422)
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 0


async def test_batch_with_bad_signals_names_each_and_stores_none(
    api: LiveApi, device: Device
) -> None:
    batch = [BERLIN, {"lat": 95, "lon": 0}, BERLIN, {**BERLIN, "moment": "sleep"}]
    async with api.http.post(
        api.url + "/v1/signals", json={"signals": batch}, headers=device.auth()
    ) as resp:
        assert resp.status == 422
        error = (await resp.json())["error"]
    assert [d["field"] for d in error["details"]] == ["signals.1.lat", "signals.3.moment"]
    assert error["message"].startswith("signals.1.lat:") and "1 more" in error["message"]
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 0


async def test_malformed_wrong_type_and_oversized(api: LiveApi, device: Device) -> None:
    headers = {**device.auth(), "Content-Type": "application/json"}
    async with api.http.post(api.url + "/v1/signals", data=b'{"lat": 1,', headers=headers) as r:
        assert r.status == 400
        assert_error(await r.json(), 400, "bad_request", "malformed JSON")
    async with api.http.post(
        api.url + "/v1/signals",
        data=json.dumps(BERLIN),
        headers={**device.auth(), "Content-Type": "text/plain"},
    ) as r:
        assert r.status == 415
    big = json.dumps({"signals": [{**BERLIN, "context": {"pad": "x" * 250}}] * 1200})
    async with api.http.post(api.url + "/v1/signals", data=big, headers=headers) as r:
        assert r.status == 413
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 0


async def test_signal_is_stored_with_its_fields(api: LiveApi, device: Device) -> None:
    at = _ago(minutes=2)
    one = {
        "lat": 48.1372,
        "lon": 11.5756,
        "accuracy_m": 12.5,
        "at": at,
        "speed_mps": 1.2,
        "moment": "buy",
        "context": {"screen": "offers", "battery": 0.4, "charging": False},
    }
    async with api.http.post(api.url + "/v1/signals", json=one, headers=device.auth()) as resp:
        assert resp.status == 202
        assert await resp.json() == {"accepted": 1, "duplicates": 0}
    row = await api.ctx.pool.fetchrow("SELECT * FROM signals")
    assert str(row["subscription_id"]) == device.id
    assert (row["lat"], row["lon"], row["moment"]) == (48.1372, 11.5756, "buy")
    assert row["accuracy_m"] == pytest.approx(12.5) and row["speed_mps"] == pytest.approx(1.2)
    assert row["at"] == datetime.fromisoformat(at)
    assert row["context"] == one["context"] and row["processed_at"] is None
    async with api.http.post(
        api.url + "/v1/signals", json={"signals": [BERLIN] * 500}, headers=device.auth()
    ) as resp:
        assert resp.status == 202 and (await resp.json()) == {"accepted": 500, "duplicates": 0}
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 501


async def test_batch_is_stored_in_request_order(
    api: LiveApi, device: Device, other_device: Device
) -> None:
    # Without "at" every signal of a batch gets the same time, so the worker applies them in
    # id order: ids must follow the order of the request.
    batch = [{"lat": float(lat), "lon": 13.0} for lat in range(1, 9)]
    async with api.http.post(
        api.url + "/v1/signals", json={"signals": batch}, headers=device.auth()
    ) as resp:
        assert resp.status == 202
    rows = await api.ctx.pool.fetch("SELECT lat, at FROM signals ORDER BY id")
    assert [r["lat"] for r in rows] == [float(lat) for lat in range(1, 9)]
    assert len({r["at"] for r in rows}) == 1
    # And across the requests of one group commit, in the order they were queued.
    at = datetime.now(UTC)
    requests = [
        SignalRequest(
            tokens.hash_token(d.token),
            [SignalRow(at, float(lat), 13.0, None, None, None, {}) for lat in lats],
        )
        for d, lats in ((device, (11, 12, 13)), (other_device, (21, 22, 23)))
    ]
    await api.ctx.store.ingest_signals(requests=requests, channel=SIGNALS_CHANNEL)
    rows = await api.ctx.pool.fetch("SELECT lat FROM signals WHERE lat > 10 ORDER BY id")
    assert [r["lat"] for r in rows] == [11.0, 12.0, 13.0, 21.0, 22.0, 23.0]


async def test_one_group_commit_answers_each_request_on_its_own(
    api: LiveApi, device: Device, other_device: Device
) -> None:
    # Every outcome in one statement: stored, the same device twice, an unknown token, a
    # paused subscription, a location without consent (refused) and a context signal from
    # that same unconsented device (stored: context signals need no consent).
    paused = await register(api, location_consent=True)
    async with api.http.patch(
        api.url + f"/v1/subscriptions/{paused.id}", json={"paused": True}, headers=paused.auth()
    ) as resp:
        assert resp.status == 200
    unconsented = await register(api, location_consent=False)
    received = datetime.now(UTC) - timedelta(seconds=30)
    explicit = datetime.now(UTC) - timedelta(minutes=3)

    def req(d: Device | None, *rows: SignalRow) -> SignalRequest:
        digest = tokens.hash_token(d.token if d else secrets.token_urlsafe(32))
        return SignalRequest(digest, rows, received_at=received)

    def located(lat: float, at: datetime | None = None) -> SignalRow:
        return SignalRow(at, lat, 13.0, None, None, None, {"n": lat})

    context_only = SignalRow(None, None, None, None, None, "know", {"page": "menu"})
    requests = [
        req(device, located(1.0), located(2.0, explicit)),
        req(None, located(3.0)),
        req(paused, located(4.0)),
        req(unconsented, context_only, located(5.0)),
        req(other_device, located(6.0)),
        req(unconsented, context_only),
        req(device, located(7.0)),
    ]
    batch = await api.ctx.store.ingest_signals(requests=requests, channel=SIGNALS_CHANNEL)
    hashes = [r.token_hash for r in requests]
    assert batch.known == frozenset(hashes[i] for i in (0, 2, 3, 4, 5, 6))
    assert batch.paused == frozenset({hashes[2]})
    assert batch.consent_refused == frozenset({3})
    assert batch.stored == 5
    rows = await api.ctx.pool.fetch(
        "SELECT subscription_id::text AS sub, lat, at, moment, context FROM signals ORDER BY id"
    )
    assert [(r["sub"], r["lat"]) for r in rows] == [
        (device.id, 1.0),
        (device.id, 2.0),
        (other_device.id, 6.0),
        (unconsented.id, None),
        (device.id, 7.0),
    ]
    # A signal without "at" takes its request's time of receipt; an explicit one is kept.
    assert [r["at"] for r in rows] == [received, explicit, received, received, received]
    assert rows[1]["context"] == {"n": 2.0}
    assert (rows[3]["moment"], rows[3]["context"]) == ("know", {"page": "menu"})


async def _post_signals(api: LiveApi, device: Device, body: Any) -> Any:
    async with api.http.post(api.url + "/v1/signals", json=body, headers=device.auth()) as r:
        assert r.status == 202, await r.text()
        return await r.json()


async def test_a_retry_with_the_same_id_is_stored_once(
    api: LiveApi, device: Device, other_device: Device
) -> None:
    first = {**BERLIN, "id": "fix-1"}
    assert await _post_signals(api, device, first) == {"accepted": 1, "duplicates": 0}
    # The client saw no answer (a timeout, a 503 after the COMMIT) and sends it again.
    assert await _post_signals(api, device, first) == {"accepted": 0, "duplicates": 1}
    # A batch: one already stored, a new id twice (stored once, the first), one without an id.
    batch = [first, {**BERLIN, "id": "fix-2"}, {"lat": 52.6, "lon": 13.4, "id": "fix-2"}, BERLIN]
    answer = await _post_signals(api, device, {"signals": batch})
    assert answer == {"accepted": 2, "duplicates": 2}
    # Ids are per subscription: another device may use the same one.
    assert await _post_signals(api, other_device, first) == {"accepted": 1, "duplicates": 0}
    rows = await api.ctx.pool.fetch(
        "SELECT subscription_id::text AS sub, client_id, lat FROM signals ORDER BY id"
    )
    assert [(r["sub"], r["client_id"], r["lat"]) for r in rows] == [
        (device.id, "fix-1", 52.52),
        (device.id, "fix-2", 52.52),
        (device.id, None, 52.52),
        (other_device.id, "fix-1", 52.52),
    ]


async def test_concurrent_requests_with_the_same_id_store_it_once(api_with: Any) -> None:
    # Two API processes' writers (so concurrent transactions), many requests in each.
    first = await api_with(signal_rate_burst=10_000)
    second = await api_with(signal_rate_burst=10_000)
    device = await register(first)
    bodies: list[Any] = [
        {**BERLIN, "id": "same"},
        {"signals": [{**BERLIN, "id": "same"}, {**BERLIN, "id": "other"}]},
    ]
    answers = await asyncio.gather(
        *(
            _post_signals(api, device, body)
            for _ in range(20)
            for api in (first, second)
            for body in bodies
        )
    )
    assert sum(a["accepted"] for a in answers) == 2
    assert sum(a["duplicates"] for a in answers) == 20 * 2 * 3 - 2
    rows = await first.ctx.pool.fetch("SELECT client_id FROM signals ORDER BY client_id")
    assert [r["client_id"] for r in rows] == ["other", "same"]


async def test_one_group_commit_counts_new_and_duplicate_ids_per_request(
    api: LiveApi, device: Device, other_device: Device
) -> None:
    unconsented = await register(api, location_consent=False)
    at = datetime.now(UTC)

    def located(client_id: str | None) -> SignalRow:
        return SignalRow(at, 52.52, 13.4, None, None, None, {}, client_id)

    def context(client_id: str | None) -> SignalRow:
        return SignalRow(at, None, None, None, None, "know", {}, client_id)

    def req(d: Device, *rows: SignalRow) -> SignalRequest:
        return SignalRequest(tokens.hash_token(d.token), rows)

    store = api.ctx.store
    await store.ingest_signals(requests=[req(device, located("old"))], channel=SIGNALS_CHANNEL)
    requests = [
        # "a" new (its second copy a duplicate), "old" stored before, one without an id
        req(device, located("a"), located("old"), located("a"), located(None)),
        # "a" is the first request's, "b" new
        req(device, located("a"), located("b")),
        # another subscription's "a"
        req(other_device, located("a")),
        # refused (a location without consent): stores nothing, so "w" stays new ...
        req(unconsented, located("w")),
        # ... for this context signal of the same subscription
        req(unconsented, context("w")),
        req(device, located(None), located(None)),
    ]
    batch = await store.ingest_signals(requests=requests, channel=SIGNALS_CHANNEL)
    assert batch.consent_refused == frozenset({3})
    assert batch.accepted == (2, 1, 1, 0, 1, 2)
    assert batch.stored == 7
    rows = await api.ctx.pool.fetch(
        "SELECT subscription_id::text AS sub, client_id FROM signals ORDER BY id"
    )
    assert [(r["sub"], r["client_id"]) for r in rows] == [
        (device.id, "old"),
        (device.id, "a"),
        (device.id, None),
        (device.id, "b"),
        (other_device.id, "a"),
        (unconsented.id, "w"),
        (device.id, None),
        (device.id, None),
    ]


async def test_a_deadlock_of_the_group_commit_is_retried(api: LiveApi, device: Device) -> None:
    # Another writer holds "k2" uncommitted; the group commit inserts "k1", then waits for
    # "k2"; the other writer then waits for the group commit (here a table lock, so that the
    # retry cannot race it for "k1"): a deadlock. PostgreSQL aborts the group commit's
    # statement (the other writer looks for deadlocks only after 20 s), the other writer
    # commits, and the group commit's second run stores "k1" and finds "k2" stored.
    at = datetime.now(UTC)
    rows = [SignalRow(at, 52.52, 13.4, None, None, None, {}, cid) for cid in ("k1", "k2")]
    request = SignalRequest(tokens.hash_token(device.token), rows)
    async with api.ctx.pool.acquire() as other:
        tx = other.transaction()
        await tx.start()
        try:
            await other.execute("SET LOCAL deadlock_timeout = '20s'")
            await other.execute(
                "INSERT INTO signals (subscription_id, at, lat, lon, client_id) "
                "VALUES ($1::uuid, now(), 1, 1, 'k2')",
                device.id,
            )
            ingest = asyncio.create_task(
                api.ctx.store.ingest_signals(requests=[request], channel=SIGNALS_CHANNEL)
            )
            async with asyncio.timeout(30):
                while not await api.ctx.pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ):
                    await asyncio.sleep(0.05)
                await other.execute("LOCK TABLE signals IN SHARE MODE")
            await tx.commit()
        except BaseException:
            await tx.rollback()
            raise
    async with asyncio.timeout(30):
        batch = await ingest
    assert batch.accepted == (1,) and batch.stored == 1
    stored = await api.ctx.pool.fetch("SELECT client_id, lat FROM signals ORDER BY client_id")
    assert [(r["client_id"], r["lat"]) for r in stored] == [("k1", 52.52), ("k2", 1.0)]


async def test_worker_lock_does_not_block_ingest(api: LiveApi, device: Device) -> None:
    # A worker holds its subscribers' rows for a whole batch; the foreign-key check of every
    # signal insert for them must not wait for it (one waiting row stalls its group commit).
    async with api.ctx.store.transaction() as tx:
        locked = await tx.lock_subscriptions(ids=[device.id])
        assert [sub.id for sub in locked] == [device.id]
        try:
            async with (
                asyncio.timeout(1.0),
                api.http.post(api.url + "/v1/signals", json=BERLIN, headers=device.auth()) as resp,
            ):
                assert resp.status == 202
        except TimeoutError:
            pytest.fail("POST /v1/signals waited for the worker's subscriber lock")
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 1


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("none", 401),
        ("malformed", 401),
        ("wrong", 401),
        ("admin", 403),
        ("erased", 401),
    ],
)
async def test_signal_token_matrix(
    api: LiveApi, device: Device, other_device: Device, who: str, status: int
) -> None:
    headers = {
        "none": {},
        "malformed": {"Authorization": "Token abc"},
        "wrong": {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"},
        "admin": api.admin(),
        "erased": other_device.auth(),
    }[who]
    if who == "erased":
        async with api.http.delete(
            api.url + f"/v1/subscriptions/{other_device.id}", headers=other_device.auth()
        ) as resp:
            assert resp.status == 204
    async with api.http.post(api.url + "/v1/signals", json=BERLIN, headers=headers) as resp:
        assert resp.status == status
        body = await resp.json()
    assert body["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 0


async def test_paused_subscription_gets_202_and_stores_nothing(
    api: LiveApi, device: Device
) -> None:
    async with api.http.patch(
        api.url + f"/v1/subscriptions/{device.id}", json={"paused": True}, headers=device.auth()
    ) as resp:
        assert resp.status == 200
    async with api.http.post(
        api.url + "/v1/signals", json={"signals": [BERLIN] * 3}, headers=device.auth()
    ) as resp:
        assert resp.status == 202
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 0


async def test_location_without_consent_is_403_and_stores_nothing(api: LiveApi) -> None:
    device = await register(api, timezone="Europe/Berlin", location_consent=False)
    one_then_batch: list[Any] = [BERLIN, {"signals": [BERLIN, {**BERLIN, "lat": 52.53}]}]
    for body in one_then_batch:
        async with api.http.post(api.url + "/v1/signals", json=body, headers=device.auth()) as r:
            assert r.status == 403, await r.text()
            assert_error(await r.json(), 403, "consent_required", "location_consent")
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 0

    # Consent given: the same signals are stored.
    async with api.http.patch(
        api.url + f"/v1/subscriptions/{device.id}",
        json={"location_consent": True},
        headers=device.auth(),
    ) as r:
        assert r.status == 200
    async with api.http.post(api.url + "/v1/signals", json=BERLIN, headers=device.auth()) as r:
        assert r.status == 202, await r.text()
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 1

    # Withdrawn: refused again.
    async with api.http.patch(
        api.url + f"/v1/subscriptions/{device.id}",
        json={"location_consent": False},
        headers=device.auth(),
    ) as r:
        assert r.status == 200
    async with api.http.post(api.url + "/v1/signals", json=BERLIN, headers=device.auth()) as r:
        assert r.status == 403
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 1


async def test_refused_request_does_not_hold_back_others_in_its_group_commit(
    api: LiveApi, device: Device
) -> None:
    refused = await register(api, location_consent=False)

    async def post(d: Device) -> int:
        async with api.http.post(api.url + "/v1/signals", json=BERLIN, headers=d.auth()) as r:
            return r.status

    statuses = await asyncio.gather(*(post(d) for d in [device, refused] * 10))
    assert statuses == [202, 403] * 10
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 10


async def test_rate_limit_429_with_retry_after(api_with: Any) -> None:
    api = await api_with(signal_rate_burst=5, signal_rate_per_second=0.5)
    device = await register(api)
    other = await register(api)
    statuses = []
    for _ in range(7):
        async with api.http.post(
            api.url + "/v1/signals", json=BERLIN, headers=device.auth()
        ) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                assert_error(await resp.json(), 429, "rate_limited", "slow down")
    assert statuses == [202] * 5 + [429] * 2
    # Per device: another device is not affected.
    async with api.http.post(api.url + "/v1/signals", json=BERLIN, headers=other.auth()) as r:
        assert r.status == 202
    assert (await count_rows(api.ctx.pool, "signals"))["signals"] == 6


async def test_rate_limit_is_per_api_process(api_with: Any) -> None:
    """The documented arithmetic: behind a balancer with N API processes a device gets at
    most N x SIGNAL_RATE_BURST at once (the buckets live in each process's memory)."""
    first = await api_with(signal_rate_burst=3, signal_rate_per_second=0.01)
    second = await api_with(signal_rate_burst=3, signal_rate_per_second=0.01)
    device = await register(first)

    async def statuses(api: LiveApi, n: int) -> list[int]:
        out = []
        for _ in range(n):
            async with api.http.post(
                api.url + "/v1/signals", json=BERLIN, headers=device.auth()
            ) as r:
                out.append(r.status)
        return out

    assert await statuses(first, 4) == [202, 202, 202, 429]
    assert await statuses(second, 4) == [202, 202, 202, 429]
    assert (await count_rows(first.ctx.pool, "signals"))["signals"] == 6


async def test_1000_concurrent_posts_committed_exactly_once(
    api_with: Any, database_url: str
) -> None:
    api = await api_with(signal_rate_burst=10_000)
    devices = [await register(api) for _ in range(20)]
    notified: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(SIGNALS_CHANNEL, lambda *a: notified.append(a[2]))
    try:

        async def post(i: int) -> int:
            body = {**BERLIN, "context": {"n": i}}
            async with api.http.post(
                api.url + "/v1/signals", json=body, headers=devices[i % 20].auth()
            ) as resp:
                return resp.status

        statuses = await asyncio.gather(*(post(i) for i in range(1000)))
        assert statuses == [202] * 1000
        rows = await api.ctx.pool.fetch("SELECT subscription_id, context FROM signals")
        numbers = sorted(r["context"]["n"] for r in rows)
        assert numbers == list(range(1000))  # each exactly once
        by_device = {str(r["subscription_id"]) for r in rows if r["context"]["n"] % 20 == 3}
        assert by_device == {devices[3].id}
        await asyncio.sleep(0.2)  # let the last NOTIFY arrive
    finally:
        await listener.close()
    # Group commit: far fewer commits (and NOTIFYs) than requests, at least one of each.
    assert 1 <= len(notified) < 1000


FAIL_AT_COMMIT = """
CREATE TABLE refuse_commit (flag boolean);
CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM refuse_commit) THEN
        RAISE EXCEPTION 'commit refused by test';
    END IF;
    RETURN NULL;
END $$;
-- Deferred: runs at COMMIT, after the INSERT itself succeeded.
CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON signals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit();
"""


@pytest.fixture
async def breakable(pg_server: PgServer) -> Any:
    """A database of its own, so the test may break it without touching the shared one."""
    dsn = await pg_server.create_database()
    await migrations.migrate(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    await pool.execute(FAIL_AT_COMMIT)
    try:
        yield dsn, pool
    finally:
        await pool.close()
        await pg_server.drop_database(dsn)


async def test_failed_commit_answers_503_and_stores_nothing(api_with: Any, breakable: Any) -> None:
    _, pool = breakable
    api = await api_with(pool=pool, signal_rate_burst=10_000)
    devices = [await register(api) for _ in range(5)]
    await pool.execute("INSERT INTO refuse_commit VALUES (true)")

    async def post(i: int) -> Any:
        body = {"signals": [{**BERLIN, "context": {"n": i}}] * 3}
        async with api.http.post(
            api.url + "/v1/signals", json=body, headers=devices[i % 5].auth()
        ) as resp:
            return resp.status, resp.headers.get("Retry-After"), await resp.json()

    results = await asyncio.gather(*(post(i) for i in range(50)))
    assert {r[0] for r in results} == {503}
    assert all(r[1] == "1" and r[2]["error"]["code"] == "database_unavailable" for r in results)
    assert await pool.fetchval("SELECT count(*) FROM signals") == 0

    await pool.execute("DELETE FROM refuse_commit")
    results = await asyncio.gather(*(post(i) for i in range(50)))
    assert {r[0] for r in results} == {202}
    assert await pool.fetchval("SELECT count(*) FROM signals") == 150


SLOW_COMMIT = """
CREATE TABLE slow_commit (seconds float8);
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(coalesce((SELECT max(seconds) FROM slow_commit), 0));
    RETURN NULL;
END $$;
-- Deferred: the signal is inserted, then its COMMIT takes that long.
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON signals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""


async def test_a_retry_after_a_client_timeout_is_not_stored_again(
    api_with: Any, breakable: Any
) -> None:
    # What the issue measured: the client gives up before the 202, the COMMIT goes through
    # anyway, and the client sends the signal again.
    _, pool = breakable
    await pool.execute(SLOW_COMMIT)
    api = await api_with(pool=pool, signal_rate_burst=10_000)
    device = await register(api)
    await pool.execute("INSERT INTO slow_commit VALUES (2)")
    body = {**BERLIN, "id": "slow-1"}
    with pytest.raises(TimeoutError):
        async with api.http.post(
            api.url + "/v1/signals",
            json=body,
            headers=device.auth(),
            timeout=aiohttp.ClientTimeout(total=0.5),
        ) as resp:
            await resp.read()
    async with asyncio.timeout(30):
        while await pool.fetchval("SELECT count(*) FROM signals") == 0:
            await asyncio.sleep(0.1)
    await pool.execute("DELETE FROM slow_commit")
    assert await _post_signals(api, device, body) == {"accepted": 0, "duplicates": 1}
    assert await pool.fetchval("SELECT count(*) FROM signals") == 1


async def test_database_gone_answers_503(
    api_with: Any, breakable: Any, pg_server: PgServer
) -> None:
    _, pool = breakable
    api = await api_with(pool=pool, signal_rate_burst=10_000)
    device = await register(api)
    name = await pool.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        # Refuse new connections, then cut the pool's: the database is "stopped" for the app.
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )

        async def post() -> int:
            async with api.http.post(
                api.url + "/v1/signals", json=BERLIN, headers=device.auth()
            ) as resp:
                return resp.status

        statuses = await asyncio.gather(*(post() for _ in range(20)))
        assert set(statuses) == {503}
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert await pool.fetchval("SELECT count(*) FROM signals") == 0
        # And it recovers once the database is back.
        assert await post() == 202
        assert await pool.fetchval("SELECT count(*) FROM signals") == 1
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
