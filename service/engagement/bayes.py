"""Beta posteriors of interactions per sent push, and what campaigns and rules decide from them.

Each variant's rate gets the posterior Beta(1 + successes, 1 + trials - successes): a uniform
prior, so a variant with no traffic is as likely best as any other. "Most likely best" and
Thompson sampling both draw from these posteriors; callers pass the numpy Generator, so a
decision is reproducible in tests and independent between processes in production.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Monte Carlo draws for prob_best: its standard error is at most 0.5 / sqrt(draws), 0.0035 here,
# well under the two decimals results show; 20000 x a few variants costs about a millisecond.
DRAWS = 20_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _counts(successes: npt.ArrayLike, trials: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    s = np.asarray(successes, dtype=np.int64)
    t = np.asarray(trials, dtype=np.int64)
    if s.ndim != 1 or s.shape != t.shape or s.size == 0:
        raise ValueError("successes and trials must be non-empty 1-d arrays of one length")
    if (s < 0).any() or (s > t).any():
        raise ValueError("each variant needs 0 <= successes <= trials")
    return s, t


def check_min_share(min_share: float, variants: int) -> None:
    """A floor every variant keeps: together the floors may take the whole traffic, not more."""
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be between 0 and 1, not {min_share}")
    if min_share * variants > 1.0 + 1e-9:
        raise ValueError(
            f"min_share {min_share} x {variants} variants is over 1: the floors cannot all hold"
        )


def posterior_draws(
    successes: npt.ArrayLike, trials: npt.ArrayLike, size: int, rng: np.random.Generator
) -> FloatArray:
    """``size`` draws of every variant's rate: shape (size, variants)."""
    s, t = _counts(successes, trials)
    return rng.beta(1.0 + s, 1.0 + (t - s), size=(size, s.size))


def prob_best(
    successes: npt.ArrayLike,
    trials: npt.ArrayLike,
    *,
    draws: int = DRAWS,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """P(variant i has the highest rate), per variant; the values sum to 1.

    Ties between draws (probability zero with continuous posteriors) go to the first variant.
    """
    generator = rng if rng is not None else np.random.default_rng(0)
    samples = posterior_draws(successes, trials, draws, generator)
    wins = np.bincount(samples.argmax(axis=1), minlength=samples.shape[1])
    result: FloatArray = wins / float(draws)
    return result


def thompson_shares(
    successes: npt.ArrayLike,
    trials: npt.ArrayLike,
    *,
    min_share: float,
    draws: int = DRAWS,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """The share of pushes each variant gets from :func:`thompson_pick`: a floor of
    ``min_share`` each, the rest by the probability of being best."""
    s, _ = _counts(successes, trials)
    check_min_share(min_share, s.size)
    best = prob_best(successes, trials, draws=draws, rng=rng)
    shares: FloatArray = min_share + (1.0 - min_share * s.size) * best
    return shares


def thompson_pick(
    successes: npt.ArrayLike,
    trials: npt.ArrayLike,
    size: int,
    *,
    min_share: float,
    rng: np.random.Generator,
) -> IntArray:
    """A variant index for each of ``size`` pushes, in one vectorised pass.

    A push explores (a variant at random, uniformly) with probability ``variants * min_share``,
    which gives every variant at least ``min_share`` whatever the posteriors say, so a variant
    that started badly keeps being measured; otherwise it takes the variant whose posterior draw
    is highest (Thompson sampling), which sends each variant in proportion to the probability
    that it is the best.
    """
    s, _ = _counts(successes, trials)
    check_min_share(min_share, s.size)
    if size <= 0:
        return np.zeros(0, dtype=np.int64)
    greedy: IntArray = posterior_draws(successes, trials, size, rng).argmax(axis=1)
    explore = rng.random(size) < min_share * s.size
    uniform = rng.integers(0, s.size, size=size)
    picks: IntArray = np.where(explore, uniform, greedy).astype(np.int64)
    return picks
