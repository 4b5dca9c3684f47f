"""Chapter 05's tables from an operations table: families, Spearman per family, the pair matrix."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

from paperlib.rewire import report
from paperlib.rewire.operations import expand
from paperlib.rewire.pipeline import COLUMNS


def synthetic_table(n=6, seed=0):
    rng = np.random.default_rng(seed)
    ops = expand(["swap_all", "delete", "delete_span", "parallel", "repeat"], n)
    rows = []
    for op in ops:
        kl = rng.uniform(0.01, 1.0)
        rows.append({"op": op.op, "i": op.i, "j": op.j, "delta": kl, "delta_out": kl, "kl": kl, "dnll": kl / 2,
                     "r": kl if op.op == "swap" and op.j == op.i + 1 else np.nan,
                     "linear": kl * 2, "block_influence": -kl, "angular_distance": rng.uniform(),
                     "relative_update": kl})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["j"] = table["j"].astype("Int64")
    return table


def test_families_and_spearman_signs():
    table = synthetic_table()
    assert len(report.family(table, "swap")) == 5 and len(report.family(table, "swap_all")) == 15
    assert len(report.family(table, "delete")) == 6 and len(report.family(table, "delete_span")) == 5 + 4
    long = report.spearman_long(table, n_resamples=50)
    get = lambda f, p: long.query("family == @f and predictor == @p")["rho"].iloc[0]
    assert np.isclose(get("delete", "linear"), 1.0) and np.isclose(get("delete", "block_influence"), -1.0)
    assert np.isclose(get("swap", "r"), 1.0)
    assert set(long.query("predictor == 'r'")["family"]) == {"swap"}  # r: adjacent swaps only
    grid = report.spearman_grid(long)
    assert grid.loc[report.LABELS["linear"], report.FAMILY_LABELS["delete"]].startswith("1.00 [")
    assert grid.loc[report.LABELS["r"], report.FAMILY_LABELS["delete"]] == ""  # r is for swaps only
    assert report.best_predictors(long)["delete"] in {"linear", "relative_update"}
    report.styled_grid(long).to_html()


def test_pair_matrix_and_figures():
    table = synthetic_table()
    mat = report.pair_matrix(table)
    sw = report.family(table, "swap_all")
    assert mat.shape == (6, 6) and mat.notna().sum().sum() == len(sw)
    row = sw.iloc[3]
    assert mat.loc[int(row["i"]), int(row["j"])] == row["kl"]
    assert np.isnan(mat.loc[3, 2])  # only i < j
    report.swap_heatmap(table)
    report.cost_vs_predictor(table, predictor=report.best_predictors(report.spearman_long(table, n_resamples=20)))
    report.layer_profile(table)
    assert "table-scroll" in report.show_table(report.cheapest(table, "delete")).data


def test_vectorised_bootstrap_statistic_is_scipys_spearman():
    """paperlib.swap.stats computes every resample's rho at once; it must equal spearmanr row by row
    (ties and constant rows included), so the intervals are the same as one call per resample."""
    from scipy import stats

    from paperlib.swap.stats import _rank_correlation

    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, size=(200, 12)).astype(float)  # many ties
    b = a + rng.normal(size=a.shape)
    a[0] = 1.0  # a constant resample: undefined rho
    got = _rank_correlation(a, b)
    want = np.array([stats.spearmanr(x, y).statistic if np.ptp(x) else np.nan for x, y in zip(a, b)])
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[0])
