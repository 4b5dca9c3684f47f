"""Tables and figures of chapters 02-03 (paper A, Figures 2-4), from a swap table.

The table is the one ``run_swap_analysis`` returns: one row per adjacent pair with columns
``i, j, trans_i, trans_j, dep_ij, dep_ji, r, delta, delta_lin`` and the baseline predictors.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from paperlib.swap.analysis import BASELINES, FitResult, SwapResult, pair_rows
from paperlib.swap.stats import Correlation, spearman

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


#: how the book names each predictor of delta in its tables
PREDICTOR_LABELS = {
    "r": "r (eq. 1), the paper's score",
    "delta_lin": "δ' (eq. 16), linearised swap",
    "block_influence": "Block Influence 1 − cos (ShortGPT), all tokens",
    "angular_distance": "angular distance arccos(cos)/π, all tokens (this book)",
    "angular_distance_last": "angular distance, last token only (Gromov et al.)",
    "relative_update": "relative update ‖X_{i+2} − X_i‖/‖X_i‖, all tokens",
}


def scroll_box(table, caption: str | None = None, precision: int = 3) -> str:
    """HTML of a table (DataFrame or pandas Styler) inside a box that scrolls sideways when the
    table is wider than the page, with an optional caption above it."""
    if isinstance(table, pd.DataFrame):
        table = table.style.format(precision=precision, na_rep="–")
    html = table.to_html()
    head = f'<p class="table-caption"><b>{caption}</b></p>' if caption else ""
    return f'{head}<div class="table-scroll" style="overflow-x: auto; max-width: 100%;">{html}</div>'


def show_table(table, caption: str | None = None, precision: int = 3):
    """An IPython ``HTML`` object of :func:`scroll_box` (display it, or ``glue`` it)."""
    from IPython.display import HTML

    return HTML(scroll_box(table, caption, precision))


def correlation_vs_paper(corr: Correlation, paper: float, this_run: str, paper_run: str = "GPT-2 Large, webtext",
                         what: str = "Spearman ρ") -> pd.DataFrame:
    """Two rows, this run (with its bootstrap interval and p-value) and the paper's value."""
    return pd.DataFrame(
        [{"run": f"this build: {this_run}", what: corr.rho, "95% CI": f"{corr.ci_low:.2f} to {corr.ci_high:.2f}",
          "p-value": f"{corr.pvalue:.1e}", "pairs": corr.n},
         {"run": f"paper: {paper_run}", what: paper, "95% CI": "not reported", "p-value": "not reported",
          "pairs": 35}]).set_index("run")


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


def labelled_pairs(pairs: pd.DataFrame, x: str, y: str, top: int = 4) -> pd.DataFrame:
    """The pairs a scatter names: the ``top`` largest in ``x``, the ``top`` largest in ``y`` and
    the pair whose ranks in ``x`` and ``y`` disagree most (the outlier the text points at)."""
    rank_gap = (pairs[x].rank() - pairs[y].rank()).abs()
    keep = set(pairs.nlargest(top, x).index) | set(pairs.nlargest(top, y).index) | {rank_gap.idxmax()}
    return pairs.loc[sorted(keep)]


def _annotate(ax, pairs: pd.DataFrame, x: str, y: str, top: int = 4) -> None:
    for _, row in labelled_pairs(pairs, x, y, top).iterrows():
        ax.annotate(f"({int(row.i)},{int(row.j)})", (row[x], row[y]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")


def scatter_with_rho(pairs: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str,
                     title: str, log: bool = True, ax=None):
    """A Figure 2/4-style scatter: one point per pair coloured by its first layer ``i`` (with a
    colorbar), the named pairs labelled ``(i,i+1)``, Spearman and its 95% interval in the title."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.8))
    points = ax.scatter(pairs[x], pairs[y], c=pairs["i"], cmap="viridis", s=36, edgecolor="k", linewidth=0.3)
    ax.figure.colorbar(points, ax=ax, label="first layer i of the pair (i, i+1)")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    rho = spearman(pairs[x], pairs[y])
    ax.set_title(f"{title}\nSpearman $\\rho$ = {rho.rho:.2f}, 95% CI [{rho.ci_low:.2f}, {rho.ci_high:.2f}]",
                 fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _annotate(ax, pairs, x, y)
    return ax


def figure2(pairs: pd.DataFrame, title: str, ax=None):
    """Figure 2: the score r (eq. 1) against the measured swap effect delta (eq. 2)."""
    return scatter_with_rho(pairs, "r", "delta", "score r(i, i+1), eq. 1 (log scale)",
                            "swap effect $\\delta$(i, i+1), eq. 2 (log scale)", title, ax=ax)


def figure4(pairs: pd.DataFrame, title: str, ax=None):
    """Figure 4: the linearised swap effect delta' (eq. 16) against delta (eq. 2)."""
    return scatter_with_rho(pairs, "delta_lin", "delta", "linearised swap effect $\\delta'$(i, i+1), eq. 16 (log scale)",
                            "swap effect $\\delta$(i, i+1), eq. 2 (log scale)", title, ax=ax)


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
    axes[1].set_xlabel("adjacent pair (i, i+1), layers numbered from 1")
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
    ax.set_xlabel("layer i (fit of X_i -> X_{i+1}, eq. 12)")
    ax.set_ylabel("$R^2$ of the linear fit")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def literal_fit_comparison(fits, swaps: SwapResult, n_tokens: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both readings of eq. 12 on the same tokens: the swap table of each (``r`` from the
    least-squares maps and from the literal unsquared-norm maps, with the same measured ``delta``)
    and a summary row per reading (Spearman(r, delta) with its interval, the mean unsquared
    residual, and how the two scores rank the pairs against each other)."""
    tables = {}
    for name, maps in (("least squares (squared norm)", [f.A_ls for f in fits]),
                       ("literal eq. 12 (unsquared norm, IRLS)", [f.A for f in fits])):
        tables[name] = pd.DataFrame(pair_rows(FitResult(A=maps, r2=[float("nan")] * len(maps), n_tokens=n_tokens),
                                              swaps))
    names = list(tables)
    between = spearman(tables[names[0]]["r"], tables[names[1]]["r"], seed=seed)
    rows = []
    for k, name in enumerate(names):
        c = spearman(tables[name]["r"], tables[name]["delta"], seed=seed)
        objective = np.mean([f.objective[0] if k == 0 else f.objective[-1] for f in fits])
        rows.append({"fit of A_i": name, "Spearman ρ(r, δ)": c.rho, "95% CI": f"{c.ci_low:.2f} to {c.ci_high:.2f}",
                     "mean ‖residual‖ (eq. 12 literal)": objective,
                     "ρ(r_LS, r_literal)": between.rho, "tokens": n_tokens})
    summary = pd.DataFrame(rows).set_index("fit of A_i")
    pairs = tables[names[0]][["i", "j", "delta"]].assign(r_ls=tables[names[0]]["r"], r_literal=tables[names[1]]["r"])
    return pairs, summary
