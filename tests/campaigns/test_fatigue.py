"""The fatigue guard (policy `fatigue: {after, rest}`) end to end: real PostgreSQL, the worker,
the campaign fan-out and the real sender to the strict test push service. A subscriber sent
`after` pushes in a row without a click or conversion rests: rule and campaign pushes to them
are suppressed `fatigued` until the rest has passed, then the count starts again."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.cli.rules import main as rules_cli
from service.context import Context
from service.engagement.fatigue import Streak, after_interaction, after_sent, is_resting
from service.errors import TraceError
from service.reports.backtest import run_backtest
from service.rules.replay import replay
from service.settings import Settings
from service.testing import PushService
from service.worker import Worker
from tests.campaigns.conftest import Clock, Member, body, create, send_all, statuses, subscribe
from tests.conftest import LiveApi, make_settings
from tests.factories import insert_delivery, write_rule_folder
from tests.worker.conftest import Fix, add_signals

AFTER = 3
FATIGUE_POLICY = f"""
limits: {{}}
stale_after: 1d
hysteresis_m: 30
fatigue: {{after: {AFTER}, rest: 14d}}
"""

# Fires on every signal of a subscriber with the topic, wherever it is.
HELLO = """
priority: 1
trigger: signal
who: {topics: [food]}
message: {title: "Hello", body: "from {rule.id}", ttl: 1h}
"""


@pytest.fixture
def settings(data_dir: Path, database_url: str, tmp_path: Path) -> Settings:
    rules = write_rule_folder(
        tmp_path / "rules", policy=FATIGUE_POLICY, rules={"hello.yaml": HELLO}
    )
    return make_settings(data_dir, database_url, rules_dir=rules)


class Pipeline:
    """Signals through the worker and the sender, one push at a time."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.now = datetime.now(UTC)
        self.worker = Worker(ctx, clock=lambda: self.now)

    async def signal(self, member: Member) -> None:
        """A signal from ``member``, a minute after the last one, decided and sent."""
        self.now += timedelta(minutes=1)
        await add_signals(self.ctx.pool, member.id, [Fix(self.now, 52.5, 13.4)])
        await self.worker.drain()
        await send_all(self.ctx)


def rule_pushes(member: Member) -> int:
    return sum(1 for m in member.browser.messages() if m["notification"]["title"] == "Hello")


async def counters(ctx: Context) -> dict[str, int]:
    rows = await ctx.pool.fetch("SELECT counter, sum(n)::int AS n FROM rule_counters GROUP BY 1")
    return {r["counter"]: r["n"] for r in rows}


async def streak(ctx: Context, member: Member) -> dict[str, Any] | None:
    row = await ctx.pool.fetchrow(
        "SELECT unanswered, resting_since, resting_until FROM push_fatigue "
        "WHERE subscription_id = $1",
        uuid.UUID(member.id),
    )
    return dict(row) if row is not None else None


async def interact(api: LiveApi, member: Member, kind: str = "clicked") -> None:
    """The member clicks (or converts on) their latest push, as the service worker reports it."""
    data = member.browser.messages()[-1]["notification"]["data"]
    async with api.http.post(
        f"{api.url}/v1/events",
        json={"delivery_id": data["delivery_id"], "token": data["event_token"], "type": kind},
    ) as r:
        assert r.status == 202, await r.text()


async def end_the_rest(ctx: Context, member: Member) -> None:
    """What 14 days would do: the rest began and ended 15 days earlier."""
    await ctx.pool.execute(
        "UPDATE push_fatigue SET resting_since = resting_since - interval '15 days', "
        "resting_until = resting_until - interval '15 days' WHERE subscription_id = $1",
        uuid.UUID(member.id),
    )


