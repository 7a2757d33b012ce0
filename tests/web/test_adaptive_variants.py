"""Adaptive rule variants over the real pipeline: API -> worker -> sender -> the strict push
service that decrypts like a browser; clicks through the pushes' own click links; then the
allocation moves toward the clicked variant, keeping min_share, while a fixed rule's subscriber
keeps their variant. The counts are read once per worker batch (queries logged on the
connection), and /v1/stats shows share and prob_best."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import numpy as np
import pytest

from service.context import Context
from service.push import Sender
from service.reload.holder import RulesHolder
from service.rules.engine import rule_variant
from service.settings import Settings
from service.store import Store
from service.store.db import connect, q
from service.testing import BrowserSubscription, PushService
from service.worker import Worker
from tests.conftest import LiveApi, make_settings
from tests.factories import insert_delivery, insert_subscription, subscribe, write_rule_folder

POLICY = "limits: {}\nstale_after: 1d\nhysteresis_m: 30\n"

OFFER = """
trigger: signal
who: {context: {kind: offer}}
message: {title: "Offer A", url: "https://example.com/offer"}
variants:
  - {name: a, weight: 50}
  - {name: b, weight: 50, message: {title: "Offer B"}}
allocation: adaptive
min_share: 0.1
"""

TIP = """
trigger: signal
who: {context: {kind: tip}}
message: {title: "Tip A", url: "https://example.com/tip"}
variants:
  - {name: a, weight: 50}
  - {name: b, weight: 50, message: {title: "Tip B"}}
