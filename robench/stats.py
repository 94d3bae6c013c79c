"""The statistics robench reports: exact binomial intervals and exact one-sided tests.

* ``clopper_pearson``: the interval on a rate (robust accuracy, adversarial risk, certified accuracy);
* ``sign_test`` / ``paired``: two outcomes on the *same* examples (two attacks, two epsilons), the
  exact McNemar test, used by the diagnostics;
* ``fisher_one_sided``: two rates on *different* samples (a run against a baseline), used by the gate.
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def clopper_pearson(successes, trials, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval for the success rate (Clopper & Pearson 1934).

    Lower = Beta(α/2; k, n−k+1) quantile, upper = Beta(1−α/2; k+1, n−k) quantile, with the
    conventions lower = 0 at k = 0 and upper = 1 at k = n. Vectorised over arrays.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= successes <= trials")
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    low = np.where(n > 0, low, 0.0)
    high = np.where(n > 0, high, 1.0)
    return low, high


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(X >= wins) for X ~ Binomial(wins + losses, 1/2).

    McNemar's exact test on paired outcomes: only the discordant examples carry information.
    """
    if wins <= 0:
        return 1.0
    return float(stats.binom.sf(wins - 1, wins + losses, 0.5))


def paired(first, second) -> tuple[int, int, float]:
    """Paired comparison of two boolean outcomes on the same examples: how many only ``first``
    has, how many only ``second`` has, and the one-sided sign test that ``first`` has more."""
    first_only = int((first & ~second).sum())
    second_only = int((second & ~first).sum())
    return first_only, second_only, sign_test(first_only, second_only)


def fisher_one_sided(k_a: int, n_a: int, k_b: int, n_b: int, *, alternative: str) -> float:
    """One-sided Fisher exact p-value that rate a = k_a / n_a is ``"less"`` or ``"greater"`` than rate b."""
    table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
    return float(stats.fisher_exact(table, alternative=alternative).pvalue)
