"""The dashboard's first hour (issue 22 item 7), in the system Chromium: subscriber and
audience counts, recent subscribers (the demo page's own device first) as test recipients
instead of a raw id typed into window.prompt, the next steps on an empty database, no empty
funnel row per rule, and no overlapping place labels on a dense map."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from service.settings import Settings
from tests.api.conftest import Device, register
from tests.conftest import ADMIN_TOKEN, LiveApi, make_settings
from tests.web.dashboard import dashboard_browser, write_rules

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(),
    reason="no system Chromium (Debian package `chromium`; .ci/run installs it)",
)

RECENT_FIELDS = {
    "id",
    "created_at",
    "last_seen_at",
    "push_service",
    "locale",
    "topics",
    "location_consent",
}


@pytest.fixture
def rules(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The rules folder: two rules in two cities, or (parametrized) none or a dense street."""
    kind = getattr(request, "param", "cities")
    if kind == "none":
        return tmp_path / "no-rules"
    if kind == "dense":
        return dense_street(tmp_path / "dense")
    return write_rules(tmp_path / "rules")


@pytest.fixture
def settings(data_dir: Path, database_url: str, rules: Path) -> Settings:
    return make_settings(data_dir, database_url, rules_dir=rules)


async def some_subscribers(api: LiveApi, pool: asyncpg.Pool) -> dict[str, Device]:
    """Two active (one sharing its location), one paused, one gone; registered in this order."""
    devices = {
        "gone": await register(api, locale="en-US"),
        "paused": await register(api, locale="fr-FR"),
        "nolocation": await register(api, location_consent=False, topics=["news"]),
        "phone": await register(api, locale="de-DE", topics=["food", "coffee"]),
    }
    async with api.http.patch(
        api.url + f"/v1/subscriptions/{devices['paused'].id}",
        json={"paused": True},
        headers=devices["paused"].auth(),
    ) as r:
        assert r.status == 200, await r.text()
    # What the sender does when the push service answers 410.
    await pool.execute(
        "UPDATE subscriptions SET status = 'gone' WHERE id = $1", uuid.UUID(devices["gone"].id)
    )
    return devices


