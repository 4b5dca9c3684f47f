"""Figures: learning curves per method (seaborn) and the ARI heat map of Table 2."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def learning_curves(history: pd.DataFrame, task: str | None = None, metric_label: str = "score",
                    teacher: dict | None = None):
    """Train loss and valid / test score per epoch (mean and 95% band over seeds), one line per method.

    ``history`` is :func:`paperlib.loraild.tables.history_frame`; ``teacher`` (optional) is the
    stage-1 summary whose best test score is drawn as a dashed line.
    """
    h = history if task is None else history[history["task"] == task]
    panels = [("train_loss", "train loss (eq. 4)"), ("valid", f"valid {metric_label}")]
    if h["test"].notna().any():  # runs that scored the test split only at their best epoch have no test curve
        panels.append(("test", f"test {metric_label}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), sharex=True)
    for ax, (col, title) in zip(axes, panels):
        sns.lineplot(data=h, x="epoch", y=col, hue="label", style="label", markers=True, dashes=False,
                     errorbar=("ci", 95), ax=ax, legend=ax is axes[-1])
        ax.set_title(title)
        ax.set_ylabel(col)
        if teacher is not None and col in ("valid", "test") and teacher.get(f"best_{col}") is not None:
            ax.axhline(teacher[f"best_{col}"], color="grey", ls="--", lw=1)
            ax.annotate("teacher", (0.01, teacher[f"best_{col}"]), xycoords=("axes fraction", "data"),
                        fontsize=8, color="grey", va="bottom")
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), title="method")
    axes[0].set_xticks(sorted(h["epoch"].unique()))
    fig.tight_layout()
    return fig


def ari_heatmap(table: pd.DataFrame, title: str = "ARI per student layer"):
    """Heat map of a Table-2 frame (rows task/method/kind/module, columns layers)."""
    labels = [" / ".join(str(x) for x in idx if x != "-") for idx in table.index]
    fig, ax = plt.subplots(figsize=(1.1 * max(3, table.shape[1]) + 3, 0.35 * len(table) + 1.2))
    sns.heatmap(table.to_numpy(dtype=float), annot=True, fmt=".3f", cmap="Blues", vmin=min(0.0, float(table.min().min())),
                yticklabels=labels, xticklabels=[f"layer {c}" for c in table.columns], ax=ax, cbar=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


__all__ = ["learning_curves", "ari_heatmap"]
