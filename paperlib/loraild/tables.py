"""Table 1 (scores, valid | test) and Table 2 (ARI per student layer) in the paper's layout.

Table 1: one row per method (grouped as in the paper), one column per (split, task); each cell is
the mean over seeds of the score at the best-valid epoch.  Per column the best mean is **bold**
and every method significantly worse than it (one-sided permutation test, p < 2.5%,
:mod:`paperlib.loraild.stats`) is underlined.

The paper's own numbers (:data:`PAPER_TABLE1`, r = 32; :data:`PAPER_TABLE2`) are transcribed from
its text; its bold / underline marks are not in the text and are not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from paperlib.loraild.config import METHOD_NAMES, METHODS
from paperlib.loraild.stats import ALPHA, worse_than_best

SPLITS = {"valid": "best_valid", "test": "best_test"}
TASK_LABELS = {"cola": "CoLA", "mrpc": "MRPC", "qnli": "QNLI", "rte": "RTE", "sst2": "SST-2",
               "stsb": "STS-B", "rotten_tomatoes": "RottenTomatoes"}
PAPER_TASKS = ("cola", "mrpc", "qnli", "rte", "sst2", "stsb")

# --- the paper's numbers (Table 1, r = 32; mean of 5 runs) -------------------------------------
_P1 = {  # method: (valid CoLA..STS-B), (test CoLA..STS-B)
    "wo_kd": ((0.615, 0.872, 0.894, 0.692, 0.947, 0.896), (0.567, 0.876, 0.906, 0.676, 0.919, 0.881)),
    "vanilla_kd": ((0.635, 0.888, 0.903, 0.716, 0.954, 0.916), (0.566, 0.874, 0.912, 0.622, 0.925, 0.883)),
    "rail_kd_c": ((0.625, 0.902, 0.905, 0.716, 0.954, 0.917), (0.568, 0.892, 0.916, 0.658, 0.929, 0.882)),
    "rail_kd_l": ((0.633, 0.899, 0.899, 0.597, 0.952, 0.916), (0.585, 0.882, 0.907, 0.522, 0.907, 0.886)),
    "curriculum_rail_kd_c": ((0.650, 0.903, 0.907, 0.748, 0.955, 0.920), (0.568, 0.889, 0.912, 0.677, 0.928, 0.881)),
    "loraild_fixed": ((0.628, 0.883, 0.905, 0.688, 0.955, 0.912), (0.565, 0.880, 0.912, 0.651, 0.922, 0.880)),
    "loraild_average": ((0.637, 0.871, 0.904, 0.717, 0.954, 0.919), (0.596, 0.874, 0.913, 0.656, 0.921, 0.886)),
    "loraild_random_step": ((0.633, 0.848, 0.904, 0.680, 0.956, 0.913), (0.592, 0.846, 0.916, 0.637, 0.920, 0.881)),
    "loraild_random_epoch": ((0.627, 0.888, 0.904, 0.726, 0.955, 0.912), (0.573, 0.886, 0.911, 0.659, 0.915, 0.882)),
}

# --- the paper's Table 2 (ARI on the evaluation data, mean of 5 runs; layers 0..5) --------------
_HIDDEN = {  # task: (RAIL-KD_l layers 0..5, LoRAILD layers 0..5)
    "cola": ((-0.001, -0.001, 0.001, 0.001, 0.002, 0.311), (-0.003, -0.003, -0.001, -0.001, 0.339, 0.400)),
    "mrpc": ((0.018, 0.025, 0.024, 0.179, 0.313, 0.347), (0.020, 0.023, 0.056, 0.250, 0.266, 0.235)),
    "qnli": ((0.008, 0.008, 0.008, 0.008, 0.010, 0.619), (0.008, 0.006, 0.007, 0.193, 0.610, 0.664)),
    "rte": ((-0.003, 0.000, 0.000, 0.001, 0.001, 0.000), (-0.003, -0.003, -0.003, -0.003, 0.067, 0.084)),
    "sst2": ((-0.001, -0.001, -0.001, 0.000, 0.400, 0.677), (0.000, 0.000, 0.000, 0.672, 0.698, 0.707)),
}
_RAIL_ILD = {
    "cola": (-0.003, 0.004, 0.007, 0.007, 0.008, 0.187),
    "mrpc": (0.006, 0.012, 0.011, 0.073, 0.313, 0.410),
    "qnli": (0.006, 0.007, 0.008, 0.007, 0.007, 0.060),
    "rte": (-0.003, -0.001, 0.000, 0.002, 0.000, 0.003),
    "sst2": (0.000, 0.000, -0.001, 0.000, 0.000, 0.033),
}
_LORA_ILD = {  # task: (query, key, value) layers 0..5
    "cola": ((0.005, 0.000, -0.001, -0.001, 0.011, 0.294), (0.004, -0.001, 0.000, -0.001, -0.003, 0.341),
             (0.004, -0.001, 0.000, 0.002, 0.003, 0.333)),
    "mrpc": ((0.005, 0.019, 0.023, 0.083, 0.151, 0.230), (0.008, 0.019, 0.023, 0.106, 0.096, 0.256),
             (0.004, 0.019, 0.016, 0.074, 0.205, 0.281)),
    "qnli": ((0.017, 0.014, 0.004, 0.010, 0.361, 0.619), (0.021, 0.014, 0.004, 0.010, 0.412, 0.616),
             (0.020, 0.013, 0.004, 0.015, 0.376, 0.614)),
    "rte": ((-0.003, -0.003, -0.003, -0.003, -0.003, 0.049), (-0.003, -0.003, -0.003, -0.003, 0.010, 0.070),
            (-0.003, -0.003, -0.003, -0.003, -0.002, 0.062)),
    "sst2": ((-0.001, 0.002, -0.001, 0.001, 0.595, 0.694), (-0.001, 0.001, -0.001, 0.007, 0.630, 0.696),
             (-0.001, 0.002, -0.001, 0.005, 0.630, 0.697)),
}


def method_index(methods: tuple[str, ...] = METHOD_NAMES) -> pd.MultiIndex:
    """Rows as in the paper: (group, row label)."""
    return pd.MultiIndex.from_tuples([(METHODS[m].group, METHODS[m].label) for m in methods],
                                     names=["", "method"])


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 (r = 32) as numbers: rows methods, columns (split, task)."""
    cols = pd.MultiIndex.from_product([list(SPLITS), [TASK_LABELS[t] for t in PAPER_TASKS]])
    data = [list(v) + list(t) for v, t in (_P1[m] for m in METHOD_NAMES)]
    return pd.DataFrame(data, index=method_index(), columns=cols)


