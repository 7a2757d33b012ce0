"""The health of sending (GET /v1/stats' health, the gauge momentcast_interaction_rate, the
dashboard's warning per rule): pushes with an interaction per push sent over the last 7 days,
from stored rows and rolled-up days, test pushes and other outcomes aside."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service import maintenance
from service.metrics import REGISTRY
from service.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveApi, make_settings
from tests.factories import insert_subscription, write_rule_folder
from tests.web.browserkit import CHROMIUM
from tests.web.dashboard import dashboard_browser

POLICY = """
limits: {per_subscriber: 5/day}
stale_after: 10m
fatigue: {after: 5, rest: 14d}
"""


def rule(title: str) -> str:
    return f"priority: 1\ntrigger: signal\nmessage: {{title: {title}, ttl: 10m}}\n"


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    rules = write_rule_folder(
        tmp_path / "rules",
        policy=POLICY,
        rules={"loud.yaml": rule("Loud"), "fine.yaml": rule("Fine")},
    )
    return make_settings(data_dir, database_url, rules_dir=rules)


async def pushes(
    pool: asyncpg.Pool,
    rule_id: str,
    n: int,
    *,
    status: str = "sent",
    age: timedelta = timedelta(hours=1),
    test: bool = False,
    events: dict[str, range] | None = None,
) -> None:
    """``n`` pushes of ``rule_id`` made ``age`` ago; ``events``: the event types reported for
    the i-th of them, i in the range."""
    sub = await insert_subscription(pool)
    ids = await pool.fetch(
        "INSERT INTO deliveries (subscription_id, rule_id, variant, payload, ttl_s, status,"
        " test, created_at, decided_at, expires_at) "
        "SELECT $1, $2, 'a', '{}', 60, $3, $4, now() - $5::interval, now() - $5::interval,"
        " now() - $5::interval + interval '1 minute' FROM generate_series(1, $6) "
        "RETURNING id",
        sub,
        rule_id,
        status,
        test,
        age,
        n,
    )
    for kind, which in (events or {}).items():
        await pool.executemany(
            "INSERT INTO events (delivery_id, type) VALUES ($1, $2)",
            [(ids[i]["id"], kind) for i in which],
        )


async def traffic(pool: asyncpg.Pool) -> None:
    # loud: 500 sent in the window, 4 clicked (0.8 %): warned about.
    await pushes(pool, "loud", 500, events={"shown": range(100), "clicked": range(4)})
    # Not in the rate: failed, test pushes, and pushes older than the window.
    await pushes(pool, "loud", 20, status="failed")
    await pushes(pool, "loud", 50, test=True, events={"clicked": range(50)})
    await pushes(pool, "loud", 30, age=timedelta(days=8), events={"clicked": range(30)})
    # fine: 100 sent, 10 clicked and 5 converted of which 3 were clicked too: 12 interacted.
    await pushes(pool, "fine", 100, events={"clicked": range(10), "converted": range(7, 12)})
    # Rolled up (a DELIVERY_RETENTION shorter than the window): two days ago counts, with its
    # pushes that got an interaction (5: 3 clicked, 5 converted, some both); ten days ago
    # does not.
    today = datetime.now(UTC).date()
    await pool.executemany(
        "INSERT INTO rule_delivery_days (day, rule_id, variant, place_id, status, deliveries,"
        " clicked, converted, interacted) VALUES ($1, $2, 'a', '', $3, $4, $5, $6, $7)",
        [
            (today - timedelta(days=2), "fine", "sent", 40, 3, 5, 5),
            (today - timedelta(days=2), "fine", "failed", 9, 0, 0, 0),
            (today - timedelta(days=10), "fine", "sent", 70, 0, 0, 0),
        ],
    )


EXPECTED_RULES = [
    {
        "rule": "fine",
        "sent": 140,
        "interacted": 17,
        "interaction_rate": round(17 / 140, 4),
        "low_engagement": False,
    },
    {
        "rule": "loud",
        "sent": 500,
        "interacted": 4,
        "interaction_rate": 0.008,
        "low_engagement": True,
    },
]


async def resting(pool: asyncpg.Pool) -> None:
    """One subscriber resting now, one whose rest is over."""
    for ends_in in (timedelta(days=3), -timedelta(days=1)):
        sub = await insert_subscription(pool)
        await pool.execute(
            "INSERT INTO push_fatigue (subscription_id, resting_since, resting_until) "
            "VALUES ($1, now() - interval '11 days', now() + $2::interval)",
            sub,
            ends_in,
        )


async def get_json(api: LiveApi, path: str) -> Any:
    async with api.http.get(api.url + path, headers=api.admin()) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_stats_health_counts_sent_pushes_with_an_interaction(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    await traffic(clean_db)
    await resting(clean_db)
    health = (await get_json(api, "/v1/stats"))["health"]
    assert health == {
        "window_days": 7,
        "sent": 640,
        "interacted": 21,
        "interaction_rate": round(21 / 640, 4),
        "resting_subscribers": 1,
        "rules": EXPECTED_RULES,
    }
    dashboard = await get_json(api, "/v1/dashboard")
    assert dashboard["stats"]["health"] == health


async def test_nothing_sent_is_a_rate_of_zero_and_no_guard_rests_nobody(
    api: LiveApi, clean_db: asyncpg.Pool, tmp_path: Path
) -> None:
    await resting(clean_db)
    health = (await get_json(api, "/v1/stats"))["health"]
    assert (health["sent"], health["interaction_rate"], health["rules"]) == (0, 0.0, [])
    assert health["resting_subscribers"] == 1
    # The same rows while the policy has no fatigue guard: nobody rests.
    (api.ctx.settings.rules_dir / "policy.yaml").write_text("limits: {}\n")
    api.ctx.rules.reload()
    assert api.ctx.rules.current.policy.fatigue is None
    health = (await get_json(api, "/v1/stats"))["health"]
    assert health["resting_subscribers"] == 0


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_the_gauge_is_refreshed_by_maintenance(api: LiveApi, clean_db: asyncpg.Pool) -> None:
    assert await maintenance.refresh_health(api.ctx) == 0.0
    assert gauge("momentcast_interaction_rate") == 0.0
    assert gauge("momentcast_interaction_sent_pushes") == 0.0
    await traffic(clean_db)
    assert await maintenance.refresh_health(api.ctx) == round(21 / 640, 4)
    assert gauge("momentcast_interaction_rate") == round(21 / 640, 4)
    assert gauge("momentcast_interaction_sent_pushes") == 640


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no system Chromium (Debian package `chromium`; .ci/run installs it)",
)
async def test_the_dashboard_shows_health_and_warns_about_a_rule_nobody_opens(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    await traffic(clean_db)
    await resting(clean_db)
    async with dashboard_browser() as (page, console, errors):
        await page.goto(api.url + "/dashboard")
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#load")
        await page.wait_for_function(
            "() => document.querySelectorAll('#health table tr').length === 3", timeout=10_000
        )
        text = await page.inner_text("#health")
        assert "640 pushes sent in the last 7 days, 21 clicked or converted" in text
        assert "interaction rate 3.3 %" in text
        assert "1 subscriber resting" in text
        warnings = page.locator("#health .low-engagement")
        assert await warnings.count() == 1
        assert await warnings.get_attribute("data-rule") == "loud"
        assert "loud sent 500 pushes in 7 days" in await warnings.inner_text()
        assert await page.evaluate("window.__violations") == []
        assert errors == []
        assert [m for m in console if m.startswith("error") and "404" not in m] == []
