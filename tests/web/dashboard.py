"""Helpers of the dashboard's browser tests: rules in two cities, and a Chromium page that
records console lines, uncaught errors and CSP violations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.factories import place, write_rule_folder
from tests.web.browserkit import CHROMIUM, CHROMIUM_ARGS, async_api
from tests.web.conftest import POLICY

RULE = """
description: {description}
priority: {priority}
trigger: enter
where: {{places: places/{file}.geojson, radius_m: 80}}
message:
  title: "Hello from {{place.name}}"
  body: "{{place.name}} is {{distance_m}} m away"
  url: "https://example.com/{{place.id}}"
  ttl: 20m
"""


# Two cities 500 km apart, two places each, about 1 km apart within a city.
CITIES = {
    "berlin-coffee": ("berlin", [("alex", 52.5219, 13.4132), ("hacke", 52.5246, 13.4020)]),
    "munich-lunch": ("munich", [("marien", 48.1374, 11.5755), ("viktu", 48.1351, 11.5762)]),
}


def write_rules(root: Path) -> Path:
    return write_rule_folder(
        root,
        policy=POLICY,
        rules={
            f"{rule}.yaml": RULE.format(
                description=f"{city.title()} places", priority=priority, file=city
            )
            for priority, (rule, (city, _)) in enumerate(CITIES.items(), start=1)
        },
        places={
            city: [
                place(f"{city}-{pid}", lat, lon, name=f"{city.title()} {pid.title()}")
                for pid, lat, lon in places
            ]
            for city, places in CITIES.values()
        },
    )


# Registered before the page's own scripts: every CSP violation the page causes.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}`);
});
"""


@asynccontextmanager
async def dashboard_browser() -> AsyncIterator[tuple[async_api.Page, list[str], list[str]]]:
    """A 1280x900 page in the system Chromium that records its console lines, its uncaught
    errors and (in ``window.__violations``) every CSP violation; the browser is closed after."""
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            console: list[str] = []
            errors: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.add_init_script(RECORD_VIOLATIONS)
            yield page, console, errors
        finally:
            await browser.close()
