"""Tables and figures of chapters 02-03 (paper A, Figures 2-4), from a swap table.

The table is the one ``run_swap_analysis`` returns: one row per adjacent pair with columns
``i, j, trans_i, trans_j, dep_ij, dep_ji, r, delta, delta_lin`` and the baseline predictors.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from paperlib.swap.analysis import BASELINES
from paperlib.swap.stats import spearman

#: the paper's reported values (GPT-2 Large on webtext, sections 4.2-4.4)
PAPER_RESULTS = {
    "spearman_r_delta": 0.91,
    "spearman_delta_lin_delta": 0.91,
    "dominant_pairs": {(1, 2): "trans_i", (35, 36): "trans_j", (17, 18): "dep_ij"},
}

COMPONENTS = ("trans_i", "trans_j", "dep_ij", "dep_ji")
COMPONENT_LABELS = {
    "trans_i": "Trans(i)",
    "trans_j": "Trans(i+1)",
    "dep_ij": "Dep(i, i+1)",
    "dep_ji": "Dep(i+1, i)",
}


def predictor_table(pairs: pd.DataFrame, target: str = "delta", seed: int = 0) -> pd.DataFrame:
    """Spearman of each predictor of ``target``: the paper's ``r``, its linearised ``delta'``
    and the baselines of the layer-pruning literature."""
    rows = []
    names = ["r", "delta_lin", *[b for b in BASELINES if b in pairs]]
    for name in names:
        c = spearman(pairs[name], pairs[target], seed=seed)
        rows.append({"predictor": name, "spearman": c.rho, "p_value": c.pvalue,
                     "ci_low": c.ci_low, "ci_high": c.ci_high, "n_pairs": c.n})
    return pd.DataFrame(rows).set_index("predictor")


def dominant_components(pairs: pd.DataFrame) -> pd.DataFrame:
    """For every pair, the component of ``r`` (eq. 1) that stands out most.

    Each component is compared with its own typical size: ``log(value / median over pairs)``
    (the two ``Trans`` columns share the median of ``Trans`` over layers, the two ``Dep``
    columns the median of all ``Dep`` values).  The largest of the four log-ratios names the
    component that makes this pair's ``r`` large, the reading of Figure 3 in section 4.3.
    """
    trans_med = np.median(np.concatenate([pairs["trans_i"], pairs["trans_j"].iloc[-1:]]))
    dep_med = np.median(np.concatenate([pairs["dep_ij"], pairs["dep_ji"]]))
    med = {"trans_i": trans_med, "trans_j": trans_med, "dep_ij": dep_med, "dep_ji": dep_med}
    logs = pd.DataFrame({c: np.log(pairs[c].clip(lower=1e-12) / med[c]) for c in COMPONENTS})
    out = pairs[["i", "j", "r"]].copy()
    out["dominant"] = logs.idxmax(axis=1).map(COMPONENT_LABELS)
    out["log_ratio"] = logs.max(axis=1)
    out["r_rank"] = pairs["r"].rank(ascending=False).astype(int)
    return out


def _annotate(ax, pairs: pd.DataFrame, x: str, y: str, top: int = 4) -> None:
    for _, row in pairs.nlargest(top, x).iterrows():
        ax.annotate(f"({int(row.i)},{int(row.j)})", (row[x], row[y]), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")


def scatter_with_rho(pairs: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str,
                     title: str, log: bool = True, ax=None):
    """A Figure 2/4-style scatter: one point per pair, Spearman in the title."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.2))
    sns.scatterplot(data=pairs, x=x, y=y, hue="i", palette="viridis", ax=ax, legend=False)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    rho = spearman(pairs[x], pairs[y])
    ax.set_title(f"{title}\nSpearman $\\rho$ = {rho.rho:.2f} [{rho.ci_low:.2f}, {rho.ci_high:.2f}]",
                 fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _annotate(ax, pairs, x, y)
    return ax


def figure2(pairs: pd.DataFrame, title: str, ax=None):
    """Figure 2: the score r (eq. 1) against the measured swap effect delta (eq. 2)."""
    return scatter_with_rho(pairs, "r", "delta", "r(i, i+1)  (eq. 1)", "$\\delta$(i, i+1)  (eq. 2)", title, ax=ax)


def figure4(pairs: pd.DataFrame, title: str, ax=None):
    """Figure 4: the linearised swap effect delta' (eq. 16) against delta (eq. 2)."""
    return scatter_with_rho(pairs, "delta_lin", "delta", "$\\delta'$(i, i+1)  (eq. 16)",
                            "$\\delta$(i, i+1)  (eq. 2)", title, ax=ax)


def figure3(pairs: pd.DataFrame, title: str):
    """Figure 3: the four components of r per pair (Trans on a log axis, Dep in [0, 1])."""
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    labels = [f"{int(i)},{int(j)}" for i, j in zip(pairs["i"], pairs["j"])]
    x = np.arange(len(pairs))
    w = 0.4
    axes[0].bar(x - w / 2, pairs["trans_i"], w, label="Trans(i)")
    axes[0].bar(x + w / 2, pairs["trans_j"], w, label="Trans(i+1)")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("Trans (eq. 13)")
    axes[0].legend(fontsize=8)
    axes[1].bar(x - w / 2, pairs["dep_ij"], w, label="Dep(i, i+1)")
    axes[1].bar(x + w / 2, pairs["dep_ji"], w, label="Dep(i+1, i)")
    axes[1].set_ylabel("Dep (eq. 14)")
    axes[1].legend(fontsize=8)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(labels, rotation=90, fontsize=7)
    axes[1].set_xlabel("pair (i, i+1)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def figure_fit_quality(layers: pd.DataFrame, title: str):
    """Per-layer R^2 of the linear fit (eq. 12) on the metric tokens and on held-out tokens."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    long = layers.melt(id_vars="layer", value_vars=[c for c in ("r2_fit", "r2_heldout") if c in layers],
                       var_name="tokens", value_name="R^2")
    long["tokens"] = long["tokens"].map({"r2_fit": "metric (fit) tokens", "r2_heldout": "delta (held-out) tokens"})
    sns.barplot(data=long, x="layer", y="R^2", hue="tokens", ax=ax)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig
