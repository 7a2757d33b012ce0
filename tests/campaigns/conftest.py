"""Fixtures of the campaign tests: a policy with quiet hours and caps, a live API, the strict
test push service, and helpers that create campaigns and walk a controlled clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.campaigns import usecases as campaigns_api
from service.context import Context
from service.fanout import FanOut
from service.push import Sender
from service.settings import Settings
from service.testing import BrowserSubscription, PushService
from tests import factories
from tests.conftest import LiveApi, make_settings
from tests.processes import REPO, start
from tests.worker.conftest import write_rules

POLICY = """
quiet_hours: "21:00-08:00"
limits: {per_subscriber: 3/day, min_gap: 1h}
stale_after: 10m
hysteresis_m: 30
"""


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        data_dir, database_url, rules_dir=write_rules(tmp_path / "rules", policy=POLICY)
    )


@pytest.fixture
async def push_service(ctx: Context) -> AsyncIterator[PushService]:
    service = await PushService(ctx.keys.vapid_public_b64).start()
    yield service
    await service.close()


@dataclass
class Member:
    """A registered subscriber and the browser side of its push subscription."""

    id: str
    token: str
    browser: BrowserSubscription

    def campaign_pushes(self) -> list[dict[str, Any]]:
        return [m["notification"] for m in self.browser.messages()]


async def subscribe(api: LiveApi, push: PushService, **profile: Any) -> Member:
    browser = push.subscribe()
    registered = await factories.subscribe(api, browser, **profile)
    return Member(registered.id, registered.token, browser)


def body(campaign_id: str = "lunch", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": campaign_id,
        "audience": {"topics": ["food"]},
        "message": {"title": "Lunch time, {attributes.name}", "body": "2-for-1 mains today"},
        "send_at": "2026-11-24T11:45:00Z",
        "ttl": "2h",
    }
    out.update(fields)
    return out


async def create(ctx: Context, campaign: dict[str, Any], now: datetime) -> None:
    """What POST /v1/campaigns does, at the test's ``now``."""
    await campaigns_api.create(ctx.store, json.dumps(campaign), now=now)


class Clock:
    """The fan-out's controlled clock, and one step of the pipeline at a time."""

    def __init__(self, ctx: Context, now: datetime) -> None:
        self.ctx = ctx
        self.now = now
        self.fanout = FanOut(ctx, clock=lambda: self.now)

    async def at(self, now: datetime, *, force: bool = False) -> None:
        """Move to ``now``, tick what is due (``force``: every running campaign, as a rescan
        would) and send what was queued."""
        self.now = now
        if force:
            await self.ctx.pool.execute(
                "UPDATE campaigns SET next_check_at = $1 "
                "WHERE status IN ('scheduled', 'sending') AND next_check_at IS NOT NULL",
                now,
            )
        await self.fanout.drain()
        await send_all(self.ctx)


async def send_all(ctx: Context) -> None:
    async with Sender(ctx) as sender:
        while await sender.run_once():
            pass


async def statuses(pool: asyncpg.Pool, campaign_id: str) -> dict[str, str]:
    """Each audience member's delivery status or suppression reason, by subscription id."""
    rows = await pool.fetch(
        "SELECT subscription_id::text AS s, status FROM deliveries WHERE campaign_id = $1 "
        "UNION ALL SELECT subscription_id::text, 'suppressed:' || reason "
        "FROM campaign_suppressions WHERE campaign_id = $1",
        campaign_id,
    )
    return {r["s"]: r["status"] for r in rows}


def campaign_cli(args: list[str], tmp_path: Path, database_url: str) -> tuple[int, str, str]:
    """``momentcast campaign ARGS`` as a real process, with the repository's rules (quiet
    hours 21:00-08:00): its exit code, stdout and stderr."""
    env = {
        "MOMENTCAST_DATABASE_URL": database_url,
        "MOMENTCAST_DATA_DIR": str(tmp_path / "data"),
        "MOMENTCAST_RULES_DIR": str(REPO / "rules"),
    }
    proc = start(["campaign", *args], env, cwd=tmp_path)
    out, err = proc.proc.communicate(timeout=120)
    return proc.proc.returncode, out, err
