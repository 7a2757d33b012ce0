"""Adaptive rule variants in the pure engine and in `rules check`: Thompson sampling over the
counts the caller passes (here made up; the worker's come from PostgreSQL, tests/worker/
test_worker_adaptive.py), min_share kept, fixed allocation untouched, errors at file:line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.rules import RuleLoadError, Ruleset, Signal
from service.rules.adaptive import Posteriors, arm_counts
from service.rules.engine import Profile, SubscriberState, decide, rule_variant
from service.rules.models import json_schema
from tests.rules.rulekit import write_dir

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def offer(allocation: str = "", extra: str = "") -> str:
    """A location-free rule firing on every signal; lines 1-7 as numbered below."""
    return (
        "trigger: signal\n"  # 1
        "message: {title: Offer A}\n"  # 2
        "variants:\n"  # 3
        "  - {name: a, weight: 50}\n"  # 4
        "  - {name: b, weight: 50, message: {title: Offer B}}\n"  # 5
        + allocation  # 6
        + extra  # 7
    )


def signals(n: int, at: datetime = NOW) -> list[Signal]:
    return [Signal(f"sub-{i}", None, None, at) for i in range(n)]


def variants_sent(rs: Ruleset, sigs: list[Signal], posteriors: Posteriors | None) -> dict[str, str]:
    states: dict[str, SubscriberState] = {}
    profiles = {s.subscription_id: Profile(s.subscription_id) for s in sigs}
    out = decide(rs, sigs, profiles, states, NOW, posteriors=posteriors)
    return {o.signal.subscription_id: o.decision.variant for o in out if o.decision is not None}


# b got 120 interactions of 400 pushes, a 20 of 400: b is best beyond doubt.
CLICKED_B = {("offer", "a"): (400, 20), ("offer", "b"): (400, 120)}


def test_adaptive_allocation_shifts_to_the_clicked_variant_and_keeps_min_share(
    make_rules: Callable[..., Ruleset],
) -> None:
    rs = make_rules({"offer.yaml": offer("allocation: adaptive\nmin_share: 0.15\n")})
    # rules check names the allocation in its summary line.
    assert rs.rules[0].summary(rs.places).endswith("variants a/b (adaptive, min_share 0.15)")
    sent = variants_sent(rs, signals(4000), Posteriors(CLICKED_B, np.random.default_rng(7)))
    shares = Counter(sent.values())
    assert len(sent) == 4000
    # Greedy draws all go to b; a keeps its floor (half of the 30 % explored uniformly).
    assert shares["b"] / 4000 > 0.8
    assert shares["a"] / 4000 >= 0.15 - 0.02
    # Each push's message is its variant's.
    profiles = {s.subscription_id: Profile(s.subscription_id) for s in signals(50)}
    out = decide(rs, signals(50), profiles, {}, NOW, posteriors=Posteriors(CLICKED_B, _rng()))
    for o in out:
        assert o.decision is not None
        assert o.decision.payload["title"] == {"a": "Offer A", "b": "Offer B"}[o.decision.variant]


def _rng() -> np.random.Generator:
    return np.random.default_rng(11)


def test_without_history_adaptive_splits_evenly(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"offer.yaml": offer("allocation: adaptive\n")})
    shares = Counter(variants_sent(rs, signals(4000), Posteriors({}, _rng())).values())
    assert abs(shares["a"] / 4000 - 0.5) < 0.05


def test_a_seeded_generator_draws_the_same_variants(make_rules: Callable[..., Ruleset]) -> None:
    rs = make_rules({"offer.yaml": offer("allocation: adaptive\n")})
    one = variants_sent(rs, signals(300), Posteriors(CLICKED_B, _rng()))
    two = variants_sent(rs, signals(300), Posteriors(CLICKED_B, _rng()))
    assert one == two


def test_fixed_allocation_stays_deterministic_per_subscriber(
    make_rules: Callable[..., Ruleset],
) -> None:
    # The counts are ignored for a fixed rule: each subscriber gets the hash's variant.
    rs = make_rules({"offer.yaml": offer()})
    sent = variants_sent(rs, signals(500), Posteriors(CLICKED_B, _rng()))
    rule = rs.rule_by_id["offer"]
    assert sent == {f"sub-{i}": rule_variant(f"sub-{i}", rule).name for i in range(500)}


def test_without_counts_an_adaptive_rule_shows_the_fixed_variant(
    make_rules: Callable[..., Ruleset],
) -> None:
    # simulate, replay, backtest and preview pass no counts: deterministic, the weights' pick.
    rs = make_rules({"offer.yaml": offer("allocation: adaptive\n")})
    rule = rs.rule_by_id["offer"]
    sent = variants_sent(rs, signals(200), None)
    assert sent == {f"sub-{i}": rule_variant(f"sub-{i}", rule).name for i in range(200)}


def test_a_variant_of_weight_0_is_never_drawn(make_rules: Callable[..., Ruleset]) -> None:
    extra = "  - {name: c, weight: 0, message: {title: Offer C}}\n"
    text = offer().replace("variants:\n", "variants:\n" + extra) + "allocation: adaptive\n"
    rs = make_rules({"offer.yaml": text})
    counts = {("offer", "c"): (10, 10)}  # history from when c was on
    shares = Counter(variants_sent(rs, signals(2000), Posteriors(counts, _rng())).values())
    assert set(shares) == {"a", "b"}


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), min_size=2, max_size=6),
    floor=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_drawn_shares_keep_every_floor(
    counts: list[tuple[int, int]], floor: float, seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever the history (even counts from a roll-up that estimate more interactions than
    sends), every variant keeps min_share of many draws, within sampling error."""
    from service.engagement.bayes import thompson_pick, thompson_shares
    from service.rules import load_ruleset

    n = len(counts)
    floor = min(floor, 1.0 / n)
    names = [f"v{i}" for i in range(n)]
    lines = "".join(f"  - {{name: {v}, weight: 1}}\n" for v in names)
    text = f"trigger: signal\nmessage: {{title: T}}\nvariants:\n{lines}allocation: adaptive\n"
    text += f"min_share: {floor!r}\n"
    rs = load_ruleset(write_dir(tmp_path_factory.mktemp("r") / "rules", {"r.yaml": text}))
    rule = rs.rule_by_id["r"]
    given_counts = {("r", v): (sent, hits) for v, (sent, hits) in zip(names, counts, strict=True)}
    idx, hits, sent = arm_counts(rule, given_counts)
    assert idx == list(range(n)) and (hits <= sent).all()
    shares = thompson_shares(
        hits, sent, min_share=floor, draws=2000, rng=np.random.default_rng(seed)
    )
    assert shares.sum() == pytest.approx(1.0)
    assert (shares >= floor - 1e-12).all()
    size = 20_000
    picks = thompson_pick(hits, sent, size, min_share=floor, rng=np.random.default_rng(seed))
    drawn = np.bincount(picks, minlength=n) / size
    # Binomial sampling error at 20000 draws is under 0.004; 0.02 is five times that.
    assert (drawn >= floor - 0.02).all()