"""


def rules_folder(root: Path, *, adaptive: bool = True) -> Path:
    rules = {"tip.yaml": TIP} | ({"offer.yaml": OFFER} if adaptive else {})
    return write_rule_folder(root, policy=POLICY, rules=rules, places={})


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    # Two subscribers a batch: a run is many batches, each reading the counts anew.
    return make_settings(
        data_dir,
        database_url,
        rules_dir=rules_folder(tmp_path / "rules"),
        worker_batch_size=2,
    )


@pytest.fixture
async def push_service(ctx: Context) -> AsyncIterator[PushService]:
    service = await PushService(ctx.keys.vapid_public_b64).start()
    yield service
    await service.close()


def worker(ctx: Context, seed: int, **kw: Any) -> Worker:
    kw.setdefault("posterior_refresh", timedelta(0))  # read the counts in every batch
    return Worker(ctx, rng=np.random.default_rng(seed), **kw)


async def deliver(ctx: Context, seed: int) -> None:
    await worker(ctx, seed).drain()
    async with Sender(ctx) as sender:
        while await sender.run_once():
            pass


async def send_signals(api: LiveApi, token: str, kinds: list[str], ago: timedelta) -> None:
    """Signals of ``kinds``, a second apart from ``ago`` before now on."""
    start = datetime.now(UTC) - ago
    signals = [
        {"at": (start + timedelta(seconds=i)).isoformat(), "context": {"kind": k}}
        for i, k in enumerate(kinds)
    ]
    async with api.http.post(
        f"{api.url}/v1/signals",
        json={"signals": signals},
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        assert r.status == 202, await r.text()


def pushes(sub: BrowserSubscription, seen: int) -> list[dict[str, Any]]:
    """The notifications ``sub`` received after its first ``seen``, as decrypted."""
    return [m["notification"] for m in sub.messages()[seen:]]


async def click(api: LiveApi, notification: dict[str, Any]) -> None:
    """Open the notification as a browser without a service worker does: its navigate link."""
    link = urlsplit(notification["navigate"])
    async with api.http.get(f"{api.url}{link.path}?{link.query}", allow_redirects=False) as r:
        assert r.status == 302, await r.text()


async def test_adaptive_allocation_moves_to_the_clicked_variant_and_keeps_min_share(
    api: LiveApi, push_service: PushService
) -> None:
    ctx = api.ctx
    subs: list[tuple[str, BrowserSubscription, str]] = []
    for _ in range(40):
        browser = push_service.subscribe()
        reg = await subscribe(api, browser, location_consent=None)
        subs.append((reg.id, browser, reg.token))
    # Round 1: one offer each, no history: the posteriors are equal, either variant goes.
    for _, _, token in subs:
        await send_signals(api, token, ["offer"], timedelta(minutes=20))
    await deliver(ctx, seed=1)
    first = Counter[str]()
    for _, browser, _ in subs:
        [n] = pushes(browser, 0)
        variant = n["data"]["variant"]
        assert n["title"] == {"a": "Offer A", "b": "Offer B"}[variant]
        first[variant] += 1
        if variant == "b":  # every b push is clicked, no a push is
            await click(api, n)
    assert first["a"] >= 5 and first["b"] >= 5, first
    # Round 2: eight offers and two tips each. The offers now go mostly to b; a keeps its floor.
    for _, _, token in subs:
        await send_signals(api, token, ["offer", "tip"] * 2 + ["offer"] * 6, timedelta(minutes=10))
    await deliver(ctx, seed=2)
    offers = Counter[str]()
    tips: dict[str, set[str]] = {}
    for sid, browser, _ in subs:
        for n in pushes(browser, 1):
            variant = n["data"]["variant"]
            if n["data"]["rule"] == "offer":
                assert n["title"] == {"a": "Offer A", "b": "Offer B"}[variant]
                offers[variant] += 1
            else:
                tips.setdefault(sid, set()).add(variant)
    total = offers.total()
    assert total == 40 * 8
    # Expected: b 0.9 (all greedy draws and half the exploring ones), a 0.1 (min_share).
    assert offers["b"] / total > 0.75, offers
    assert offers["a"] / total >= 0.1 - 0.05, offers
    # The fixed rule: every subscriber got their own variant, both times, as the hash says.
    tip = ctx.rules.current.rule_by_id["tip"]
    assert tips == {sid: {rule_variant(sid, tip).name} for sid, _, _ in subs}
    # The matched counters follow the drawn variants.
    matched = {
        r["variant"]: r["n"]
        for r in await ctx.pool.fetch(
            "SELECT variant, n FROM rule_counters WHERE rule_id = 'offer' AND counter = 'matched'"
        )
    }
    assert matched == {v: first[v] + offers[v] for v in ("a", "b")}
    # /v1/stats: share is the allocation's expected share, prob_best from the same counts.
    async with api.http.get(f"{api.url}/v1/stats", headers=api.admin()) as r:
        assert r.status == 200
        body = await r.json()
    rows = {(x["rule"], x["variant"]): x for x in body["rules"]}
    a, b = rows[("offer", "a")], rows[("offer", "b")]
    # (b's clicks were all in round 1: over both rounds b still interacts more than a's none.)
    assert b["prob_best"] > 0.9 and a["prob_best"] + b["prob_best"] == pytest.approx(1.0, abs=1e-3)
    assert a["share"] + b["share"] == pytest.approx(1.0, abs=1e-3)
    assert a["share"] >= 0.1 and b["share"] > 0.85
    # The floor, and the rest by the probability of being best.
    assert a["share"] == pytest.approx(0.1 + 0.8 * a["prob_best"], abs=1e-3)
    assert a["allocation"] == b["allocation"] == "adaptive"
    # A fixed rule: its share is its weight's, its prob_best from its counts (no clicks: even).
    ta, tb = rows[("tip", "a")], rows[("tip", "b")]
    assert (ta["share"], tb["share"], ta["allocation"]) == (0.5, 0.5, "fixed")
    assert ta["prob_best"] + tb["prob_best"] == pytest.approx(1.0, abs=1e-3)


async def insert_offers(pool: asyncpg.Pool, n: int) -> None:
    for _ in range(n):
        sid = await insert_subscription(pool)
        await pool.execute(
            "INSERT INTO signals (subscription_id, at, context) VALUES ($1, now(), $2)",
            sid,
            {"kind": "offer"},
        )


async def logged_worker_run(
    ctx: Context, database_url: str, **kw: Any
) -> tuple[int, int, Counter[str]]:
    """A worker drain on one connection whose every statement is logged: the signals
    processed, the count queries run, and the statements run."""
    conn = await connect(database_url)
    ran: Counter[str] = Counter()
    conn.add_query_logger(lambda logged: ran.update([logged.query]))
    try:
        one = dataclasses.replace(ctx, store=Store(conn, dsn=database_url))
        processed = await worker(one, 3, **kw).drain()
    finally:
        await conn.close()
    return processed, ran[q("variant_counts")], ran


async def test_the_counts_are_read_once_per_batch(
    ctx: Context, clean_db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # Six subscribers, two a batch: three batches that decide, whatever the signals.
    await insert_offers(clean_db, 6)
    processed, reads, ran = await logged_worker_run(ctx, database_url)
    assert processed == 6
    assert reads == 3
    assert ran[q("batch_of")] == 3  # the batch loads: one count query each
    # Within posterior_refresh of the last read (the worker's clock stands still): one read.
    await insert_offers(clean_db, 6)
    at = datetime.now(UTC)
    processed, reads, _ = await logged_worker_run(
        ctx, database_url, clock=lambda: at, posterior_refresh=timedelta(seconds=30)
    )
    assert (processed, reads) == (6, 1)
    # No adaptive rule: nothing is read.
    await insert_offers(clean_db, 2)
    plain = dataclasses.replace(
        ctx, rules=RulesHolder(rules_folder(tmp_path / "plain", adaptive=False))
    )
    processed, reads, _ = await logged_worker_run(plain, database_url)
    assert (processed, reads) == (2, 0)


async def test_counts_cover_30_days_rolled_up_ones_and_only_sent_pushes(
    ctx: Context, clean_db: asyncpg.Pool
) -> None:
    pool = clean_db
    sid = await insert_subscription(pool)
    now = datetime.now(UTC)

    async def push(variant: str, *, days: float, events: tuple[str, ...] = (), **kw: Any) -> None:
        at = now - timedelta(days=days)
        await insert_delivery(
            pool,
            sid,
            rule_id="offer",
            variant=variant,
            status=kw.pop("status", "sent"),
            decided_at=at,
            created_at=at,
            events=events,
            **kw,
        )

    await push("a", days=1, events=("shown", "clicked", "converted"))  # one interaction
    await push("a", days=2, events=("converted",))
    await push("a", days=3, events=("shown", "dismissed"))  # shown is no interaction
    await push("a", days=29)
    await push("a", days=31, events=("clicked",))  # older than the window
    await push("a", days=1, status="failed")  # never reached the device
    await push("a", days=1, test=True, events=("clicked",))  # a test push
    await push("b", days=5, events=("clicked",))
    # Rolled-up days (a DELIVERY_RETENTION shorter than 30 days): 10 sent, 4 of them
    # interacted; 99 of a day before the window.
    await pool.executemany(
        "INSERT INTO rule_delivery_days (day, rule_id, variant, place_id, status, deliveries,"
        " clicked, converted, interacted) VALUES ($1, 'offer', 'b', '', $2, $3, $4, $5, $6)",
        [
            ((now - timedelta(days=20)).date(), "sent", 10, 3, 2, 4),
            ((now - timedelta(days=20)).date(), "failed", 7, 0, 0, 0),
            ((now - timedelta(days=40)).date(), "sent", 99, 50, 0, 50),
        ],
    )
    rows = await ctx.store.variant_counts(rule_ids=["offer"], since=now - timedelta(days=30))
    assert [(r.variant, r.sent, r.interacted) for r in rows] == [("a", 4, 2), ("b", 11, 5)]
    assert await ctx.store.variant_counts(rule_ids=["tip"], since=now - timedelta(days=30)) == []
