"""Statistics per place over a period: GET /v1/stats/places and its CSV, GET /v1/stats.csv."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.conftest import LiveApi
from tests.factories import insert_subscription
from tests.web.conftest import delivery

DAY1 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
DAY3 = datetime(2026, 11, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def deliveries(clean_db: asyncpg.Pool) -> None:
    sub = await insert_subscription(clean_db, endpoint="http://127.0.0.1:9/push/x")
    await delivery(clean_db, sub, place="cafe-a", at=DAY1, events=("shown", "clicked"))
    await delivery(clean_db, sub, place="cafe-a", at=DAY2, events=("shown",))
    await delivery(clean_db, sub, place="cafe-a", at=DAY2, status="failed")
    await delivery(clean_db, sub, place="cafe-b", at=DAY2, events=("shown", "clicked", "converted"))
    await delivery(clean_db, sub, place="cafe-b", at=DAY2, test=True, events=("clicked",))
    await delivery(clean_db, sub, place="cafe-c", at=DAY3, status="gone")
    await delivery(clean_db, sub, place="=cmd", at=DAY2, rule="gone-rule")


async def test_per_place_counts_within_the_period(api: LiveApi, deliveries: None) -> None:
    async with api.http.get(
        api.url + "/v1/stats/places?from=2026-11-02&to=2026-11-04", headers=api.admin()
    ) as r:
        assert r.status == 200
        body = await r.json()
    assert (body["since"], body["until"]) == (
        "2026-11-02T00:00:00+00:00",
        "2026-11-04T00:00:00+00:00",
    )
    rows = {(p["rule"], p["place"]): p for p in body["places"]}
    # cafe-c is on the 4th: outside [from, to). The test push is in no statistic.
    assert set(rows) == {("promo", "cafe-a"), ("promo", "cafe-b"), ("gone-rule", "=cmd")}
    a = rows[("promo", "cafe-a")]
    assert (a["place_name"], a["decided"], a["sent"], a["failed"]) == ("Cafe A", 3, 2, 1)
    assert (a["shown"], a["clicked"], a["converted"], a["ctr"]) == (2, 1, 0, 0.5)
    b = rows[("promo", "cafe-b")]
    assert (b["decided"], b["sent"], b["shown"], b["clicked"], b["converted"]) == (1, 1, 1, 1, 1)
    assert rows[("gone-rule", "=cmd")]["place_name"] == ""  # not in the loaded rules

    async with api.http.get(
        api.url + "/v1/stats/places?from=2026-11-03T00:00:00Z&to=2026-11-05T00:00:00%2B01:00",
        headers=api.admin(),
    ) as r:
        later = await r.json()
    assert {(p["place"], p["decided"]) for p in later["places"]} == {
        ("cafe-a", 2),
        ("cafe-b", 1),
        ("cafe-c", 1),
        ("=cmd", 1),
    }


async def test_csv_export(api: LiveApi, deliveries: None) -> None:
    async with api.http.get(
        api.url + "/v1/stats.csv?from=2026-11-01&to=2026-11-05", headers=api.admin()
    ) as r:
        assert r.status == 200
        assert r.content_type == "text/csv"
        assert r.headers["Content-Disposition"] == (
            'attachment; filename="momentcast-stats_2026-11-01_2026-11-05.csv"'
        )
        text = await r.text()
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == [
        "since",
        "until",
        "rule",
        "place",
        "place_name",
        "decided",
        "sent",
        "failed",
        "gone",
        "expired",
        "shown",
        "clicked",
        "converted",
        "ctr",
    ]
    rows = {(line[2], line[3]): line for line in lines[1:]}
    assert rows[("promo", "cafe-a")][4:] == [
        "Cafe A",
        "3",
        "2",
        "1",
        "0",
        "0",
        "2",
        "1",
        "0",
        "0.5",
    ]
    assert rows[("promo", "cafe-c")][5:9] == ["1", "0", "0", "1"]
    # A cell that a spreadsheet would run as a formula is quoted.
    assert ("gone-rule", "'=cmd") in rows
    assert rows[("promo", "cafe-c")][-1] == ""  # no CTR without a send


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("from=yesterday", "from", "is not a date"),
        ("to=2026-11-02T10:00:00", "to", "with an offset"),
        ("from=2026-11-03&to=2026-11-02", "from", "must be before to"),
        ("from=2025-01-01&to=2026-11-02", "from", "longer than 366 days"),
    ],
)
async def test_bad_periods_are_422(api: LiveApi, query: str, field: str, message: str) -> None:
    for path in ("/v1/stats/places", "/v1/stats.csv"):
        async with api.http.get(f"{api.url}{path}?{query}", headers=api.admin()) as r:
            assert r.status == 422
            error = (await r.json())["error"]
            assert message in error["message"]
            assert error["details"][0]["field"] == field


async def test_default_period_is_the_last_7_days(api: LiveApi) -> None:
    async with api.http.get(api.url + "/v1/stats/places", headers=api.admin()) as r:
        body = await r.json()
    since = datetime.fromisoformat(body["since"])
    until = datetime.fromisoformat(body["until"])
    assert (until - since).days == 7
    assert abs((datetime.now(UTC) - until).total_seconds()) < 60
    assert body["places"] == []
