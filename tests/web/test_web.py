"""The pages and scripts the service serves, and GET /v1/dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.reload.holder import RulesHolder
from service.testing import PushService
from service.worker import Worker
from tests.conftest import REPO, LiveApi
from tests.web.conftest import pipeline


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/momentcast.js", "text/javascript", b"Momentcast"),
        ("/sw.js", "text/javascript", b"notificationclick"),
        ("/", "text/html", b"/momentcast.js"),
        ("/dashboard", "text/html", b"/static/dashboard.js"),
        ("/static/momentcast.css", "text/css", b":root"),
        ("/static/dashboard.js", "text/javascript", b"/v1/dashboard"),
        ("/static/demo.js", "text/javascript", b"/v1/simulate"),
    ],
)
async def test_assets_are_served(api: LiveApi, path: str, content_type: str, marker: bytes) -> None:
    async with api.http.get(api.url + path) as r:
        assert r.status == 200
        assert r.content_type == content_type
        assert marker in await r.read()
        if content_type == "text/html":
            # No inline script, no third-party origin: the CSP would block both.
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]


async def test_page_sources_reference_nothing_external() -> None:
    static = REPO / "service" / "static"
    # Files of the package's own (vendor/ holds the unchanged Leaflet, loaded only with tiles).
    for path in (p for p in static.iterdir() if p.is_file()):
        text = path.read_text()
        for needle in ("<script>", "cdn.", "tile.", "googleapis", "unpkg", "jsdelivr"):
            assert needle not in text, (path.name, needle)


@pytest.mark.parametrize(
    "path", ["/static/sw.js", "/static/../pyproject.toml", "/static/nope.js", "/static/index.html"]
)
async def test_only_listed_assets(api: LiveApi, path: str) -> None:
    async with api.http.get(api.url + path) as r:
        assert r.status == 404


async def test_sw_is_never_cached_stale(api: LiveApi) -> None:
    async with api.http.get(api.url + "/sw.js") as r:
        assert r.headers["Cache-Control"] == "no-cache"


async def test_dashboard_data(api: LiveApi, push_service: PushService) -> None:
    async with api.http.get(api.url + "/v1/dashboard") as r:
        assert r.status == 401
    await pipeline(api, push_service, n=3, gone=0)
    async with api.http.get(api.url + "/v1/dashboard", headers=api.admin()) as r:
        assert r.status == 200
        data = await r.json()
    assert data["status"] == "ok" and data["errors"] == []
    [rule] = data["rules"]
    assert rule["id"] == "promo"
    ids = [f["properties"]["id"] for f in rule["places"]["features"]]
    assert ids == ["cafe-a", "cafe-b", "cafe-c"]
    assert rule["places"]["features"][0]["properties"]["radius_m"] == 60
    hours = {h["hour"]: h["decisions"] for h in rule["decisions_by_hour"]}
    assert len(hours) == 24
    expected = await api.ctx.pool.fetch(
        "SELECT local_hour, count(*) AS n FROM deliveries GROUP BY 1"
    )
    assert sum(hours.values()) == 3
    assert {r["local_hour"]: r["n"] for r in expected} == {h: n for h, n in hours.items() if n}
    assert data["stats"]["rules"][0]["rule"] == "promo"


async def test_dashboard_shows_load_errors(api: LiveApi) -> None:
    rules_dir: Path = api.ctx.settings.rules_dir
    (rules_dir / "broken.yaml").write_text("trigger: sometimes\n")
    await Worker(api.ctx).drain()
    async with api.http.post(api.url + "/v1/rules/reload", headers=api.admin()) as r:
        assert r.status == 422
    async with api.http.get(api.url + "/v1/dashboard", headers=api.admin()) as r:
        data = await r.json()
    assert data["status"] == "errors"
    assert any("broken.yaml" in e for e in data["errors"])
    assert [r["id"] for r in data["rules"]] == ["promo"], "the old set stays active"


def test_polygon_places_round_trip_to_their_geojson() -> None:
    holder = RulesHolder(REPO / "rules")
    ruleset = holder.current
    assert ruleset is not None
    landmarks = json.loads((REPO / "rules/places/landmarks.geojson").read_text())
    original = {f["properties"]["id"]: f["geometry"] for f in landmarks["features"]}
    own_radius = {
        f["properties"]["id"]: f["properties"].get("radius_m") for f in landmarks["features"]
    }
    [rule] = [r for r in ruleset.rules if r.id == "know-landmark"]
    features = ruleset.places_geojson(rule)["features"]
    assert len(features) == len(original)
    for f in features:
        want = original[f["properties"]["id"]]
        assert f["geometry"]["type"] == want["type"]
        if want["type"] == "Point":
            assert f["geometry"]["coordinates"] == pytest.approx(want["coordinates"])
            # The feature's own radius_m wins over the rule's 30 m.
            assert f["properties"]["radius_m"] == (own_radius[f["properties"]["id"]] or 30)
            continue
        got_ring = f["geometry"]["coordinates"][0]
        want_ring = want["coordinates"][0]
        assert len(got_ring) == len(want_ring)
        for a, b in zip(got_ring, want_ring, strict=True):
            assert a == pytest.approx(b, abs=1e-9)