async def test_after_n_unanswered_pushes_rule_and_campaign_pushes_rest_then_flow_again(
    api: LiveApi, push_service: PushService
) -> None:
    tired = await subscribe(api, push_service, topics=["food"])
    fresh = await subscribe(api, push_service, topics=["food"])
    run = Pipeline(api.ctx)
    for _ in range(AFTER):
        await run.signal(tired)
    assert rule_pushes(tired) == AFTER
    state = await streak(api.ctx, tired)
    assert state is not None and state["unanswered"] == 0  # the count starts again at the rest
    assert state["resting_until"] - state["resting_since"] == timedelta(days=14)

    # The next rule push is suppressed, and counted by reason.
    await run.signal(tired)
    await run.signal(fresh)
    assert rule_pushes(tired) == AFTER
    assert rule_pushes(fresh) == 1
    assert (await counters(api.ctx)).get("suppressed:fatigued") == 1

    # A campaign leaves the resting subscriber out with reason fatigued, and says so.
    at = run.now + timedelta(minutes=1)
    await create(api.ctx, body(send_at=at.isoformat()), at)
    await Clock(api.ctx, at).at(at)
    assert await statuses(api.ctx.pool, "lunch") == {
        tired.id: "suppressed:fatigued",
        fresh.id: "sent",
    }
    async with api.http.get(f"{api.url}/v1/campaigns/lunch", headers=api.admin()) as r:
        result = await r.json()
    assert result["suppressed"] == {"fatigued": 1}
    async with api.http.get(f"{api.url}/v1/stats", headers=api.admin()) as r:
        stats = await r.json()
    [hello] = [row for row in stats["rules"] if row["rule"] == "hello"]
    assert hello["suppressed"] == {"fatigued": 1}
    # The health counts campaigns' pushes ('') beside the rules', and who rests.
    health = stats["health"]
    assert {r["rule"]: r["sent"] for r in health["rules"]} == {"": 1, "hello": AFTER + 1}
    assert (health["sent"], health["interacted"], health["resting_subscribers"]) == (
        AFTER + 2,
        0,
        1,
    )

    # Once the rest has passed, pushes flow again and the count starts again from zero.
    await end_the_rest(api.ctx, tired)
    await run.signal(tired)
    assert rule_pushes(tired) == AFTER + 1
    state = await streak(api.ctx, tired)
    assert state is not None and state["unanswered"] == 1
    assert not is_resting(state["resting_since"], state["resting_until"], run.now)
    for _ in range(AFTER - 1):
        await run.signal(tired)
    await run.signal(tired)
    assert rule_pushes(tired) == 2 * AFTER  # rests again after AFTER more


@pytest.mark.parametrize("kind", ["clicked", "converted", "click link"])
async def test_an_interaction_before_the_nth_push_resets_the_count(
    api: LiveApi, push_service: PushService, kind: str
) -> None:
    member = await subscribe(api, push_service, topics=["food"])
    run = Pipeline(api.ctx)
    for _ in range(AFTER - 1):
        await run.signal(member)
    if kind == "click link":
        navigate = member.browser.messages()[-1]["notification"]["navigate"]
        path = navigate.removeprefix(api.ctx.settings.base_url)
        async with api.http.get(api.url + path, allow_redirects=False) as r:
            assert r.status in (200, 302, 303), await r.text()  # a page, or the url
    else:
        await interact(api, member, kind)
    assert (await streak(api.ctx, member) or {})["unanswered"] == 0
    for _ in range(AFTER - 1):
        await run.signal(member)
    assert rule_pushes(member) == 2 * (AFTER - 1)  # none suppressed
    assert "suppressed:fatigued" not in await counters(api.ctx)
    await run.signal(member)  # the AFTER-th since the interaction
    await run.signal(member)
    assert rule_pushes(member) == 2 * (AFTER - 1) + 1
    assert (await counters(api.ctx)).get("suppressed:fatigued") == 1


async def test_a_click_on_the_push_that_began_the_rest_ends_it(
    api: LiveApi, push_service: PushService
) -> None:
    member = await subscribe(api, push_service, topics=["food"])
    run = Pipeline(api.ctx)
    for _ in range(AFTER):
        await run.signal(member)
    await interact(api, member)
    await run.signal(member)
    assert rule_pushes(member) == AFTER + 1
    assert "suppressed:fatigued" not in await counters(api.ctx)


async def test_shown_and_dismissed_are_no_interaction(
    api: LiveApi, push_service: PushService
) -> None:
    member = await subscribe(api, push_service, topics=["food"])
    run = Pipeline(api.ctx)
    for _ in range(AFTER):
        await run.signal(member)
        await interact(api, member, "shown")
    await interact(api, member, "dismissed")
    await run.signal(member)
    assert rule_pushes(member) == AFTER
    assert (await counters(api.ctx)).get("suppressed:fatigued") == 1


