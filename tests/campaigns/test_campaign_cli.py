"""``momentcast campaign send|list|show|cancel`` as a real process on the test database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from tests.campaigns.conftest import campaign_cli
from tests.factories import insert_subscription

SOON = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT11:45")
CAMPAIGN = f"""
id: lunch
description: Lunch offer for the food community at 11:45 their time
audience:
  topics: [food]
  attributes:
    visits: {{gte: 2}}
message:
  title: "Lunch, {{attributes.name}}?"
  body: 2-for-1 mains until 14:00
  locales:
    de: {{title: "Mittag, {{attributes.name}}?"}}
send_at: {{local: "{SOON}", late: skip}}
ttl: 1h
"""


async def test_send_list_show_cancel(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    for n, (locale, visits) in enumerate([("de-DE", 3), ("en", 5), ("en", 1)]):
        await insert_subscription(
            clean_db,
            endpoint=f"https://push.example/{n}",
            locale=locale,
            topics=["food"],
            attributes={"name": f"N{n}", "visits": visits},
        )
    file = tmp_path / "lunch.yaml"
    file.write_text(CAMPAIGN)
    code, out, err = campaign_cli(["send", str(file), "--dry-run"], tmp_path, database_url)
    assert code == 0, err
    assert "campaign lunch (dry run, nothing stored): audience 2" in out
    assert "locale de (an audience member): 'Mittag, N0?'" in out
    assert "locale default (an audience member): 'Lunch, N1?'" in out
    assert await clean_db.fetchval("SELECT count(*) FROM campaigns") == 0

    code, out, err = campaign_cli(["send", str(file)], tmp_path, database_url)
    assert code == 0, err
    assert out.startswith("campaign lunch scheduled: audience 2\n")
    code, out, err = campaign_cli(["send", str(file)], tmp_path, database_url)
    assert code == 1 and "'lunch' exists" in err

    code, out, err = campaign_cli(["list", "--json"], tmp_path, database_url)
    assert code == 0, err
    [listed] = json.loads(out)
    assert (listed["id"], listed["status"], listed["audience"]) == ("lunch", "scheduled", 2)
    assert listed["send_at"] == {"local": SOON, "late": "skip"}
    code, out, err = campaign_cli(["show", "lunch"], tmp_path, database_url)
    assert code == 0 and "0 queued; 0 sent" in out, (out, err)
    code, out, err = campaign_cli(["cancel", "lunch"], tmp_path, database_url)
    assert code == 0 and "campaign lunch cancelled: 0 queued pushes cancelled" in out, err
    code, out, err = campaign_cli(["show", "nope"], tmp_path, database_url)
    assert code == 1 and "no campaign 'nope'" in err


def test_errors_name_the_file_line_and_field(tmp_path: Path, database_url: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(
        CAMPAIGN.replace("visits: {gte: 2}", "visits: {gte: 2, lte: 9}").replace(
            "ttl: 1h", "ttl: 40d"
        )
    )
    code, _, err = campaign_cli(["send", str(file)], tmp_path, database_url)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{file}:7: audience.attributes.visits: a condition is one")
    assert lines[1] == f"{file}:14: ttl: must be between 1s and 28d"
