"""The dashboard in a real browser (system Chromium) under its own Content-Security-Policy:
coloured legend entries, markers for places in two cities, each city on a plan fitted to it,
zoom to one rule, every loaded rule listed without traffic, and no CSP violation.

Set DASHBOARD_SCREENSHOT=$PWD/docs/dashboard.png (an absolute path) to refresh the screenshot
of docs/dashboard.md.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveApi, make_settings
from tests.factories import insert_subscription
from tests.web.browserkit import CHROMIUM
from tests.web.conftest import delivery
from tests.web.dashboard import CITIES, dashboard_browser, write_rules

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no system Chromium (Debian package `chromium`; .ci/run installs it)",
)


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(data_dir, database_url, rules_dir=write_rules(tmp_path / "rules"))


# Per rule: the legend swatch's colour, and each marker's fill and its centre on screen.
READ_MAP = """() => {
  const out = {};
  for (const item of document.querySelectorAll("#legend .legend-item")) {
    const swatch = item.querySelector(".swatch");
    out[item.dataset.rule] = { swatch: getComputedStyle(swatch).backgroundColor, markers: [] };
  }
  for (const m of document.querySelectorAll("#map .marker")) {
    const box = m.getBoundingClientRect();
    out[m.dataset.rule].markers.push({
      fill: getComputedStyle(m).fill,
      x: box.x + box.width / 2, y: box.y + box.height / 2,
      plan: m.closest("figure").dataset.area,
    });
  }
  return out;
}"""


def spread(markers: list[dict[str, Any]]) -> float:
    [a, b] = markers
    return float(((a["x"] - b["x"]) ** 2 + (a["y"] - b["y"]) ** 2) ** 0.5)


async def some_traffic(pool: asyncpg.Pool) -> None:
    """Deliveries of berlin-coffee in the last hour; munich-lunch has none."""
    sub = await insert_subscription(pool, endpoint="http://127.0.0.1:9/push/x")
    at = datetime.now(UTC) - timedelta(hours=1)
    for place, events in [
        ("berlin-alex", ("shown", "clicked")),
        ("berlin-alex", ("shown",)),
        ("berlin-hacke", ("shown", "clicked", "converted")),
        ("berlin-hacke", ()),
    ]:
        await delivery(pool, sub, place=place, at=at, events=events, rule="berlin-coffee")


async def test_dashboard_colours_two_cities_and_zoom_to_a_rule_under_its_csp(
    api: LiveApi, clean_db: asyncpg.Pool
) -> None:
    await some_traffic(clean_db)
    async with dashboard_browser() as (page, console, errors):
        failed: list[str] = []
        page.on(
            "response",
            lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))

        response = await page.goto(api.url + "/dashboard")
        assert response is not None
        assert "style-src 'self'" in response.headers["content-security-policy"]
        # The token is entered as the page expects: typed into its field, then Load.
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#load")
        await page.wait_for_function(
            "() => document.querySelectorAll('#map .marker').length === 4", timeout=10_000
        )

        # Every loaded rule is listed, with or without traffic.
        status = await page.inner_text("#status")
        funnel = await page.inner_text("#funnel")
        for rule in CITIES:
            assert rule in status
            assert rule in funnel
        assert funnel.count("no traffic yet") == 1
        quiet = page.locator("#funnel tr.quiet")
        assert await quiet.count() == 1
        assert "munich-lunch" in await quiet.inner_text()

        drawn = await page.evaluate(READ_MAP)
        assert set(drawn) == set(CITIES)
        swatches = {rule: drawn[rule]["swatch"] for rule in CITIES}
        # Coloured, one colour per rule, and the markers wear their rule's colour.
        for rule, colour in swatches.items():
            assert colour not in ("", "transparent", "rgba(0, 0, 0, 0)"), rule
            assert len(drawn[rule]["markers"]) == 2
            assert {m["fill"] for m in drawn[rule]["markers"]} == {colour}
        assert len(set(swatches.values())) == 2
        # Two cities: each on its own plan, fitted, so its two places stay far apart.
        assert await page.locator("#map figure.plan").count() == 2
        for rule in CITIES:
            assert len({m["plan"] for m in drawn[rule]["markers"]}) == 1
            assert spread(drawn[rule]["markers"]) > 100, drawn[rule]
        plans = {rule: drawn[rule]["markers"][0]["plan"] for rule in CITIES}
        assert len(set(plans.values())) == 2
        # Zoom to one rule: only its places, on one plan fitted to them.
        before = spread(drawn["munich-lunch"]["markers"])
        await page.select_option("#map-select", "rule:munich-lunch")
        await page.wait_for_function(
            "() => document.querySelectorAll('#map .marker').length === 2", timeout=5_000
        )
        zoomed = await page.evaluate(READ_MAP)
        assert len(zoomed["berlin-coffee"]["markers"]) == 0
        assert len(zoomed["munich-lunch"]["markers"]) == 2
        assert await page.locator("#map figure.plan").count() == 1
        assert spread(zoomed["munich-lunch"]["markers"]) >= before
        # The legend zooms too, and back to all.
        await page.click('#legend .legend-item[data-rule="berlin-coffee"]')
        zoomed = await page.evaluate(READ_MAP)
        assert [len(zoomed[r]["markers"]) for r in CITIES] == [2, 0]
        await page.select_option("#map-select", "all")
        assert await page.locator("#map .marker").count() == 4

        # Per place over a period (the last 7 days by default), and its CSV as a download.
        await page.click("#pl-run")
        await page.wait_for_function(
            "() => document.querySelectorAll('#places tr').length === 3", timeout=5_000
        )
        # The map's tooltips carry the period's counts per place.
        titles = await page.locator("#map circle.reach title").all_text_contents()
        assert "Berlin Alex (berlin-coffee): 2 sent, 1 clicked, CTR 50.0 %" in titles
        assert "Munich Marien (munich-lunch)" in titles
        per_place = await page.inner_text("#places")
        assert "Berlin Alex" in per_place
        assert "Berlin Hacke" in per_place
        screenshot = os.environ.get("DASHBOARD_SCREENSHOT")
        if screenshot:
            await page.screenshot(path=screenshot, full_page=True)

        async with page.expect_download() as download_info:
            await page.click("#pl-csv")
        download = await download_info.value
        assert download.suggested_filename.startswith("momentcast-stats_")
        saved = await download.path()
        assert Path(saved).read_text().startswith("since,until,rule,place,")

        # No MOMENTCAST_MAP_TILES: nothing is fetched from anywhere else, no Leaflet either.
        assert [u for u in requested if not u.startswith(api.url + "/")] == []
        assert [u for u in requested if "/vendor/" in u] == []
        assert await page.evaluate("window.__violations") == []
        assert [m for m in console if "Content Security Policy" in m] == []
        # The browser's own favicon.ico request is the one 404 (the page names no icon).
        assert [f for f in failed if not f.endswith("/favicon.ico")] == []
        assert [m for m in console if m.startswith("error") and "404" not in m] == []
        assert errors == []
