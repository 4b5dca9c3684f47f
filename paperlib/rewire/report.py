"""Tables and figures of chapter 05, from the operations table of :func:`run_rewire_analysis`.

The table has one row per operation (``op, i, j``, layers from 1), the costs
(:data:`paperlib.rewire.costs.COSTS`) and the predictors (:data:`paperlib.rewire.predictors.PREDICTORS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats

from paperlib.rewire.operations import KINDS, family_mask
from paperlib.rewire.predictors import PREDICTORS
from paperlib.swap.stats import spearman
from paperlib.swap.report import show_table  # noqa: F401  (the book's one scroll-box table, used by chapter 05)

#: how the families and columns read in the book
FAMILY_LABELS = {
    "swap": "swap (i, i+1)",
    "swap_all": "swap (i, j), all pairs",
    "delete": "delete (i)",
    "delete_span": "delete (i..j)",
    "parallel": "parallel, sum",
    "parallel_mean": "parallel, mean",
    "repeat": "repeat (i)",
}
LABELS = {
    "delta": "delta (eq. 2, span end)",
    "delta_out": "last hidden state change",
    "kl": "KL(original || rewired), nats/token",
    "dnll": "change of mean NLL, nats/token",
    "r": "r (eq. 1)",
    "linear": "linear prediction (eq. 16 generalised)",
    "block_influence": "Block Influence (ShortGPT)",
    "angular_distance": "angular distance (Gromov et al.)",
    "relative_update": "relative update",
}


#: predictors defined for some families only (r: adjacent swaps, eq. 1)
ONLY_FOR = {"r": ("swap",)}


def family(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of one operation family (see :data:`paperlib.rewire.operations.KINDS`)."""
    return table[family_mask(kind, table["op"], table["i"], table["j"])]


def present_kinds(table: pd.DataFrame, kinds: Sequence[str] | None = None) -> list[str]:
    kinds = list(KINDS) if kinds is None else list(kinds)
    return [k for k in kinds if len(family(table, k))]