# ---- rules check: allocation and min_share, errors at file:line


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RuleLoadError) as exc:
        from service.rules import load_ruleset

        load_ruleset(write_dir(tmp_path / "rules", {"offer.yaml": text}))
    return exc.value.errors


def test_min_share_without_adaptive_is_an_error_at_its_line(tmp_path: Path) -> None:
    assert errors(tmp_path, offer("min_share: 0.2\n")) == [
        f"{tmp_path}/rules/offer.yaml:6: min_share: only used with allocation: adaptive "
        "(fixed allocation follows the weights)"
    ]


def test_adaptive_needs_two_variants_that_can_send(tmp_path: Path) -> None:
    text = "trigger: signal\nmessage: {title: Offer}\nallocation: adaptive\n"
    assert errors(tmp_path, text) == [
        f"{tmp_path}/rules/offer.yaml:3: allocation: adaptive needs at least 2 variants with a "
        "weight over 0 (has 0)"
    ]
    off = offer("allocation: adaptive\n").replace("weight: 50}", "weight: 0}", 1)
    assert errors(tmp_path, off) == [
        f"{tmp_path}/rules/offer.yaml:6: allocation: adaptive needs at least 2 variants with a "
        "weight over 0 (has 1)"
    ]


def test_floors_over_the_whole_traffic_are_an_error(tmp_path: Path) -> None:
    assert errors(tmp_path, offer("allocation: adaptive\n", "min_share: 0.6\n")) == [
        f"{tmp_path}/rules/offer.yaml:7: min_share: 0.6 for each of 2 variants is 1.2 of the "
        "pushes, over 1: lower min_share"
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("allocation: thompson\n", "allocation: Input should be 'fixed' or 'adaptive'"),
        ("min_share: 0\n", "min_share: Input should be greater than 0"),
        ("min_share: 1.5\n", "min_share: Input should be less than or equal to 1"),
    ],
)
def test_bad_values_are_errors_at_their_line(tmp_path: Path, line: str, message: str) -> None:
    assert errors(tmp_path, offer(line)) == [f"{tmp_path}/rules/offer.yaml:6: {message}"]


def test_the_schema_knows_allocation_and_min_share() -> None:
    props = json_schema()["properties"]
    assert props["allocation"]["enum"] == ["fixed", "adaptive"]
    assert props["allocation"]["default"] == "fixed"
    assert props["min_share"]["default"] == 0.1
    assert props["min_share"]["exclusiveMinimum"] == 0
    assert props["min_share"]["maximum"] == 1