async def test_recent_subscriptions_are_active_newest_first_without_endpoint_or_token(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    devices = await some_subscribers(api, clean_db)
    async with api.http.get(api.url + "/v1/subscriptions", headers=api.admin()) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    listed = json.loads(text)["subscriptions"]
    # Only those a test push can reach (a paused or gone one is refused), newest first.
    assert [s["id"] for s in listed] == [devices["phone"].id, devices["nolocation"].id]
    assert all(set(s) == RECENT_FIELDS for s in listed)
    phone = listed[0]
    assert phone["locale"] == "de-DE"
    assert phone["topics"] == ["coffee", "food"] or phone["topics"] == ["food", "coffee"]
    assert phone["location_consent"] is True
    assert listed[1]["location_consent"] is False
    assert phone["push_service"] == "other"  # a loopback push service is none of the big ones
    # Nothing that identifies or reaches the device: no endpoint, keys, token or position.
    for device in devices.values():
        assert device.subscription["endpoint"] not in text
        assert device.subscription["keys"]["auth"] not in text
        assert device.token not in text
    for word in ("endpoint", "127.0.0.1", "p256dh", "token", "lat", "lon"):
        assert word not in text
    async with api.http.get(api.url + "/v1/subscriptions?limit=1", headers=api.admin()) as r:
        assert [s["id"] for s in (await r.json())["subscriptions"]] == [devices["phone"].id]
    async with api.http.get(api.url + "/v1/subscriptions?limit=0", headers=api.admin()) as r:
        assert r.status == 422
    # Admin only: a device token opens nothing here.
    async with api.http.get(api.url + "/v1/subscriptions", headers=devices["phone"].auth()) as r:
        assert r.status == 401


def demo_device(device: Device, url: str) -> str:
    """What the demo page's SDK leaves in localStorage once this browser subscribed."""
    stored = {"server": url, "id": device.id, "token": device.token, "profile": {}}
    return f"localStorage.setItem('momentcast.registration', {json.dumps(json.dumps(stored))});"


# Every window.prompt the page opens: it must open none.
RECORD_PROMPTS = """
window.__prompts = [];
window.prompt = (text) => { window.__prompts.push(String(text)); return null; };
"""


async def test_counts_and_test_recipient_picker_with_the_demo_device_first(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    devices = await some_subscribers(api, clean_db)
    # The demo page's device in this browser: an older one, so it is not first by recency.
    demo = await register(api, locale="it-IT")
    await clean_db.execute(
        "UPDATE subscriptions SET created_at = now() - interval '3 days' WHERE id = $1",
        uuid.UUID(demo.id),
    )
    async with dashboard_browser() as (page, _console, errors):
        await page.add_init_script(RECORD_PROMPTS)
        await page.goto(api.url + "/")  # the demo page's origin is the dashboard's
        await page.evaluate(demo_device(demo, api.url))
        await page.goto(api.url + "/dashboard")
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#load")
        await page.wait_for_function(
            "() => document.querySelectorAll('#test-recipient option[value]').length >= 3",
            timeout=10_000,
        )
        counts = await page.inner_text("#counts")
        # active: phone, nolocation and the demo device; the audience of place rules is
        # those of them sharing their location (the paused one's consent does not reach).
        assert "3 active" in counts, counts
        assert "1 paused" in counts, counts
        assert "1 gone" in counts, counts
        assert "2 share their location" in counts, counts

        options = await page.eval_on_selector_all(
            "#test-recipient option",
            "os => os.map(o => ({value: o.value, text: o.textContent, disabled: o.disabled}))",
        )
        values = [o["value"] for o in options if o["value"] and not o["disabled"]]
        # The demo page's device first, then the others newest first, each once; then
        # the way to type another id.
        assert values[:3] == [demo.id, devices["phone"].id, devices["nolocation"].id], options
        assert values[3:] == ["other"], options
        assert "this browser" in options[0]["text"]
        labels = {o["value"]: o["text"] for o in options}
        assert "de-DE" in labels[devices["phone"].id]
        assert "food" in labels[devices["phone"].id]
        for device in devices.values():
            assert device.subscription["endpoint"] not in json.dumps(options)

        # Send a test of berlin-coffee to the phone: no prompt, a queued test delivery.
        await page.select_option("#test-recipient", devices["phone"].id)
        await page.click('button.send-test[data-rule="berlin-coffee"]')
        await page.wait_for_function(
            "() => /queued/.test(document.getElementById('state').textContent)", timeout=10_000
        )
        row = await clean_db.fetchrow("SELECT subscription_id, rule_id, test FROM deliveries")
        assert row is not None
        assert (str(row["subscription_id"]), row["rule_id"], row["test"]) == (
            devices["phone"].id,
            "berlin-coffee",
            True,
        )
        # Another id, typed into the page's own field.
        await page.select_option("#test-recipient", "other")
        await page.fill("#test-other", devices["nolocation"].id)
        await page.click('button.send-test[data-rule="munich-lunch"]')
        await page.wait_for_function(
            "() => /munich-lunch queued/.test(document.getElementById('state').textContent)",
            timeout=10_000,
        )
        assert await page.evaluate("window.__prompts") == []
        assert await page.evaluate("window.__violations") == []
        assert errors == []


async def counters(pool: asyncpg.Pool, rows: list[tuple[str, str, str, int]]) -> None:
    await pool.executemany(
        "INSERT INTO rule_counters (rule_id, variant, counter, n) VALUES ($1, $2, $3, $4)", rows
    )


async def test_funnel_has_no_empty_row_per_rule_and_keeps_real_data(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    # The worker's counters: matches per variant; not_matched per rule on variant "";
    # a suppression of a rule that no longer exists, on variant "" too.
    await counters(
        clean_db,
        [
            ("berlin-coffee", "default", "matched", 3),
            ("berlin-coffee", "", "not_matched:daypart", 5),
            ("munich-lunch", "", "not_matched:topics", 2),
            ("old-rule", "", "suppressed:min_gap", 4),
        ],
    )
    async with dashboard_browser() as (page, _console, errors):
        await page.goto(api.url + "/dashboard")
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#load")
        await page.wait_for_function(
            "() => document.querySelectorAll('#funnel tr').length > 1", timeout=10_000
        )
        rows = await page.eval_on_selector_all(
            "#funnel tr", "rs => rs.slice(1).map(r => [...r.cells].map(c => c.textContent))"
        )
        by_rule: dict[str, list[list[str]]] = {}
        for cells in rows:
            by_rule.setdefault(cells[0], []).append(cells)
        # berlin-coffee: its variant's row only, no row of dashes and zeros.
        assert [r[1] for r in by_rule["berlin-coffee"]] == ["default"], rows
        assert by_rule["berlin-coffee"][0][2] == "3"
        # munich-lunch matched nothing: one quiet row that says why-not has its signals.
        [quiet] = by_rule["munich-lunch"]
        assert "nothing matched yet" in quiet[1], quiet
        assert "2 signals" in quiet[1], quiet
        # Real data on variant "" stays: the removed rule's suppressions.
        [old] = by_rule["old-rule"]
        assert old[1] == "–"
        why_not = await page.inner_text("#whynot")
        assert "daypart" in why_not
        assert "topics" in why_not
        assert "min_gap" in await page.inner_text("#suppressed")
        assert errors == []


@pytest.mark.parametrize("rules", ["none"], indirect=True)
async def test_next_steps_on_an_empty_database_without_rules(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    async with dashboard_browser() as (page, _console, errors):
        await page.goto(api.url + "/dashboard")
        # Before the token: nothing is shown yet.
        assert await page.locator("#next-steps").is_hidden()
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#load")
        await page.wait_for_selector("#next-steps", state="visible", timeout=10_000)
        steps = await page.inner_text("#next-steps")
        assert "momentcast rules init" in steps
        assert "docs/rules.md" in steps
        assert "docs/campaigns.md" in steps
        assert "momentcast campaign send" in steps
        assert "docs/clients.md" in steps
        assert "0 active" in await page.inner_text("#counts")
        # No test recipient yet: the picker says where subscribers come from.
        assert "no subscriber yet" in (await page.text_content("#test-recipient") or "")
        assert errors == []


DENSE_RULE = """
description: Coffee shops along one street
priority: 1
trigger: enter
where: {places: places/street.geojson, radius_m: 20}
message: {title: "Coffee at {place.name}", ttl: 20m}
"""


def dense_street(root: Path) -> Path:
    (root / "places").mkdir(parents=True)
    (root / "policy.yaml").write_text("limits: {per_subscriber: 5/day, min_gap: 1h}\n")
    # Twelve shops 25 m apart: their names cannot all be written side by side.
    features = [
        {
            "type": "Feature",
            "properties": {"id": f"shop-{i}", "name": f"Coffee Shop Number {i}"},
            "geometry": {"type": "Point", "coordinates": [13.4000 + i * 0.00037, 52.5200]},
        }
        for i in range(12)
    ]
    (root / "places" / "street.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    (root / "street.yaml").write_text(DENSE_RULE)
    return root


OVERLAPS = """() => {
  const shown = [...document.querySelectorAll('#map text.label')]
    .filter((t) => getComputedStyle(t).display !== 'none')
    .map((t) => t.getBoundingClientRect());
  let n = 0;
  for (let i = 0; i < shown.length; i++) for (let j = i + 1; j < shown.length; j++) {
    const a = shown[i], b = shown[j];
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) n++;
  }
  return { shown: shown.length, overlaps: n,
           all: document.querySelectorAll('#map text.label').length };
}"""


@pytest.mark.parametrize("rules", ["dense"], indirect=True)
async def test_labels_of_a_dense_map_do_not_overlap_and_show_on_hover(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    async with dashboard_browser() as (page, _console, errors):
        await page.goto(api.url + "/dashboard")
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#load")
        await page.wait_for_function(
            "() => document.querySelectorAll('#map .marker').length === 12", timeout=10_000
        )
        drawn = await page.evaluate(OVERLAPS)
        assert drawn["all"] == 12
        assert drawn["overlaps"] == 0, drawn
        assert 1 <= drawn["shown"] < 12, drawn
        # A hidden label shows while its marker is hovered.
        hidden = page.locator("#map .pin:has(text.label.crowded)").first
        label = hidden.locator("text.label")
        assert not await label.is_visible()
        await hidden.locator(".marker").hover()
        assert await label.is_visible()
        assert errors == []
