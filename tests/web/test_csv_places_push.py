"""Places from a spreadsheet end to end: a CSV of New York coffee shops, a located signal
through the public API and the worker, and the strict push service decrypting a push that
names the shop; re-sorting the sheet keeps each shop's id, and with it its cooldown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from service.testing import PushService
from tests.conftest import LiveApi, make_settings
from tests.web.conftest import deliver, notification, send, subscriber

SHOPS = """\
id,name,lat,lon,radius_m,neighborhood
soho,Soho Roasters,40.7233,-74.0030,60,SoHo
chelsea,Chelsea Beans,40.7465,-74.0014,,Chelsea
williamsburg,Williamsburg Brew,40.7081,-73.9571,80,Williamsburg
midtown,Midtown Espresso,40.7549,-73.9840,,Midtown
"""

COFFEE = """\
description: A coffee at the shop the subscriber walks into
trigger: enter
where: {places: places/shops.csv, radius_m: 50}
message:
  title: "Coffee at {place.name}"
  body: "{place.name} in {place.neighborhood}: your second cup is on us"
  url: "https://example.com/shops/{place.id}"
  ttl: 20m
limits: {per_place: 1/day}
"""

# Central Park: kilometres from every shop.
PARK = {"lat": 40.7812, "lon": -73.9665, "accuracy_m": 10}


def at(shop: str) -> dict[str, Any]:
    for row in SHOPS.splitlines()[1:]:
        cells = row.split(",")
        if cells[0] == shop:
            return {"lat": float(cells[2]), "lon": float(cells[3]), "accuracy_m": 10}
    raise KeyError(shop)


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    root = tmp_path / "rules"
    (root / "places").mkdir(parents=True)
    (root / "places" / "shops.csv").write_text(SHOPS)
    (root / "coffee.yaml").write_text(COFFEE)
    (root / "policy.yaml").write_text("limits: {}\nstale_after: 10m\nhysteresis_m: 30\n")
    return make_settings(data_dir, database_url, rules_dir=root)


async def test_a_csv_shop_gets_a_push_that_names_it_and_keeps_its_id_when_resorted(
    api: LiveApi, push_service: PushService
) -> None:
    sub, token = await subscriber(api, push_service, location_consent=True)
    await send(api, token, at("soho"))
    await deliver(api)
    [message] = sub.messages()
    shown = notification(message)
    assert shown["title"] == "Coffee at Soho Roasters"
    assert shown["body"] == "Soho Roasters in SoHo: your second cup is on us"

    # The marketer sorts the sheet by name, descending, and the service reloads it.
    header, *rows = SHOPS.splitlines()
    resorted = sorted(rows, key=lambda r: r.split(",")[1], reverse=True)
    (api.ctx.settings.rules_dir / "places" / "shops.csv").write_text(
        "\n".join([header, *resorted]) + "\n"
    )
    async with api.http.post(api.url + "/v1/rules/reload", headers=api.admin()) as r:
        assert r.status == 200, await r.text()
    assert [p.id for p in api.ctx.rules.current.places] == [
        "williamsburg",
        "soho",
        "midtown",
        "chelsea",
    ]

    # Out and back into Soho Roasters: still the same shop, so its 1/day cooldown holds.
    await send(api, token, PARK)
    await deliver(api)
    await send(api, token, at("soho"))
    await deliver(api)
    assert len(sub.messages()) == 1
    # Another shop is another place.
    await send(api, token, at("chelsea"))
    await deliver(api)
    titles = [notification(m)["title"] for m in sub.messages()]
    assert titles == ["Coffee at Soho Roasters", "Coffee at Chelsea Beans"]
