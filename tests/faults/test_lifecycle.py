"""SIGTERM under load, and rules replaced by a broken set while running."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from service.testing import PushService
from tests.conftest import ADMIN_TOKEN
from tests.faults.conftest import Stack, add_browser_subscriptions, registration_body
from tests.security.logscan import Watch
from tests.worker.conftest import CAFE_A

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_sigterm_under_load_answers_in_flight_releases_claims_and_exits_cleanly(
    stack: Stack, clean_db: asyncpg.Pool, log_privacy: Watch
) -> None:
    serve = stack.start("serve", MOMENTCAST_WORKER_BATCH_SIZE="20")
    serial = itertools.count()
    answers: dict[int, object] = {}
    sigterm_at: list[float] = []
    # A fresh connection per request: a refused connect after SIGTERM is fine, a request the
    # server accepted and then dropped is not.
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:
        async with http.post(serve.url + "/v1/subscriptions", json=registration_body()) as r:
            token = (await r.json())["token"]
            log_privacy.remember(token)

        async def client() -> None:
            while True:
                n = next(serial)
                body = {
                    "signals": [
                        {"lat": CAFE_A[0], "lon": CAFE_A[1], "context": {"n": n}} for _ in range(20)
                    ]
                }
                started = time.monotonic()
                try:
                    async with http.post(
                        serve.url + "/v1/signals",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    ) as r:
                        answers[n] = r.status
                except aiohttp.ClientConnectorError:
                    return  # the listener is closed: shutdown has begun
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answers[n] = (type(exc).__name__, started)
                    if sigterm_at:
                        return

        clients = [asyncio.create_task(client()) for _ in range(16)]
        await asyncio.sleep(2.0)
        sigterm_at.append(time.monotonic())
        serve.sp.proc.send_signal(15)
        await asyncio.wait_for(asyncio.gather(*clients), 30)
    code = serve.sp.proc.wait(30)
    assert code == 0, serve.stderr()[-3000:]
    dropped = {n: a for n, a in answers.items() if not isinstance(a, int)}
    # Dropped connections only for requests that raced the close of the listener.
    assert all(a[1] >= sigterm_at[0] - 0.05 for a in dropped.values()), dropped  # type: ignore[index]
    assert len(dropped) <= 16, dropped
    accepted = {n for n, a in answers.items() if a == 202}
    assert len(accepted) > 20 and set(answers.values()) - set(dropped.values()) <= {202, 503}
    rows = await clean_db.fetch(
        "SELECT (context->>'n')::int AS n, count(*) AS c FROM signals GROUP BY 1"
    )
    stored = {r["n"]: r["c"] for r in rows}
    assert all(stored.get(n) == 20 for n in accepted), "a 202 whose signals are not stored"
    # Claimed work was released or finished: nothing waits for a lease to run out.
    held = await clean_db.fetchval(
        "SELECT count(*) FROM signals WHERE processed_at IS NULL AND claimed_until > now()"
    )
    assert held == 0
    held = await clean_db.fetchval(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND claimed_until > now()"
    )
    assert held == 0
    stack.check_logs(log_privacy.secrets)


BROKEN = {
    "bad-yaml.yaml": "priority: [1, 2\n",
    "bad-template.yaml": (
        "trigger: enter\nwhere: {places: places/cafes.geojson, radius_m: 60}\n"
        "message: {title: 'Hi {subscriber.password}', ttl: 20m}\n"
    ),
    "bad-places.yaml": "trigger: enter\nwhere: {places: places/missing.geojson}\n"
    "message: {title: x, ttl: 1m}\n",
}


async def test_broken_rules_while_running_keep_the_old_set_working(
    stack: Stack, clean_db: asyncpg.Pool, log_privacy: Watch
) -> None:
    push = await PushService(stack.keys.vapid_public_b64).start()
    try:
        serve = stack.start("serve", MOMENTCAST_RULES_POLL_INTERVAL="1")
        async with aiohttp.ClientSession() as http:
            async with http.get(serve.url + "/v1/rules", headers=ADMIN) as r:
                before = await r.json()
            assert not before["errors"]
            rule_ids = sorted(r["id"] for r in before["rules"])
            assert "coffee" in rule_ids

            for name, text in BROKEN.items():
                (stack.rules / name).write_text(text)
            (stack.rules / "policy.yaml").write_text("limits: {per_subscriber: lots}\n")
            await asyncio.sleep(2.5)  # the poller has seen the change and refused it
            async with http.post(serve.url + "/v1/rules/reload", headers=ADMIN) as r:
                assert r.status == 422
                body = await r.json()
            assert body["error"]["details"], body
            async with http.get(serve.url + "/v1/rules", headers=ADMIN) as r:
                during = await r.json()
            assert sorted(r["id"] for r in during["rules"]) == rule_ids
            assert during["errors"]
            async with http.get(serve.url + "/metrics", headers=ADMIN) as r:
                metrics = await r.text()
            errors = [
                line
                for line in metrics.splitlines()
                if line.startswith("momentcast_rules_load_errors_total ")
            ]
            assert errors and float(errors[0].split()[1]) >= 1, errors
            async with http.get(serve.url + "/readyz") as r:
                assert r.status == 200  # still serving with the old set

            # The old set still decides and sends.
            [(sid, sub)] = await add_browser_subscriptions(clean_db, push, 1)
            token = "t" * 43
            await clean_db.execute(
                "UPDATE subscriptions SET token_hash = sha256($1::bytea) WHERE id = $2",
                token.encode(),
                sid,
            )
            log_privacy.remember(token)
            async with http.post(
                serve.url + "/v1/signals",
                json={"lat": CAFE_A[0], "lon": CAFE_A[1], "accuracy_m": 5},
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                assert r.status == 202, await r.text()
            deadline = time.monotonic() + 20
            while not sub.received:
                assert time.monotonic() < deadline, "the old rule set did not send"
                await asyncio.sleep(0.2)
            assert sub.messages()[0]["notification"]["data"]["rule"] == "coffee"

            # Repaired: the next reload takes the new set.
            for name in BROKEN:
                (stack.rules / name).unlink()
            Path(stack.rules / "policy.yaml").write_text(
                "limits: {per_subscriber: 3/day, min_gap: 2m}\nstale_after: 1d\n"
            )
            async with http.post(serve.url + "/v1/rules/reload", headers=ADMIN) as r:
                assert r.status == 200, await r.text()
        assert serve.stop() == 0
        stack.check_logs(log_privacy.secrets)
    finally:
        await push.close()
