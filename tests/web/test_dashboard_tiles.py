"""The dashboard's optional basemap (MOMENTCAST_MAP_TILES): the vendored Leaflet, the CSP that
allows the tile host only when it is set, and, in Chromium, tiles from a local tile server
under the page's CSP."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from service.api.pages import PAGE_CSP, VENDOR, page_csp
from service.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveApi, make_settings, start_app
from tests.web.browserkit import CHROMIUM
from tests.web.dashboard import dashboard_browser, write_rules


def png(width: int = 256, height: int = 256) -> bytes:
    """A plain light-grey PNG tile."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xdd\xe3\xea" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class TileServer:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        self.tile = png()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.Response(body=self.tile, content_type="image/png")


@pytest.fixture
async def tiles() -> AsyncIterator[TileServer]:
    server = TileServer()
    app = web.Application()
    app.router.add_get("/{z}/{x}/{y}.png", server.handle)
    runner, server.url = await start_app(app)
    yield server
    await runner.cleanup()


@pytest.fixture
async def settings(
    data_dir: Path, database_url: str, tmp_path: Path, tiles: TileServer
) -> Settings:
    return make_settings(
        data_dir,
        database_url,
        rules_dir=write_rules(tmp_path / "rules"),
        map_tiles=tiles.url + "/{z}/{x}/{y}.png",
    )


def test_the_tile_host_is_allowed_only_when_set() -> None:
    assert page_csp(None) == PAGE_CSP
    assert "img-src 'self' data:;" in PAGE_CSP
    csp = page_csp("https://{s}.tile.example.org/{z}/{x}/{y}.png")
    assert "img-src 'self' data: https://*.tile.example.org;" in csp
    assert csp.replace(" https://*.tile.example.org", "") == PAGE_CSP


async def test_dashboard_names_the_tiles_and_serves_the_vendored_leaflet(
    api: LiveApi, tiles: TileServer
) -> None:
    async with api.http.get(api.url + "/dashboard") as response:
        assert f"img-src 'self' data: {tiles.url};" in response.headers["Content-Security-Policy"]
    async with api.http.get(api.url + "/v1/dashboard", headers=api.admin()) as response:
        assert (await response.json())["map_tiles"] == tiles.url + "/{z}/{x}/{y}.png"
    for path, content_type in VENDOR.items():
        async with api.http.get(f"{api.url}/static/vendor/leaflet/{path}") as response:
            assert response.status == 200, path
            assert response.content_type == content_type
            assert len(await response.read()) > 100
    for path in ("LICENSE", "README.md", "images/x.png", "leaflet.js.map", "x.js"):
        async with api.http.get(f"{api.url}/static/vendor/leaflet/{path}") as response:
            assert response.status == 404, path
    license_text = Path(__file__).resolve().parents[2] / "service/static/vendor/leaflet/LICENSE"
    assert "BSD 2-Clause" in license_text.read_text()


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no system Chromium (Debian package `chromium`; .ci/run installs it)",
)
async def test_basemap_in_chromium_under_the_csp(api: LiveApi, tiles: TileServer) -> None:
    async with dashboard_browser() as (page, console, errors):
        await page.goto(api.url + "/dashboard")
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#load")
        await page.wait_for_function(
            "() => document.querySelectorAll('#map .leaflet-interactive.marker').length === 4",
            timeout=10_000,
        )
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#map img.leaflet-tile')]"
            ".some((t) => t.complete && t.naturalWidth > 0)",
            timeout=10_000,
        )
        assert tiles.requests
        # Markers wear their rule's colour (CSS classes, not inline styles).
        fills = await page.evaluate(
            "[...document.querySelectorAll('#map .marker')]"
            ".map((m) => [m.dataset.rule, getComputedStyle(m).fill])"
        )
        by_rule = {rule: {f for r, f in fills if r == rule} for rule, _ in fills}
        assert len(by_rule) == 2
        assert all(len(f) == 1 for f in by_rule.values())
        assert len({next(iter(f)) for f in by_rule.values()}) == 2
        # Zoom to one rule: the map fits its two places, a few hundred metres apart.
        zoom_all = await page.evaluate("document.querySelector('#map .leaflet-tile').src")
        await page.select_option("#map-select", "rule:munich-lunch")
        await page.wait_for_function(
            "() => document.querySelectorAll('#map .leaflet-interactive.marker').length === 2",
            timeout=5_000,
        )
        boxes = await page.evaluate(
            "[...document.querySelectorAll('#map .marker')].map((m) => {"
            " const b = m.getBoundingClientRect(); return [b.x, b.y]; })"
        )
        [(ax, ay), (bx, by)] = boxes
        assert ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5 > 100
        assert zoom_all != await page.evaluate("document.querySelector('#map .leaflet-tile').src")
        assert await page.evaluate("window.__violations") == []
        assert [m for m in console if "Content Security Policy" in m] == []
        assert errors == []
