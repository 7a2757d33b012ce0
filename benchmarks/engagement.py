"""Engagement benchmark (issue 23, "Measured, not assumed"): send-time optimisation, experiments
and adaptive variants, and the fatigue guard, on one synthetic population stored in PostgreSQL.

    .venv/bin/python benchmarks/engagement.py [--subscribers 50000] [--days 30] [--seed 23]
    .venv/bin/python benchmarks/engagement.py --subscribers 2000 --days 10   # the smoke run

PostgreSQL: MOMENTCAST_BENCH_DATABASE_URL or MOMENTCAST_DATABASE_URL names a server, on which
a throwaway database is created and dropped afterwards; without either, an embedded
PostgreSQL in a temporary directory (benchmarks/benchdb.py).

The population (seeded; fixed before any figure was seen, and not tuned to pass):
- N subscribers spread over the ZONES below (whole, half- and quarter-hour offsets, both
  hemispheres, and no time zone = UTC), stored as subscriptions rows with their timezone.
- A hidden daily activity curve per subscriber over LOCAL hours: a floor of 0.05-0.25 plus one
  peak (half of them) or two (the other half), each a circular Gaussian of 1-2.5 h width,
  centred on a habit (morning ~8h, lunch ~12:30, evening ~20h) or, for one in ten peaks,
  anywhere; the curve's maximum is 1.
- A click propensity: the probability of interacting with a push at the peak hour, Beta(2, 8)
  (mean 0.2); NEVER_SHARE of the subscribers never engage (propensity 0). A push at local hour
  h gets an interaction with probability propensity x curve[h].
- DAYS of history: each subscriber gets Poisson(rate) context pushes a day, rate 0.5-2.5, at
  uniform local times between 07:00 and 23:00 (rule pushes follow the subscriber, not a
  schedule). Each is a sent deliveries row (rule `bench-context`) with a `shown` event; an
  interaction is a `clicked` event 0-30 min later (exponential, mean 5 min) and, for one in
  five, a `converted` event too. Rows go in with COPY.

What is reported, each figure beside its baseline in the same run and the issue's target:
1. Send-time optimisation, for a campaign on the day after the history with the window
   08:00-21:00 and fallback 12:00: the expected interaction rate (from the hidden curves) of
   the `optimal` plan, of local noon, of a random hour in the window, and of the oracle (each
   subscriber's true best hour in the window). Target: the plan reaches >= 80 % of the
   oracle's uplift over noon. The plan is the product's: the campaign is created by the
   campaigns use case (POST /v1/campaigns), which counts the audience's interactions per local
   hour in one statement and runs service.engagement.sendtime.choose_hours; the hours are read
   back from campaign_send_hours. Its time: the create call (the plan of the whole audience)
   and the fan-out's ticks, each at the next_check_at the fan-out sets, until every member is
   in the outbox, against a plain `local` 12:00 campaign of the same audience.
2. Variants: two variants, B's interaction probability 1.2x A's. Regret = expected
   interactions lost against always sending B, over the SAME pushes with the SAME click draws
   (one uniform number per push, compared against each variant's probability):
   (a) a fixed 50/50 split (deterministic per subscriber, as `allocation: fixed` is),
   (b) adaptive: service.engagement.bayes.thompson_pick with min_share 0.1, the posterior
       counts refreshed once per batch (a batch = the pushes of one simulated hour, as a
       worker reads counts once per batch), over the rule pushes of the history;
   (c) a campaign experiment over one campaign to the whole audience at local noon:
       test_share 0.2 split 50/50, then the rest gets the variant with the highest prob_best.
   Target: adaptive regret <= 0.3x the fixed split's.
3. Fatigue guard `{after: 5, rest: 14d}` over the history's pushes: pushes to never-engagers
   and interactions, with the guard against without. Targets: >= 60 % fewer pushes to
   never-engagers, <= 5 % of interactions lost.

A second table, "why", shows what bounds the figures: the plan's ceiling when only
subscribers with >= 3 interactions get an hour, the plan with 60 more days of history (made
in memory like the stored 30; the product reads 90), other smoothing strengths, and the
fatigue guard with other `after` and `rest`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from benchmarks.benchdb import bench_database  # noqa: E402
from service.campaigns import usecases as campaigns_api  # noqa: E402
from service.context import Context, Keys  # noqa: E402
from service.engagement.bayes import prob_best, thompson_pick  # noqa: E402
from service.engagement.sendtime import choose_hours  # noqa: E402
from service.fanout import FanOut  # noqa: E402
from service.rules.models import PolicyModel  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store, migrations  # noqa: E402
from service.store.db import create_pool  # noqa: E402

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ZONES = [
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Atlantic/Azores",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Athens",
    "Europe/Moscow",
    "Asia/Tehran",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Pacific/Noumea",
    "Pacific/Auckland",
    "Pacific/Tongatapu",
    "",  # no time zone: UTC
]
HOURS = 24
NEVER_SHARE = 0.3
HISTORY_START = date(2026, 11, 6)  # DAYS of history from here; the campaign the day after
WINDOW = (8, 21)  # 08:00-21:00: a push at the start of hours 8..20
FALLBACK_HOUR = 12
LIFT_B = 1.2  # variant B's interaction probability over A's
MIN_SHARE = 0.1
TEST_SHARE = 0.2
FATIGUE_AFTER = 5
FATIGUE_REST = timedelta(days=14)
EARLIER_DAYS = 60  # the plan reads 90 days; the "why" table adds these to the 30 stored


@dataclass(frozen=True)
class Population:
    ids: list[uuid.UUID]
    zone: IntArray  # index into ZONES
    curve: FloatArray  # (n, 24) activity by local hour, maximum 1
    propensity: FloatArray  # interaction probability at the peak; 0 = never engages

    @property
    def n(self) -> int:
        return len(self.ids)

    def p(self, sub: IntArray, hour: IntArray) -> FloatArray:
        """The probability that a push to ``sub`` at local ``hour`` gets an interaction."""
        out: FloatArray = self.propensity[sub] * self.curve[sub, hour]
        return out


@dataclass(frozen=True)
class History:
    """The pushes of the simulated days, in UTC order, and their interaction draws."""

    sub: IntArray
    at: npt.NDArray[np.datetime64]  # UTC, microseconds
    local_hour: IntArray
    u: FloatArray  # the common random number of each push
    clicked: BoolArray
    click_at: npt.NDArray[np.datetime64]  # UTC; meaningful where clicked
    converted: BoolArray


def _peaks(n: int, rng: np.random.Generator) -> FloatArray:
    """Peak centres in local hours: habits, plus one in ten anywhere in the day."""
    habit = rng.choice(3, size=n, p=[0.3, 0.25, 0.45])
    centre = np.choose(
        habit,
        [rng.normal(8.0, 1.0, n), rng.normal(12.5, 0.75, n), rng.normal(20.0, 1.5, n)],
    )
    anywhere = rng.random(n) < 0.1
    out: FloatArray = np.where(anywhere, rng.uniform(0, HOURS, n), centre) % HOURS
    return out


def _bump(centre: FloatArray, width: FloatArray) -> FloatArray:
    """A circular Gaussian per row, evaluated at the middle of each local hour: (n, 24)."""
    mid = np.arange(HOURS) + 0.5
    d = np.abs(mid[None, :] - centre[:, None]) % HOURS
    d = np.minimum(d, HOURS - d)
    out: FloatArray = np.exp(-0.5 * (d / width[:, None]) ** 2)
    return out


def population(n: int, rng: np.random.Generator) -> Population:
    two = rng.random(n) < 0.5
    bump = _bump(_peaks(n, rng), rng.uniform(1.0, 2.5, n))
    bump += np.where(two, rng.uniform(0.3, 1.0, n), 0.0)[:, None] * _bump(
        _peaks(n, rng), rng.uniform(1.0, 2.5, n)
    )
    bump /= bump.max(axis=1, keepdims=True)
    floor = rng.uniform(0.05, 0.25, n)[:, None]
    curve = floor + (1.0 - floor) * bump
    engaged = rng.random(n) >= NEVER_SHARE
    propensity = np.where(engaged, rng.beta(2.0, 8.0, n), 0.0)
    raw = rng.bytes(16 * n)
    ids = [uuid.UUID(bytes=raw[i * 16 : (i + 1) * 16], version=4) for i in range(n)]
    return Population(ids, rng.integers(0, len(ZONES), n), curve, propensity)


def utc_offsets(days: int, first: date = HISTORY_START) -> IntArray:
    """Seconds east of UTC of every zone on every day from ``first`` (read at local noon: a
    push on the day a zone changes its clocks may be an hour off, which changes nothing)."""
    out = np.zeros((len(ZONES), days + 1), dtype=np.int64)
    for z, name in enumerate(ZONES):
        tz = ZoneInfo(name) if name else UTC
        for d in range(days + 1):
            noon = datetime.combine(first + timedelta(days=d), datetime.min.time())
            offset = noon.replace(hour=12, tzinfo=tz).utcoffset()
            out[z, d] = int(offset.total_seconds()) if offset else 0
    return out


def history(
    pop: Population, days: int, rng: np.random.Generator, first: date = HISTORY_START
) -> History:
    rate = rng.uniform(0.5, 2.5, pop.n)
    per_day = rng.poisson(np.repeat(rate[:, None], days, axis=1))  # (n, days)
    total = int(per_day.sum())
    sub = np.repeat(np.repeat(np.arange(pop.n), days), per_day.ravel())
    day = np.repeat(np.tile(np.arange(days), pop.n), per_day.ravel())
    local_s = rng.uniform(7 * 3600, 23 * 3600, total).astype(np.int64)  # seconds into the day
    local_hour = local_s // 3600
    offsets = utc_offsets(days, first)[pop.zone[sub], day]
    start = np.datetime64(first.isoformat(), "us")
    at = start + ((day * 86400 + local_s - offsets) * 1_000_000).astype("timedelta64[us]")
    u = rng.random(total)
    clicked = u < pop.p(sub, local_hour)
    delay_s = np.minimum(rng.exponential(300.0, total), 1800.0)
    click_at = at + (delay_s * 1_000_000).astype("timedelta64[us]")
    converted = clicked & (rng.random(total) < 0.2)
    order = np.argsort(at, kind="stable")
    return History(
        sub[order],
        at[order],
        local_hour[order],
        u[order],
        clicked[order],
        click_at[order],
        converted[order],
    )


# --- the store ------------------------------------------------------------------------------------

CHUNK = 250_000  # pushes per INSERT ... SELECT FROM unnest: bounded memory for the arrays
PAYLOAD = '{"title": "Nearby now", "body": "Two for one until 3pm"}'


def _epoch_us(at: npt.NDArray[np.datetime64]) -> list[int]:
    out: list[int] = at.astype("datetime64[us]").astype(np.int64).tolist()
    return out


async def store_history(conn: asyncpg.Connection, pop: Population, hist: History) -> None:
    """The population as subscriptions rows and its history as deliveries and events rows,
    set-based: one INSERT ... SELECT FROM unnest per chunk of pushes. A push's dedupe key is
    its index in the history, which is how its events find the row."""
    await conn.execute(
        """
        INSERT INTO subscriptions (id, endpoint, p256dh, auth, token_hash, timezone, topics)
        SELECT id, 'https://push.example/bench/' || i, 'k', 'a', sha256(int8send(i)), zone,
               ARRAY['news']
        FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS s (id, zone, i)
        """,
        pop.ids,
        [ZONES[z] or None for z in pop.zone.tolist()],
    )
    ids = np.array(pop.ids, dtype=object)
    for lo in range(0, len(hist.sub), CHUNK):
        part = slice(lo, lo + CHUNK)
        await conn.execute(
            """
            INSERT INTO deliveries (subscription_id, rule_id, variant, dedupe_key, payload,
                                    local_hour, ttl_s, status, created_at, decided_at,
                                    not_before, expires_at, finished_at, attempts, last_status)
            SELECT sub, 'bench-context', '', 'bench:' || k, $5::jsonb, hour, 3600, 'sent',
                   at, at, at, at + interval '1 hour', at + interval '200 ms', 1, 201
            FROM (SELECT sub, hour, k,
                         'epoch'::timestamptz + us * interval '1 microsecond' AS at
                  FROM unnest($1::uuid[], $2::int8[], $3::int2[], $4::int8[])
                       AS h (sub, us, hour, k)) AS pushes
            """,
            ids[hist.sub[part]].tolist(),
            _epoch_us(hist.at[part]),
            hist.local_hour[part].tolist(),
            list(range(lo, lo + len(hist.sub[part]))),
            PAYLOAD,
        )
    await conn.execute(
        """
        INSERT INTO events (delivery_id, type, at)
        SELECT id, 'shown', created_at + interval '2 seconds' FROM deliveries
        WHERE rule_id = 'bench-context'
        """
    )
    clicked = np.flatnonzero(hist.clicked)
    for kind, rows, late in (
        ("clicked", clicked, 0),
        ("converted", np.flatnonzero(hist.converted), 60_000_000),
    ):
        await conn.execute(
            """
            INSERT INTO events (delivery_id, type, at)
            SELECT d.id, $3, 'epoch'::timestamptz + e.us * interval '1 microsecond'
            FROM unnest($1::int8[], $2::int8[]) AS e (k, us)
            JOIN deliveries d ON d.dedupe_key = 'bench:' || e.k
            """,
            rows.tolist(),
            [us + late for us in _epoch_us(hist.click_at[rows])],
            kind,
        )
    await conn.execute("VACUUM ANALYZE subscriptions, deliveries, events")


# --- campaigns through the product: the optimal plan, and its fan-out against local's ------

POLICY = PolicyModel.model_validate({})  # no caps, no quiet hours: nothing but the plan acts
MAX_TICKS = 5000


def campaign_day(days: int) -> date:
    """The campaign's day: the day after the history's last."""
    return HISTORY_START + timedelta(days=days + 1)


def campaign_body(case: str, day: date) -> str:
    body: dict[str, object] = {
        "id": f"bench-{case}",
        "audience": {"topics": ["news"]},
        "message": {"title": "This week's digest", "body": "Five stories picked for you"},
        "ttl": "2h",
    }
    if case == "optimal":
        body["send_at"] = {
            "optimal": day.isoformat(),
            "window": f"{WINDOW[0]:02d}:00-{WINDOW[1]:02d}:00",
            "fallback": f"{FALLBACK_HOUR:02d}:00",
            "late": "send",
        }
    else:
        body["send_at"] = {"local": f"{day.isoformat()}T{FALLBACK_HOUR:02d}:00", "late": "send"}
    return json.dumps(body)


@dataclass(frozen=True)
class CampaignRun:
    create_s: float  # the create call: for optimal, the plan of the whole audience
    fan_out_s: float  # the sum of the fan-out's ticks until every member is in the outbox
    ticks: int
    queued: int


async def run_campaign(ctx: Context, case: str, day: date) -> CampaignRun:
    """Create the campaign the day before (the use case POST /v1/campaigns runs), then tick the
    fan-out at each next_check_at it sets, as `momentcast serve` would, until it is done."""
    created = datetime.combine(day - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    started = time.perf_counter()
    await campaigns_api.create(ctx.store, campaign_body(case, day), now=created)
    create_s = time.perf_counter() - started
    clock = [created]
    fanout = FanOut(ctx, clock=lambda: clock[0])
    spent, ticks, queued = 0.0, 0, 0
    for _ in range(MAX_TICKS):
        due = await ctx.pool.fetchval(
            "SELECT next_check_at FROM campaigns WHERE id = $1", f"bench-{case}"
        )
        if due is None:
            break
        clock[0] = max(clock[0], due)
        started = time.perf_counter()
        result = await fanout.run_once()
        spent += time.perf_counter() - started
        ticks += result.campaigns
        queued += result.queued
    return CampaignRun(create_s, spent, ticks, queued)


async def stored_plan(pool: asyncpg.Pool, pop: Population) -> IntArray:
    """The optimal campaign's personal hours as stored (-1: the fallback)."""
    index = {sid: i for i, sid in enumerate(pop.ids)}
    planned = np.full(pop.n, -1, dtype=np.int64)
    rows = await pool.fetch(
        "SELECT subscription_id, local_hour FROM campaign_send_hours WHERE campaign_id = $1",
        "bench-optimal",
    )
    for r in rows:
        planned[index[r["subscription_id"]]] = r["local_hour"]
    return planned


