"""Formatting helpers of chapters 02-03: labelled points, HTML tables, comparison tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from paperlib.swap.analysis import SwapResult  # noqa: E402
from paperlib.swap.literal_fit import fit_unsquared  # noqa: E402
from paperlib.swap.report import (correlation_vs_paper, figure2, labelled_pairs, literal_fit_comparison,  # noqa: E402
                                  scroll_box)
from paperlib.swap.stats import spearman  # noqa: E402


def _pairs() -> pd.DataFrame:
    r = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.35])
    delta = np.array([1.0, 2, 3, 4, 5, 6, 7.5, 8, 9, 10, 7.0])  # the last pair: small r, large delta
    n = len(r)
    return pd.DataFrame({"i": np.arange(1, n + 1), "j": np.arange(2, n + 2), "r": r, "delta": delta})


def test_labelled_pairs_include_the_rank_outlier():
    pairs = _pairs()
    named = labelled_pairs(pairs, "r", "delta", top=2)
    assert 10 in named.index  # r = 0.35, delta = 7: ranks disagree most
    assert {9, 8} <= set(named.index)  # largest r and largest delta


def test_figure2_labels_every_named_pair_and_has_a_colorbar():
    pairs = _pairs()
    ax = figure2(pairs, "test")
    texts = {t.get_text() for t in ax.texts}
    assert "(11,12)" in texts and "(10,11)" in texts
    assert len(ax.figure.axes) == 2  # the plot and its colorbar
    assert "eq. 1" in ax.get_xlabel() and "eq. 2" in ax.get_ylabel()


def test_scroll_box_is_an_html_table_in_a_scrolling_box():
    html = scroll_box(pd.DataFrame({"a": [1.23456]}), caption="cap")
    assert "<table" in html and "overflow-x: auto" in html and "cap" in html and "|---" not in html
    assert "1.235" in html


def test_correlation_vs_paper_rows():
    c = spearman([1, 2, 3, 4, 5], [1, 3, 2, 5, 4])
    t = correlation_vs_paper(c, 0.91, "model on text")
    assert t.iloc[0, 0] == c.rho and t.iloc[1, 0] == 0.91
    assert t.index[1].startswith("paper")


def test_literal_fit_comparison_uses_both_maps_on_the_same_delta():
    rng = np.random.default_rng(0)
    fits = []
    for _ in range(4):
        x = rng.normal(size=(60, 3))
        y = x @ rng.normal(size=(3, 3)) + rng.standard_t(2, size=(60, 3))
        fits.append(fit_unsquared(torch.tensor(x), torch.tensor(y), iters=20))
    swaps = SwapResult(delta=[0.1, 0.3, 0.2], delta_lin=[0.0, 0.0, 0.0], r2_heldout=[0.0] * 4, n_tokens=10)
    pairs, summary = literal_fit_comparison(fits, swaps, 60)
    assert list(pairs["delta"]) == swaps.delta
    assert summary.iloc[1]["mean ‖residual‖ (eq. 12 literal)"] <= summary.iloc[0]["mean ‖residual‖ (eq. 12 literal)"]
    assert summary.iloc[0]["Spearman ρ(r, δ)"] == spearman(pairs["r_ls"], pairs["delta"]).rho