async def test_test_pushes_do_not_count(api: LiveApi, push_service: PushService) -> None:
    member = await subscribe(api, push_service, topics=["food"])
    for _ in range(AFTER + 1):
        async with api.http.post(
            f"{api.url}/v1/rules/hello/test",
            json={"subscription_id": member.id},
            headers=api.admin(),
        ) as r:
            assert r.status == 202, await r.text()
    await send_all(api.ctx)
    assert rule_pushes(member) == AFTER + 1
    assert await streak(api.ctx, member) is None
    run = Pipeline(api.ctx)
    await run.signal(member)
    assert rule_pushes(member) == AFTER + 2
    assert (await streak(api.ctx, member) or {})["unanswered"] == 1


async def test_a_push_queued_before_the_rest_is_sent_and_does_not_count(
    api: LiveApi, push_service: PushService
) -> None:
    member = await subscribe(api, push_service, topics=["food"])
    run = Pipeline(api.ctx)
    for _ in range(AFTER):
        await run.signal(member)
    resting = await streak(api.ctx, member)
    # Decided before the rest began, still in the outbox: the sender sends it.
    await insert_delivery(api.ctx.pool, uuid.UUID(member.id), rule_id="hello")
    await send_all(api.ctx)
    assert len(member.browser.messages()) == AFTER + 1
    assert await streak(api.ctx, member) == resting


async def test_the_statements_keep_the_pure_rule(api: LiveApi, push_service: PushService) -> None:
    """service/engagement/fatigue.py (what a benchmark simulates) and the statements agree over
    sends, a rest, an interaction that ends it, and the next run of sends."""
    member = await subscribe(api, push_service, topics=["food"])
    run = Pipeline(api.ctx)
    expected = Streak()
    rest = timedelta(days=14)
    for step in ["send"] * (AFTER + 1) + ["click"] + ["send"] * AFTER:
        if step == "send":
            sent = len(member.browser.messages())
            await run.signal(member)
            if len(member.browser.messages()) > sent:
                expected = after_sent(expected, 1, datetime.now(UTC), AFTER, rest)
        else:
            await interact(api, member)
            expected = after_interaction(expected, datetime.now(UTC))
        state = await streak(api.ctx, member)
        assert state is not None
        now = datetime.now(UTC)
        assert state["unanswered"] == expected.unanswered, step
        assert is_resting(state["resting_since"], state["resting_until"], now) == is_resting(
            expected.resting_since, expected.resting_until, now
        ), step
    assert rule_pushes(member) == 2 * AFTER


# --- the reports: simulate, replay, backtest, rules check ----------------------------------------


async def test_simulate_names_fatigued_when_the_profile_rests(api: LiveApi) -> None:
    at = datetime(2026, 12, 7, 12, tzinfo=UTC)
    sim: dict[str, Any] = {
        "signal": {"lat": 52.5, "lon": 13.4, "at": at.isoformat()},
        "profile": {"topics": ["food"], "resting_until": (at + timedelta(days=1)).isoformat()},
    }
    async with api.http.post(api.url + "/v1/simulate", json=sim, headers=api.admin()) as r:
        assert r.status == 200, await r.text()
        rested = await r.json()
    assert rested["decision"] is None
    assert rested["rules"] == [{"rule": "hello", "matched": True, "reason": "fatigued"}]
    sim["profile"]["resting_until"] = at.isoformat()  # the rest is over at the signal
    async with api.http.post(api.url + "/v1/simulate", json=sim, headers=api.admin()) as r:
        assert (await r.json())["decision"]["rule"] == "hello"
    sim["profile"]["resting_until"] = "2026-12-08T12:00:00"  # no offset
    async with api.http.post(api.url + "/v1/simulate", json=sim, headers=api.admin()) as r:
        assert r.status == 422
        assert "profile.resting_until" in await r.text()


def test_replay_names_fatigued_until_the_profiles_rest_ends(
    settings: Settings, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "lat,lon,time\n"
        "52.5,13.4,2026-12-07T12:00:00Z\n"
        "52.5,13.4,2026-12-07T13:00:00Z\n"
        "52.5,13.4,2026-12-07T15:00:00Z\n"
    )
    profile = tmp_path / "profile.yaml"
    profile.write_text("topics: [food]\nresting_until: 2026-12-07T14:00:00Z\n")
    report = replay(str(settings.rules_dir), str(trace), str(profile))
    assert [r["decision"] is not None for r in report["rows"]] == [False, False, True]
    assert report["rows"][0]["suppressed"] == [{"rule": "hello", "place": "", "reason": "fatigued"}]
    assert report["summary"]["suppressed"] == {"fatigued": 2}
    profile.write_text("resting_until: 2026-12-07T14:00:00\n")
    with pytest.raises(TraceError, match="resting_until must be a time with its offset"):
        replay(str(settings.rules_dir), str(trace), str(profile))


