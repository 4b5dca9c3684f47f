"""Permutation test against brute-force enumeration; ARI of separable clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paperlib.loraild.clusters import ari_of_kmeans
from paperlib.loraild.stats import brute_force_p, min_p_value, pairwise_tests, permutation_p, worse_than_best


@pytest.mark.parametrize("seed", range(4))
def test_permutation_p_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.8, 0.02, 5)
    b = rng.normal(0.78, 0.02, 5)
    assert permutation_p(a, b) == pytest.approx(brute_force_p(a, b), abs=1e-12)
    a3, b4 = rng.normal(size=3), rng.normal(size=4)
    assert permutation_p(a3, b4) == pytest.approx(brute_force_p(a3, b4), abs=1e-12)


def test_permutation_p_with_ties_matches_brute_force():
    a = [0.7, 0.7, 0.8, 0.75, 0.7]
    b = [0.7, 0.65, 0.7, 0.7, 0.6]
    assert permutation_p(a, b) == pytest.approx(brute_force_p(a, b), abs=1e-12)


def test_exact_5_vs_5_reaches_the_smallest_p():
    a, b = [0.9, 0.91, 0.92, 0.93, 0.94], [0.1, 0.2, 0.3, 0.4, 0.5]
    assert permutation_p(a, b) == pytest.approx(1 / 252)
    assert min_p_value(5, 5) == pytest.approx(1 / 252) and min_p_value(5, 5) < 0.025
    assert min_p_value(3, 3) == pytest.approx(0.05) and min_p_value(3, 3) > 0.025
    assert permutation_p([3, 2, 1], [0, -1, -2]) == pytest.approx(0.05)


def test_pairwise_and_best_tests():
    rng = np.random.default_rng(0)
    rows = [{"method": m, "seed": s, "best_test": mu + 0.001 * rng.normal()}
            for m, mu in (("x", 0.9), ("y", 0.5), ("z", 0.9005)) for s in range(5)]
    df = pd.DataFrame(rows)
    pw = pairwise_tests(df)
    assert len(pw) == 3 and (pw["diff"] >= 0).all()
    p = worse_than_best(df)
    assert set(p) == {"x", "y"} or set(p) == {"y", "z"}
    assert p["y"] == pytest.approx(1 / 252)


def test_ari_of_separable_clusters_is_one_and_of_noise_near_zero():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    centres = np.array([[0, 0, 0, 0], [10, 10, 0, 0], [0, 10, 10, 10]])
    x = centres[labels] + rng.normal(0, 0.5, (120, 4))
    assert ari_of_kmeans(x, labels) == pytest.approx(1.0)
    # permuted label names do not matter; a 3-d feature per example (flattened) is accepted
    assert ari_of_kmeans(x.reshape(120, 2, 2), 2 - labels) == pytest.approx(1.0)
    noise = rng.normal(size=(120, 4))
    assert abs(ari_of_kmeans(noise, labels)) < 0.1