def bench_context(pool: asyncpg.Pool, dsn: str, tmp: Path) -> Context:
    settings = Settings(
        _env_file=None,
        database_url=dsn,
        data_dir=tmp / "data",  # type: ignore[call-arg]
        admin_token="bench-admin-token-" + "x" * 16,
    )
    return Context(
        settings=settings,
        store=Store(pool, dsn=dsn),
        keys=Keys.load(settings),
        rules=SimpleNamespace(current=SimpleNamespace(policy=POLICY)),
    )


# --- 1. send-time optimisation --------------------------------------------------------------------


def allowed_hours() -> BoolArray:
    allowed = np.zeros(HOURS, dtype=bool)
    allowed[WINDOW[0] : WINDOW[1]] = True
    return allowed


def local_click_counts(
    pop: Population, hist: History, days: int, first: date = HISTORY_START
) -> IntArray:
    """Interaction events (clicked, and converted a minute later) per subscriber and local
    hour of the event: what the store's plan counts, here without the store."""
    rows = np.concatenate([np.flatnonzero(hist.clicked), np.flatnonzero(hist.converted)])
    late = np.where(np.arange(len(rows)) < int(hist.clicked.sum()), 0, 60_000_000)
    sub = hist.sub[rows]
    start = np.datetime64(first.isoformat(), "us")
    at = hist.click_at[rows] + late.astype("timedelta64[us]")
    utc_s = (at - start).astype("timedelta64[s]").astype(np.int64)
    day = np.clip(utc_s // 86400, 0, days)
    local_s = utc_s + utc_offsets(days, first)[pop.zone[sub], day]
    hour = (local_s // 3600) % HOURS
    counts = np.zeros((pop.n, HOURS), dtype=np.int64)
    np.add.at(counts, (sub, hour), 1)
    return counts


@dataclass(frozen=True)
class SendTime:
    oracle: float
    noon: float
    random: float
    plan: float
    personal: int
    best_hit: float  # share of personal hours that are the subscriber's true best in the window

    @property
    def reached(self) -> float:
        return (self.plan - self.noon) / (self.oracle - self.noon)


def sendtime_figures(pop: Population, planned: IntArray) -> SendTime:
    """Expected interaction rates per push of a campaign sent at ``planned`` local hours (-1:
    the fallback), from the hidden curves, beside noon, a random window hour and the oracle."""
    allowed = allowed_hours()
    q = pop.propensity[:, None] * pop.curve
    window = np.flatnonzero(allowed)
    best = window[q[:, window].argmax(axis=1)]
    hour = np.where(planned < 0, FALLBACK_HOUR, planned)
    personal = planned >= 0
    engaged = pop.propensity > 0
    hit = (hour == best) & personal & engaged
    return SendTime(
        oracle=float(q[np.arange(pop.n), best].mean()),
        noon=float(q[:, FALLBACK_HOUR].mean()),
        random=float(q[:, window].mean()),
        plan=float(q[np.arange(pop.n), hour].mean()),
        personal=int(personal.sum()),
        best_hit=float(hit.sum() / max(1, (personal & engaged).sum())),
    )


def plan_in_memory(counts: IntArray, **kwargs: float) -> IntArray:
    """The product's hour choice on the history counted here, the audience profile being the
    sum of everyone's counts."""
    return choose_hours(
        counts,
        counts.sum(axis=0).astype(np.float64),
        allowed=allowed_hours(),
        fallback_hour=FALLBACK_HOUR,
        **kwargs,  # type: ignore[arg-type]
    )


# --- 2. experiments and adaptive variants ---------------------------------------------------------


@dataclass(frozen=True)
class Regret:
    pushes: int
    fixed: float
    other: float
    best_interactions: float  # expected interactions if every push had the best variant

    @property
    def ratio(self) -> float:
        return self.other / self.fixed if self.fixed else float("nan")


def _variant_probs(p: FloatArray) -> FloatArray:
    """(2, m): A's and B's interaction probability for each push."""
    return np.stack([p, np.minimum(1.0, p * LIFT_B)])


def _regret(pv: FloatArray, chosen: IntArray) -> float:
    return float((pv[1] - pv[chosen, np.arange(pv.shape[1])]).sum())


def adaptive_regret(
    pop: Population, hist: History, fixed_of: IntArray, rng: np.random.Generator
) -> Regret:
    """Fixed 50/50 against Thompson sampling over the history's pushes, one batch per
    simulated hour, both meeting the same click draws (hist.u)."""
    pv = _variant_probs(pop.p(hist.sub, hist.local_hour))
    clicks = hist.u[None, :] < pv  # (2, m): would this push get an interaction with variant v
    hour = hist.at.astype("datetime64[h]").astype(np.int64)
    edges = np.flatnonzero(np.diff(hour)) + 1
    chosen = np.zeros(len(hist.sub), dtype=np.int64)
    successes = np.zeros(2, dtype=np.int64)
    trials = np.zeros(2, dtype=np.int64)
    for batch in np.split(np.arange(len(hist.sub)), edges):
        if batch.size == 0:
            continue
        pick = thompson_pick(successes, trials, batch.size, min_share=MIN_SHARE, rng=rng)
        chosen[batch] = pick
        trials += np.bincount(pick, minlength=2)
        successes += np.bincount(pick, weights=clicks[pick, batch], minlength=2).astype(np.int64)
    return Regret(
        pushes=len(hist.sub),
        fixed=_regret(pv, fixed_of[hist.sub]),
        other=_regret(pv, chosen),
        best_interactions=float(pv[1].sum()),
    )


def experiment_regret(
    pop: Population, fixed_of: IntArray, rng: np.random.Generator
) -> tuple[Regret, FloatArray]:
    """One campaign to the whole audience at local noon: fixed 50/50 against an experiment
    (TEST_SHARE at random split 50/50, the rest the variant with the highest prob_best)."""
    pv = _variant_probs(pop.propensity * pop.curve[:, FALLBACK_HOUR])
    u = rng.random(pop.n)
    test = rng.random(pop.n) < TEST_SHARE
    test_variant = rng.integers(0, 2, pop.n)
    clicks = u[None, :] < pv
    rows = np.flatnonzero(test)
    got = clicks[test_variant[rows], rows]
    trials = np.bincount(test_variant[rows], minlength=2)
    successes = np.bincount(test_variant[rows], weights=got, minlength=2).astype(np.int64)
    best = prob_best(successes, trials, rng=rng)
    chosen = np.where(test, test_variant, int(best.argmax()))
    regret = Regret(pop.n, _regret(pv, fixed_of), _regret(pv, chosen), float(pv[1].sum()))
    return regret, best


# --- 3. fatigue guard -----------------------------------------------------------------------------


def fatigue_sent(
    pop: Population, hist: History, *, after: int = FATIGUE_AFTER, rest: timedelta = FATIGUE_REST
) -> BoolArray:
    """Which of the history's pushes the guard lets through.

    DESIGN's semantics, simulated here: a subscriber who got ``after`` pushes in a row
    without an interaction rests (their pushes are suppressed) until ``rest`` has passed, then
    the count starts again. A suppressed push is not sent, so it neither counts nor can get an
    interaction. Vectorised over subscribers, one step per push rank.

    Simulated rather than the fatigue branch's pure functions (service/rules/fatigue.py
    after_sent / after_interaction / is_resting): that branch does not merge cleanly with sto's
    (both change the campaign fan-out's SQL), and its merge is the lead's. Checked against
    them event by event on this population: 2 of 30,429 pushes differ at 2,000 subscribers
    and 10 days, 400 of 2,249,069 at 50,000 and 30 (the figures equal to 0.1 %), where a
    click arrives after the subscriber's next push (here a push's interaction counts at once;
    there when its event comes).
    """
    by_sub = np.argsort(hist.sub, kind="stable")  # per subscriber, in time order
    sub_sorted = hist.sub[by_sub]
    first = np.searchsorted(sub_sorted, np.arange(pop.n))
    rank = np.arange(len(by_sub)) - first[sub_sorted]
    at_us = hist.at.astype("datetime64[us]").astype(np.int64)
    rest_us = int(rest.total_seconds() * 1_000_000)
    streak = np.zeros(pop.n, dtype=np.int64)
    rest_until = np.full(pop.n, np.iinfo(np.int64).min, dtype=np.int64)
    sent = np.zeros(len(hist.sub), dtype=bool)
    for k in range(int(rank.max()) + 1 if len(rank) else 0):
        push = by_sub[rank == k]
        sub = hist.sub[push]
        t = at_us[push]
        go = t >= rest_until[sub]
        sent[push[go]] = True
        interacted = hist.clicked[push] & go
        streak[sub] = np.where(go, np.where(interacted, 0, streak[sub] + 1), streak[sub])
        tired = go & (streak[sub] >= after)
        rest_until[sub[tired]] = t[tired] + rest_us
        streak[sub[tired]] = 0
    return sent


# --- the report -----------------------------------------------------------------------------------

Row = tuple[str, str, str, str, str]


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def sendtime_rows(st: SendTime, n: int) -> list[Row]:
    return [
        ("send time: rate, oracle (ceiling)", _pct(st.oracle), "", "", ""),
        ("send time: rate, local noon", _pct(st.noon), "", "", ""),
        ("send time: rate, random window hour", _pct(st.random), "", "", ""),
        (
            "send time: rate, optimal plan",
            _pct(st.plan),
            f"noon {_pct(st.noon)}",
            "",
            "",
        ),
        (
            "send time: share of oracle uplift",
            f"{100 * st.reached:.1f} %",
            "noon 0 %, oracle 100 %",
            ">= 80 %",
            _verdict(st.reached >= 0.8),
        ),
        (
            "send time: personal hours",
            f"{st.personal} of {n}",
            f"best hour hit {100 * st.best_hit:.0f} %",
            "",
            "",
        ),
    ]


def regret_rows(rules: Regret, campaign: Regret, best: FloatArray) -> list[Row]:
    return [
        (
            f"variants: regret, fixed 50/50 ({rules.pushes} rule pushes)",
            f"{rules.fixed:.0f}",
            f"of {rules.best_interactions:.0f} best",
            "",
            "",
        ),
        (
            "variants: regret, adaptive (Thompson)",
            f"{rules.other:.0f}",
            f"fixed {rules.fixed:.0f}",
            "",
            "",
        ),
        (
            "variants: adaptive / fixed regret",
            f"{rules.ratio:.2f}x",
            "1.00x",
            "<= 0.30x",
            _verdict(rules.ratio <= 0.3),
        ),
        (
            f"experiment: regret, fixed 50/50 ({campaign.pushes} campaign pushes)",
            f"{campaign.fixed:.0f}",
            f"of {campaign.best_interactions:.0f} best",
            "",
            "",
        ),
        (
            "experiment: regret, test 0.2 then winner",
            f"{campaign.other:.0f}",
            f"fixed {campaign.fixed:.0f}",
            "",
            "",
        ),
        (
            "experiment: experiment / fixed regret",
            f"{campaign.ratio:.2f}x",
            f"prob_best B {best[1]:.2f}",
            "",
            "",
        ),
    ]


def fatigue_rows(pop: Population, hist: History, sent: BoolArray) -> list[Row]:
    never = pop.propensity[hist.sub] == 0
    before_never = int(never.sum())
    after_never = int((never & sent).sum())
    before = int(hist.clicked.sum())
    after = int((hist.clicked & sent).sum())
    fewer = 1 - after_never / max(1, before_never)
    lost = 1 - after / max(1, before)
    return [
        (
            "fatigue: pushes to never-engagers",
            f"{after_never}",
            f"no guard {before_never}",
            "",
            "",
        ),
        (
            "fatigue: fewer pushes to never-engagers",
            f"{100 * fewer:.1f} %",
            "no guard 0 %",
            ">= 60 %",
            _verdict(fewer >= 0.6),
        ),
        ("fatigue: pushes, all", f"{int(sent.sum())}", f"no guard {len(sent)}", "", ""),
        ("fatigue: interactions", f"{after}", f"no guard {before}", "", ""),
        (
            "fatigue: interactions lost",
            f"{100 * lost:.1f} %",
            "no guard 0 %",
            "<= 5 %",
            _verdict(lost <= 0.05),
        ),
    ]


def print_table(rows: list[Row]) -> None:
    head: Row = ("figure", "value", "baseline (same run)", "target", "verdict")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def campaign_rows(optimal: CampaignRun, local: CampaignRun) -> list[Row]:
    both = optimal.create_s + optimal.fan_out_s
    base = local.create_s + local.fan_out_s
    return [
        (
            "send time: create (optimal: the plan)",
            f"{optimal.create_s:.2f} s",
            f"local {local.create_s:.2f} s",
            "",
            "",
        ),
        (
            "send time: fan-out into the outbox",
            f"{optimal.fan_out_s:.2f} s, {optimal.ticks} ticks, {optimal.queued} queued",
            f"local {local.fan_out_s:.2f} s, {local.ticks} ticks, {local.queued} queued",
            "",
            "",
        ),
        ("send time: optimal / local, create + fan-out", f"{both / base:.2f}x", "1.00x", "", ""),
    ]


def earlier_counts(pop: Population, days: int, rng: np.random.Generator) -> IntArray:
    """Interaction counts of ``days`` more days before the stored history, made like it (in
    memory, 30 days at a time): what the product's 90 days would see beyond the 30 stored."""
    counts = np.zeros((pop.n, HOURS), dtype=np.int64)
    for lo in range(0, days, 30):
        span = min(30, days - lo)
        first = HISTORY_START - timedelta(days=days - lo)
        counts += local_click_counts(pop, history(pop, span, rng, first), span, first)
    return counts


def why_sendtime(pop: Population, counts: IntArray, earlier: IntArray) -> list[Row]:
    """What bounds the plan: who has >= 3 interactions, smoothing, the window, more history."""
    q = pop.propensity[:, None] * pop.curve
    window = np.flatnonzero(allowed_hours())
    best = window[q[:, window].argmax(axis=1)]
    rows: list[Row] = []
    for label, c in (("stored days", counts), (f"+ {EARLIER_DAYS} earlier", counts + earlier)):
        enough = c.sum(axis=1) >= 3
        ceiling = sendtime_figures(pop, np.where(enough, best, -1)).reached
        plan = sendtime_figures(pop, plan_in_memory(c))
        rows.append(
            (
                f"why: {label}: ceiling, true best hour for >= 3",
                f"{100 * ceiling:.1f} %",
                f"{int(enough.sum())} have >= 3",
                "",
                "",
            )
        )
        rows.append(
            (
                f"why: {label}: the plan (choose_hours)",
                f"{100 * plan.reached:.1f} %",
                f"best hour hit {100 * plan.best_hit:.0f} %",
                "",
                "",
            )
        )
    for strength in (0.0, 10.0, 50.0):
        share = sendtime_figures(pop, plan_in_memory(counts, prior_strength=strength)).reached
        rows.append((f"why: plan, prior_strength {strength:g}", f"{100 * share:.1f} %", "", "", ""))
    # The product takes the mode over all 24 hours, then the nearest window hour; this takes
    # the mode inside the window (the same subscribers get an hour: >= 3 in all hours).
    inside_mode = plan_in_memory(counts * allowed_hours()[None, :], min_interactions=0)
    inside = sendtime_figures(pop, np.where(counts.sum(axis=1) >= 3, inside_mode, -1)).reached
    rows.append(("why: plan, the mode inside the window", f"{100 * inside:.1f} %", "", "", ""))
    # Activity curves are smooth: an interaction at 19h says something about 18h and 20h too.
    # Spreading each count half onto its neighbours before the choice (not what the product does).
    spread = 0.5 * np.roll(counts, 1, axis=1) + counts + 0.5 * np.roll(counts, -1, axis=1)
    spread_mode = plan_in_memory(spread, min_interactions=0)
    share = sendtime_figures(pop, np.where(counts.sum(axis=1) >= 3, spread_mode, -1)).reached
    rows.append(("why: plan, counts spread 1/2 to neighbours", f"{100 * share:.1f} %", "", "", ""))
    return rows


def why_rows(pop: Population, hist: History) -> list[Row]:
    """What bounds the fatigue figures: printed beside the table, no targets."""
    rows: list[Row] = []
    engaged = pop.propensity[hist.sub] > 0
    rate = pop.p(hist.sub, hist.local_hour)
    per_sub = np.bincount(hist.sub, weights=rate, minlength=pop.n) / np.maximum(
        1, np.bincount(hist.sub, minlength=pop.n)
    )
    median = float(np.median(per_sub[pop.propensity > 0]))
    rows.append(
        (
            "why: engagers' median interaction rate per push",
            _pct(median),
            f"5 misses in a row: {100 * (1 - median) ** FATIGUE_AFTER:.0f} %",
            "",
            "",
        )
    )
    never = ~engaged
    for after, rest in ((5, 3), (10, 14), (20, 14), (20, 3)):
        sent = fatigue_sent(pop, hist, after=after, rest=timedelta(days=rest))
        fewer = 1 - (never & sent).sum() / max(1, never.sum())
        lost = 1 - (hist.clicked & sent).sum() / max(1, hist.clicked.sum())
        rows.append(
            (
                f"why: fatigue after {after}, rest {rest}d",
                f"{100 * fewer:.1f} % fewer",
                f"{100 * lost:.1f} % lost",
                "",
                "",
            )
        )
    return rows


async def through_store(
    pop: Population, hist: History, days: int
) -> tuple[IntArray, CampaignRun, CampaignRun]:
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-engagement-"))
    async with bench_database(tmp, "momentcast_engagement") as database:
        await migrations.migrate(database.dsn)
        pool = await create_pool(database.dsn, min_size=1, max_size=4)
        try:
            started = time.perf_counter()
            async with pool.acquire() as conn:
                await store_history(conn, pop, hist)
            print(f"stored through PostgreSQL in {time.perf_counter() - started:.1f} s")
            ctx = bench_context(pool, database.dsn, tmp)
            local = await run_campaign(ctx, "local", campaign_day(days))
            optimal = await run_campaign(ctx, "optimal", campaign_day(days))
            planned = await stored_plan(pool, pop)
        finally:
            await pool.close()
    return planned, optimal, local


async def main(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    pop = population(args.subscribers, rng)
    hist = history(pop, args.days, rng)
    print(
        f"{pop.n} subscribers in {len(ZONES)} zones, {int((pop.propensity == 0).sum())} never "
        f"engage; {args.days} days: {len(hist.sub)} pushes, {int(hist.clicked.sum())} "
        f"interactions ({time.perf_counter() - started:.1f} s)"
    )
    planned, optimal, local = await through_store(pop, hist, args.days)
    counts = local_click_counts(pop, hist, args.days)
    differ = int((plan_in_memory(counts) != planned).sum())
    print(f"the stored plan and choose_hours on the history counted here differ for {differ}")
    st = sendtime_figures(pop, planned)
    fixed_of = rng.integers(0, 2, pop.n)  # allocation: fixed, deterministic per subscriber
    rules = adaptive_regret(pop, hist, fixed_of, rng)
    campaign, best = experiment_regret(pop, fixed_of, rng)
    sent = fatigue_sent(pop, hist)
    print()
    print_table(
        sendtime_rows(st, pop.n)
        + campaign_rows(optimal, local)
        + regret_rows(rules, campaign, best)
        + fatigue_rows(pop, hist, sent)
    )
    print()
    earlier = earlier_counts(pop, EARLIER_DAYS, np.random.default_rng(args.seed + 1))
    print_table(why_sendtime(pop, counts, earlier) + why_rows(pop, hist))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=23)
    sys.exit(asyncio.run(main(parser.parse_args())))