async def test_backtest_names_fatigued_inside_the_stored_rest(
    api: LiveApi, push_service: PushService
) -> None:
    member = await subscribe(api, push_service, topics=["food"])
    end = datetime.now(UTC).replace(microsecond=0)
    fixes = [Fix(end - timedelta(hours=h), 52.5, 13.4) for h in (5, 4, 3, 2, 1)]
    await add_signals(api.ctx.pool, member.id, fixes)
    # Rested from 3.5 h to 1.5 h before the end: the signals 3 h and 2 h before it.
    await api.ctx.pool.execute(
        "INSERT INTO push_fatigue (subscription_id, unanswered, resting_since, resting_until) "
        "VALUES ($1, 0, $2, $3)",
        uuid.UUID(member.id),
        end - timedelta(hours=3.5),
        end - timedelta(hours=1.5),
    )
    ruleset = api.ctx.rules.current
    report = await run_backtest(api.ctx.store, ruleset, timedelta(hours=6), until=end)
    [hello] = report["rules"]
    assert hello["would_send"] == 3
    assert hello["suppressed"] == {"fatigued": 2}


@pytest.mark.parametrize(
    ("fatigue", "message"),
    [
        ("{after: 0, rest: 14d}", "2: fatigue.after: Input should be greater than or equal to 1"),
        ("{after: 2.5, rest: 14d}", "2: fatigue.after: Input should be a valid integer"),
        ("{after: '5', rest: 14d}", "2: fatigue.after: Input should be a valid integer"),
        ("{after: 5, rest: soon}", "2: fatigue.rest: bad duration 'soon'"),
        ("{after: 5}", "2: fatigue: missing required key 'rest'"),
        ("{after: 5, rest: 14d, for: all}", "2: fatigue: unknown key 'for'"),
    ],
)
def test_rules_check_names_a_bad_fatigue_guard_by_file_and_line(
    tmp_path: Path, fatigue: str, message: str
) -> None:
    root = write_rule_folder(
        tmp_path / "rules",
        policy=f"limits: {{}}\nfatigue: {fatigue}\n",
        rules={"hello.yaml": HELLO},
    )
    out, err = io.StringIO(), io.StringIO()
    assert rules_cli(["check", str(root)], out=out, err=err) == 1
    errors = (out.getvalue() + err.getvalue()).splitlines()
    assert any(line.startswith(f"{root}/policy.yaml:{message}") for line in errors), errors


async def test_a_send_while_an_erasure_holds_the_subscriber_does_not_wait_and_erasure_clears_it(
    api: LiveApi, push_service: PushService
) -> None:
    """An erasure holds the subscription FOR UPDATE, then waits for its deliveries' rows: the
    sender's record, which holds those rows, must not wait for the subscription (a deadlock).
    push_fatigue has no foreign key for that; the erasure deletes its row itself."""
    member = await subscribe(api, push_service, topics=["food"])
    await insert_delivery(api.ctx.pool, uuid.UUID(member.id), rule_id="hello")
    async with api.ctx.pool.acquire() as erasing, erasing.transaction():
        await erasing.execute(
            "SELECT true FROM subscriptions WHERE id = $1 FOR UPDATE", uuid.UUID(member.id)
        )
        async with asyncio.timeout(30):  # it would wait for the lock until the end
            await send_all(api.ctx)
    assert len(member.browser.messages()) == 1
    assert (await streak(api.ctx, member) or {})["unanswered"] == 1
    # A data-subject access request shows the count, as it is stored.
    async with api.http.get(
        f"{api.url}/v1/subscriptions/{member.id}/export", headers=api.admin()
    ) as r:
        exported = await r.json()
    assert exported["fatigue"] == {"unanswered": 1, "resting_since": None, "resting_until": None}
    async with api.http.delete(
        f"{api.url}/v1/subscriptions/{member.id}",
        headers={"Authorization": f"Bearer {member.token}"},
    ) as r:
        assert r.status == 204, await r.text()
    assert await streak(api.ctx, member) is None
