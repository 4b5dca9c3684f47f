"""One-sided permutation tests between methods (section 4.1: 5 runs, significance level 2.5%).

For two methods with scores ``a`` (higher mean) and ``b``, the statistic is
``mean(a) - mean(b)`` and the p-value the share of the ``C(n_a + n_b, n_a)`` re-splits of the pooled
scores whose statistic is at least the observed one (``scipy.stats.permutation_test``,
``permutation_type="independent"``, ``alternative="greater"``, exact enumeration).  With 5 vs 5 runs
there are 252 splits and the smallest p-value is 1/252 ~ 0.004; with 3 vs 3 it is 1/20 = 0.05, so
fewer than 5 (4 vs 4: 1/70 ~ 0.014 is the least that can pass) seeds rarely or never reach 2.5%.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np
import pandas as pd
from scipy import stats as sps

ALPHA = 0.025


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def permutation_p(a, b, max_exact: int = 100_000) -> float:
    """One-sided p-value of ``mean(a) > mean(b)`` (exact when the splits number <= ``max_exact``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    if min(len(a), len(b)) < 2:  # scipy wants two or more per sample; enumerate directly
        return brute_force_p(a, b)
    n_splits = comb(len(a) + len(b), len(a))
    res = sps.permutation_test(
        (a, b), _mean_diff, permutation_type="independent", alternative="greater", vectorized=True,
        n_resamples=np.inf if n_splits <= max_exact else 99_999, random_state=0,
    )
    return float(res.pvalue)


def brute_force_p(a, b) -> float:
    """The same p-value by enumerating every split of the pooled scores (a reference for tests)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    hits = total = 0
    for idx in combinations(range(len(pooled)), len(a)):
        mask = np.zeros(len(pooled), bool)
        mask[list(idx)] = True
        stat = pooled[mask].mean() - pooled[~mask].mean()
        hits += stat >= observed - 1e-12 * max(1.0, abs(observed))
        total += 1
    return hits / total


def min_p_value(n_a: int, n_b: int) -> float:
    """The smallest p-value an exact test of ``n_a`` vs ``n_b`` runs can give."""
    return 1.0 / comb(n_a + n_b, n_a)


def pairwise_tests(scores: pd.DataFrame, value: str = "best_test", group: str = "method") -> pd.DataFrame:
    """For every pair of methods: which has the higher mean, and the one-sided p-value of that."""
    groups = {k: g[value].to_numpy() for k, g in scores.groupby(group)}
    rows = []
    for m1, m2 in combinations(sorted(groups), 2):
        hi, lo = (m1, m2) if groups[m1].mean() >= groups[m2].mean() else (m2, m1)
        rows.append({"higher": hi, "lower": lo, "diff": groups[hi].mean() - groups[lo].mean(),
                     "p": permutation_p(groups[hi], groups[lo]), "n_higher": len(groups[hi]),
                     "n_lower": len(groups[lo])})
    return pd.DataFrame(rows)


def worse_than_best(scores: pd.DataFrame, value: str = "best_test", group: str = "method",
                    alpha: float = ALPHA) -> dict[str, float]:
    """p-value of "best method > m" for every other method ``m`` (significant when ``p < alpha``)."""
    means = scores.groupby(group)[value].mean()
    if means.empty:
        return {}
    best = means.idxmax()
    a = scores.loc[scores[group] == best, value].to_numpy()
    return {m: permutation_p(a, scores.loc[scores[group] == m, value].to_numpy())
            for m in means.index if m != best}


__all__ = ["ALPHA", "permutation_p", "brute_force_p", "min_p_value", "pairwise_tests", "worse_than_best"]