def paper_table2() -> pd.DataFrame:
    """The paper's Table 2 (ARI per student layer): rows (task, method, kind, module), columns 0..5."""
    rows, index = [], []
    for task in _HIDDEN:
        t = TASK_LABELS[task]
        rows += [_HIDDEN[task][0], _HIDDEN[task][1], _RAIL_ILD[task], *_LORA_ILD[task]]
        index += [(t, "RAIL-KD_l", "hidden", "-"), (t, "LoRAILD", "hidden", "-"),
                  (t, "RAIL-KD_l", "ild", "projection"), (t, "LoRAILD", "ild", "query"),
                  (t, "LoRAILD", "ild", "key"), (t, "LoRAILD", "ild", "value")]
    idx = pd.MultiIndex.from_tuples(index, names=["task", "method", "kind", "module"])
    return pd.DataFrame(rows, index=idx, columns=range(6)).sort_index()


def results_frame(results: list[dict]) -> pd.DataFrame:
    """One row per finished run: task, method, seed, best epoch and scores."""
    rows = [{"task": r["task"], "method": r["method"], "seed": r["seed"], "lr": r.get("lr"),
             "best_epoch": r["best_epoch"], "best_valid": r["best_valid"], "best_test": r["best_test"]}
            for r in results]
    return pd.DataFrame(rows, columns=["task", "method", "seed", "lr", "best_epoch", "best_valid", "best_test"])


def history_frame(results: list[dict]) -> pd.DataFrame:
    """Per-epoch rows (task, method, seed, epoch, train loss, valid and test scores)."""
    rows = []
    for r in results:
        for h in r["history"]:
            rows.append({"task": r["task"], "method": r["method"], "label": METHODS[r["method"]].label,
                         "seed": r["seed"], "epoch": h["epoch"], "train_loss": h["train"].get("loss"),
                         "train_ce": h["train"].get("ce"), "valid": h["valid_score"], "test": h["test_score"],
                         "selectable": h["selectable"]})
    return pd.DataFrame(rows)


def clusters_frame(results: list[dict]) -> pd.DataFrame:
    """ARI rows of every run that has a cluster analysis."""
    rows = []
    for r in results:
        for c in r.get("clusters") or []:
            rows.append({"task": r["task"], "method": r["method"], "seed": r["seed"], **c})
    return pd.DataFrame(rows, columns=["task", "method", "seed", "kind", "module", "layer", "ari"])


