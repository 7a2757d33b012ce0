"""Presence expires (policy `presence_timeout`) and an `enter` rule that stays silent because
the subscriber is already inside says `not_triggered`, on a controlled clock: every signal
carries its own `at`, nothing reads the wall clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.errors import RuleLoadError
from service.rules import Profile, Ruleset, Signal, load_ruleset
from service.rules.backtest import Backtest
from service.rules.engine import Outcome, SubscriberState, decide
from service.rules.models import policy_json_schema
from service.rules.replay import replay, replay_rows
from tests.rules.rulekit import POLICY, write_dir

LAT, LON = 52.52, 13.405
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # Monday 11:00 in Berlin
PLACES: dict[str, list[dict[str, object]]] = {
    "shops": [
        {
            "type": "Feature",
            "properties": {"id": "shop", "name": "Shop"},
            "geometry": {"type": "Point", "coordinates": [LON, LAT]},
        }
    ]
}
ENTER = (
    "trigger: enter\nwhere: {places: places/shops.geojson, radius_m: 100}\n"
    'message: {title: "At {place.name}", ttl: 1h}\n'
)


def inside(at: datetime, sub: str = "s") -> Signal:
    return Signal(sub, LAT, LON, at, accuracy_m=10.0)


def run(rs: Ruleset, signals: list[Signal], states: dict[str, SubscriberState]) -> list[Outcome]:
    return decide(rs, signals, {"s": Profile("s")}, states, now=None, arrival_order=True)


def test_enter_fires_again_after_the_presence_timeout(
    make_rules: Callable[..., Ruleset],
) -> None:
    rs = make_rules({"hello.yaml": ENTER}, places=PLACES)
    assert rs.policy.presence_timeout == timedelta(hours=2)
    out = run(rs, [inside(T0), inside(T0 + timedelta(hours=3))], {})
    assert [o.decision is not None for o in out] == [True, True]
    assert out[1].entered == [("hello", "shop")]


def test_enter_within_the_timeout_is_not_triggered(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"hello.yaml": ENTER}, places=PLACES)
    out = run(rs, [inside(T0), inside(T0 + timedelta(hours=1))], {})
    assert [o.decision is not None for o in out] == [True, False]
    assert out[1].silent == [("hello", "shop")]
    rows = replay_rows(rs, out, Profile("s"))
    assert rows[1]["silent"] == [{"rule": "hello", "place": "shop", "reason": "not_triggered"}]


def test_the_timeout_spans_batches_and_is_configurable(
    make_rules: Callable[..., Ruleset],
) -> None:
    """The state carried between batches (the worker's) expires the same way; a context
    signal (no location) counts as seen."""
    rs = make_rules({"hello.yaml": ENTER}, policy=POLICY + "presence_timeout: 30m\n", places=PLACES)
    states: dict[str, SubscriberState] = {}
    assert run(rs, [inside(T0)], states)[0].decision is not None
    # Seen every 20 minutes (a page without location): still inside, no new entry.
    seen = [Signal("s", None, None, T0 + timedelta(minutes=20 * i)) for i in (1, 2)]
    run(rs, seen, states)
    again = run(rs, [inside(T0 + timedelta(minutes=55))], states)[0]
    assert again.decision is None and again.silent == [("hello", "shop")]
    # Then 31 minutes without a signal: outside again, the next fix inside is an enter.
    later = run(rs, [inside(T0 + timedelta(minutes=86))], states)[0]
    assert later.entered == [("hello", "shop")] and later.decision is not None


def test_a_stale_signal_is_marked_and_triggers_nothing(
    make_rules: Callable[..., Ruleset],
) -> None:
    rs = make_rules({"hello.yaml": ENTER}, places=PLACES)
    out = decide(rs, [inside(T0)], {}, {}, now=T0 + timedelta(minutes=30))
    assert out[0].stale and out[0].decision is None and out[0].entered
    rows = replay_rows(rs, out, Profile("s"))
    assert rows[0]["silent"] == [{"rule": "hello", "place": "shop", "reason": "stale"}]


def test_backtest_counts_signals_that_arrived_stale(make_rules: Callable[..., Ruleset]) -> None:
    """Stored signals carry when they were received: the backtest (each signal judged at its
    own time) calls one stale that reached the server later than stale_after, as the worker
    did."""
    rs = make_rules({"hello.yaml": ENTER}, places=PLACES)
    late = Signal("s", LAT, LON, T0, accuracy_m=10.0, received_at=T0 + timedelta(minutes=30))
    bt = Backtest(rs)
    bt.add([late], {"s": Profile("s")})
    report = bt.report(since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1), live=[])
    (row,) = report["rules"]
    assert row["would_send"] == 0 and row["silent"] == {"stale": 1}
    # On time: it would have sent.
    bt = Backtest(rs)
    bt.add([inside(T0)], {"s": Profile("s")})
    report = bt.report(since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1), live=[])
    assert report["rules"][0]["would_send"] == 1


def test_replay_of_a_trace_with_receipt_times_shows_stale(tmp_path: Path) -> None:
    """A trace may give when each point reached the server (a recorded stream): a point that
    arrived more than stale_after late is stale in the replay, as the worker judged it."""
    rules = write_dir(tmp_path / "rules", {"hello.yaml": ENTER}, POLICY, PLACES)
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "lat,lon,time,accuracy_m,speed_mps,moment,received_at\n"
        f"{LAT},{LON},2026-03-02T10:00:00Z,10,,,2026-03-02T10:30:00Z\n"
        f"{LAT},{LON},2026-03-02T10:45:00Z,10,,,2026-03-02T10:45:02Z\n"
    )
    report = replay(str(rules), str(trace), None)
    first, second = report["rows"]
    assert first["note"] == "stale" and first["decision"] is None
    assert first["silent"] == [{"rule": "hello", "place": "shop", "reason": "stale"}]
    assert first["entered"] == ["hello@shop"]  # a stale signal still moves presence
    assert second["decision"] is None
    assert second["silent"] == [{"rule": "hello", "place": "shop", "reason": "not_triggered"}]
    assert report["summary"]["silent"] == {"not_triggered": 1, "stale": 1}


def test_rules_check_and_the_schema_know_presence_timeout(tmp_path: Path) -> None:
    bad = POLICY + "presence_timeout: 2 hours\n"
    rules = write_dir(tmp_path / "rules", {"hello.yaml": ENTER}, bad, PLACES)
    with pytest.raises(RuleLoadError) as exc:
        load_ruleset(rules)
    line = POLICY.count("\n") + 1
    assert any(
        e.startswith(f"{rules / 'policy.yaml'}:{line}: presence_timeout: bad duration")
        for e in exc.value.errors
    ), exc.value.errors
    schema = policy_json_schema()["properties"]["presence_timeout"]
    assert schema["default"] == "PT2H" and "not seen" in schema["description"]