def spearman_long(table: pd.DataFrame, cost: str = "kl", kinds: Sequence[str] | None = None,
                  predictors: Sequence[str] = PREDICTORS, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Spearman's rho of every predictor with ``cost`` within every family, with its p-value and
    95% percentile bootstrap interval (:func:`paperlib.swap.stats.spearman`); one row per pair of
    family and predictor that has at least 3 operations and a predictor that varies."""
    rows = []
    for kind in present_kinds(table, kinds):
        fam = family(table, kind)
        for p in predictors:
            if kind not in ONLY_FOR.get(p, (kind,)):
                continue
            ok = fam[[p, cost]].dropna()
            if len(ok) < 3 or ok[p].nunique() < 2 or ok[cost].nunique() < 2:
                continue
            c = spearman(ok[p], ok[cost], n_resamples=n_resamples, seed=seed)
            rows.append({"family": kind, "predictor": p, "cost": cost, "rho": c.rho, "ci_low": c.ci_low,
                         "ci_high": c.ci_high, "p_value": c.pvalue, "n": c.n})
    return pd.DataFrame(rows, columns=["family", "predictor", "cost", "rho", "ci_low", "ci_high", "p_value", "n"])


def spearman_grid(long: pd.DataFrame) -> pd.DataFrame:
    """Predictor x family, each cell ``rho [low, high]`` (empty where it does not apply; with very
    few operations some bootstrap resamples repeat one operation and the interval is undefined)."""
    if long.empty:
        return pd.DataFrame()
    cell = long.assign(text=[f"{r:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi)
                             else f"{r:.2f} (n = {n}: no interval)" for r, lo, hi, n in
                             zip(long["rho"], long["ci_low"], long["ci_high"], long["n"])])
    grid = cell.pivot(index="predictor", columns="family", values="text")
    grid = grid.reindex(index=[p for p in PREDICTORS if p in grid.index],
                        columns=[k for k in KINDS if k in grid.columns])
    return grid.rename(index=LABELS, columns=FAMILY_LABELS).fillna("")


def styled_grid(long: pd.DataFrame):
    """:func:`spearman_grid` as a pandas Styler, cells coloured by rho (red high, blue low)."""
    grid = spearman_grid(long)
    rho = long.pivot(index="predictor", columns="family", values="rho")
    rho = rho.reindex(index=[p for p in PREDICTORS if p in rho.index], columns=[k for k in KINDS if k in rho.columns])
    rho = rho.rename(index=LABELS, columns=FAMILY_LABELS)
    cmap = plt.get_cmap("RdBu_r")

    def colour(v):
        if pd.isna(v):
            return ""
        r, g, b, _ = cmap((v + 1) / 2)
        return f"background-color: rgba({int(255 * r)}, {int(255 * g)}, {int(255 * b)}, 0.55)"

    styles = rho.map(colour).reindex(index=grid.index, columns=grid.columns).fillna("")
    return grid.style.apply(lambda _: styles, axis=None)


def pair_matrix(table: pd.DataFrame, cost: str = "kl") -> pd.DataFrame:
    """Swap costs as a layer x layer matrix (row i, column j, i < j; NaN elsewhere)."""
    sw = family(table, "swap_all")
    n = int(max(sw["j"].max(), sw["i"].max())) if len(sw) else 0
    mat = pd.DataFrame(np.nan, index=range(1, n + 1), columns=range(1, n + 1))
    for i, j, v in zip(sw["i"], sw["j"], sw[cost]):
        mat.loc[int(i), int(j)] = v
    return mat


def swap_heatmap(table: pd.DataFrame, cost: str = "kl", title: str = "", ax=None, log: bool = True):
    """Heat map of the cost of ``swap(i, j)`` over all pairs ``i < j``."""
    from matplotlib.colors import LogNorm

    mat = pair_matrix(table, cost)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 6.2))
    vals = mat.to_numpy()
    pos = vals[np.isfinite(vals) & (vals > 0)]
    norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if log and len(pos) else None
    sns.heatmap(mat, ax=ax, cmap="magma_r", norm=norm, square=True, linewidths=0,
                cbar_kws={"label": LABELS.get(cost, cost) + (" (log scale)" if norm is not None else "")})
    ax.set_xlabel("second layer j (1-based)")
    ax.set_ylabel("first layer i (1-based)")
    ax.set_title(title or f"cost of swap(i, j): {LABELS.get(cost, cost)}")
    return ax


def best_predictors(long: pd.DataFrame) -> dict[str, str]:
    """The predictor with the largest Spearman rho in every family of :func:`spearman_long`."""
    if long.empty:
        return {}
    top = long.sort_values("rho", ascending=False).drop_duplicates("family")
    return dict(zip(top["family"], top["predictor"]))


def cost_vs_predictor(table: pd.DataFrame, cost: str = "kl", predictor: str | dict[str, str] = "linear",
                      kinds: Sequence[str] | None = None, label_top: int = 3):
    """One panel per family: ``cost`` against ``predictor`` (one name, or one per family as from
    :func:`best_predictors`; log-log), the ``label_top`` costliest operations labelled, Spearman's
    rho in the title."""
    kinds = present_kinds(table, kinds)
    if isinstance(predictor, dict):
        kinds = [k for k in kinds if k in predictor]
    choose = (lambda k: predictor[k]) if isinstance(predictor, dict) else (lambda k: predictor)
    ncols = min(3, len(kinds))
    nrows = int(np.ceil(len(kinds) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        predictor_k = choose(kind)
        fam = family(table, kind)[["op", "i", "j", predictor_k, cost]].dropna(subset=[predictor_k, cost])
        ax.scatter(fam[predictor_k], fam[cost].clip(lower=1e-6), s=14, alpha=0.8)
        for _, row in fam.nlargest(label_top, cost).iterrows():
            name = f"{int(row['i'])}" if pd.isna(row["j"]) else f"{int(row['i'])},{int(row['j'])}"
            ax.annotate(name, (row[predictor_k], max(row[cost], 1e-6)), fontsize=7, xytext=(3, 2),
                        textcoords="offset points")
        if (fam[predictor_k] > 0).all() and len(fam):
            ax.set_xscale("log")
        ax.set_yscale("log")
        rho = ""
        if len(fam) >= 3 and fam[predictor_k].nunique() > 1:
            rho = f", rho = {stats.spearmanr(fam[predictor_k], fam[cost]).statistic:.2f}"
        ax.set_title(f"{FAMILY_LABELS.get(kind, kind)}{rho}", fontsize=10)
        ax.set_xlabel(LABELS.get(predictor_k, predictor_k), fontsize=8)
        ax.set_ylabel(LABELS.get(cost, cost), fontsize=8)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def layer_profile(table: pd.DataFrame, cost: str = "kl", kinds: Sequence[str] = ("delete", "parallel",
                  "parallel_mean", "repeat"), ax=None, annotate: int = 3):
    """Cost of every single-layer (or adjacent-pair) operation against its first layer ``i``; the
    ``annotate`` cheapest deletions are labelled."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8))
    for kind in present_kinds(table, kinds):
        fam = family(table, kind).sort_values("i")
        ax.plot(fam["i"], fam[cost].clip(lower=1e-6), marker="o", ms=3, label=FAMILY_LABELS.get(kind, kind))
    dele = family(table, "delete")
    for _, row in dele.nsmallest(annotate, cost).iterrows():
        ax.annotate(f"delete {int(row['i'])}", (row["i"], max(row[cost], 1e-6)), fontsize=7, xytext=(0, -12),
                    textcoords="offset points", ha="center")
    ax.set_yscale("log")
    ax.set_xlabel("layer i (1-based; parallel: i and i+1)")
    ax.set_ylabel(LABELS.get(cost, cost))
    ax.legend(fontsize=8)
    return ax


def cheapest(table: pd.DataFrame, kind: str, cost: str = "kl", k: int = 5) -> pd.DataFrame:
    """The ``k`` operations of a family with the smallest cost."""
    return family(table, kind).nsmallest(k, cost)[["op", "i", "j", "kl", "dnll", "delta"]]