@dataclass
class Table1:
    """Means, marks and p-values of a Table 1."""

    means: pd.DataFrame  # rows (group, label), columns (split, task label)
    bold: pd.DataFrame  # bool, same shape
    underline: pd.DataFrame  # bool, same shape
    pvalues: pd.DataFrame  # p of "best > this row" per cell (NaN for the best)
    n_seeds: pd.DataFrame  # runs per cell

    def to_markdown(self, digits: int = 3) -> str:
        """GitHub/MyST markdown: **best**, <u>significantly worse</u>."""
        cols = [f"{s} {t}" for s, t in self.means.columns]
        lines = ["| group | method | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for idx in self.means.index:
            cells = []
            for c in self.means.columns:
                v = self.means.loc[idx, c]
                s = "–" if pd.isna(v) else f"{v:.{digits}f}"
                if self.bold.loc[idx, c]:
                    s = f"**{s}**"
                if self.underline.loc[idx, c]:
                    s = f"<u>{s}</u>"
                cells.append(s)
            lines.append(f"| {idx[0]} | {idx[1]} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def styler(self, digits: int = 3):
        """A pandas ``Styler`` with the bold / underline marks as CSS."""
        def css(_):
            out = pd.DataFrame("", index=self.means.index, columns=self.means.columns)
            out = out.mask(self.bold, "font-weight: bold;")
            out = out.mask(self.underline, out + "text-decoration: underline;")
            return out
        return self.means.style.format(precision=digits, na_rep="–").apply(css, axis=None)

    def to_html(self, digits: int = 3) -> str:
        return self.styler(digits).to_html()


def table1(frame: pd.DataFrame, methods: tuple[str, ...] = METHOD_NAMES, tasks: list[str] | None = None,
           alpha: float = ALPHA) -> Table1:
    """Table 1 from :func:`results_frame` rows (mean over seeds, bold best, underline p < alpha)."""
    tasks = tasks or [t for t in dict.fromkeys(frame["task"])]
    methods = tuple(m for m in methods if m in set(frame["method"])) or methods
    cols = pd.MultiIndex.from_product([list(SPLITS), [TASK_LABELS.get(t, t) for t in tasks]])
    idx = method_index(methods)
    means = pd.DataFrame(np.nan, index=idx, columns=cols)
    pvals = pd.DataFrame(np.nan, index=idx, columns=cols)
    counts = pd.DataFrame(0, index=idx, columns=cols)
    bold = pd.DataFrame(False, index=idx, columns=cols)
    under = pd.DataFrame(False, index=idx, columns=cols)
    for split, value in SPLITS.items():
        for task in tasks:
            col = (split, TASK_LABELS.get(task, task))
            sub = frame[(frame["task"] == task) & frame["method"].isin(methods)]
            if sub.empty:
                continue
            g = sub.groupby("method")[value]
            for m, mean in g.mean().items():
                means.loc[idx[methods.index(m)], col] = mean
                counts.loc[idx[methods.index(m)], col] = int(g.size()[m])
            best = g.mean().idxmax()
            bold.loc[idx[methods.index(best)], col] = True
            for m, p in worse_than_best(sub, value).items():
                pvals.loc[idx[methods.index(m)], col] = p
                under.loc[idx[methods.index(m)], col] = bool(p < alpha)
    return Table1(means, bold, under, pvals, counts)


def table2_label(method: str) -> str:
    """Row label of Table 2: the paper analyses RAIL-KD_l and LoRAILD with the Fixed alignment."""
    if method == "loraild_fixed":
        return "LoRAILD"
    if method in METHODS and METHODS[method].group == "LoRAILD":
        return f"LoRAILD {METHODS[method].label}"
    return METHODS[method].label if method in METHODS else method


def table2(clusters: pd.DataFrame) -> pd.DataFrame:
    """Mean ARI over seeds: rows (task, method, kind, module), one column per student layer."""
    if clusters.empty:
        return pd.DataFrame()
    c = clusters.assign(task=clusters["task"].map(lambda t: TASK_LABELS.get(t, t)),
                        method=clusters["method"].map(table2_label))
    return c.groupby(["task", "method", "kind", "module", "layer"])["ari"].mean().unstack("layer")


__all__ = ["paper_table1", "paper_table2", "results_frame", "history_frame", "clusters_frame", "table1",
           "table2", "Table1", "TASK_LABELS", "PAPER_TASKS"]
