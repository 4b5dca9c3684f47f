"""GLUE tasks for the LoRAILD reproduction (paper B, section 4.1): hub or local TSV files.

Two sources, tried in this order:

1. a local folder of the original GLUE TSV files (``glue_dir=`` or the environment variable
   ``GLUE_DIR``), laid out as the GLUE download script leaves it: ``CoLA/train.tsv``,
   ``CoLA/dev.tsv``, ``SST-2/...``, ``MRPC/...``, ``QNLI/...``, ``RTE/...``, ``STS-B/...``;
2. the Hugging Face hub, ``datasets.load_dataset("nyu-mll/glue", task)`` (needs internet, or a
   cached copy with ``HF_HUB_OFFLINE=1``).

Both give the *official* ``train`` and ``validation`` splits as data frames with columns
``text_a``, ``text_b`` (pair tasks only) and ``label`` (int; float for STS-B), labels encoded as
in the hub version (RTE/QNLI: entailment = 0; MRPC: equivalent = 1; CoLA: acceptable = 1).
The paper's own split (train cut 9:1 into train/valid, official validation as test) is made by
:func:`paperlib.loraild.tasks.load_task`.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class GlueFormat:
    """Where a GLUE task keeps its fields: hub column names and TSV layout."""

    hub_columns: tuple[str, ...]  # text column(s) in the hub version
    folder_names: tuple[str, ...]  # candidate folder names under GLUE_DIR
    tsv_header: bool  # CoLA's TSV files have no header line
    tsv_text: tuple[str | int, ...]  # header names (or column indices) of the text fields
    tsv_label: str | int  # header name (or column index) of the label
    label_map: dict[str, int] | None = None  # string labels -> ints; None: int()/float()
    regression: bool = False


GLUE_FORMATS: dict[str, GlueFormat] = {
    "cola": GlueFormat(("sentence",), ("CoLA", "cola"), False, (3,), 1),
    "sst2": GlueFormat(("sentence",), ("SST-2", "SST2", "sst2", "sst-2"), True, ("sentence",), "label"),
    "mrpc": GlueFormat(("sentence1", "sentence2"), ("MRPC", "mrpc"), True,
                       ("#1 String", "#2 String"), "Quality"),
    "qnli": GlueFormat(("question", "sentence"), ("QNLI", "qnli"), True, ("question", "sentence"), "label",
                       {"entailment": 0, "not_entailment": 1}),
    "rte": GlueFormat(("sentence1", "sentence2"), ("RTE", "rte"), True, ("sentence1", "sentence2"), "label",
                      {"entailment": 0, "not_entailment": 1}),
    "stsb": GlueFormat(("sentence1", "sentence2"), ("STS-B", "STSB", "stsb", "sts-b"), True,
                       ("sentence1", "sentence2"), "score", regression=True),
}

#: GLUE tasks of the paper's Table 1
GLUE_TASKS: tuple[str, ...] = tuple(GLUE_FORMATS)
HUB_DATASET = "nyu-mll/glue"
TSV_FILES = {"train": "train.tsv", "validation": "dev.tsv"}


class DataUnavailableError(RuntimeError):
    """A task whose data cannot be read from here (no local copy, hub unreachable)."""


def how_to_supply_glue(task: str) -> str:
    """The sentence every 'GLUE is missing' error ends with."""
    return (
        f"GLUE task {task!r} is not available here. Supply it either by (a) downloading the GLUE "
        f"TSV files and pointing the environment variable GLUE_DIR (or the glue_dir parameter) at "
        f"the folder holding {GLUE_FORMATS[task].folder_names[0]}/train.tsv and dev.tsv, or (b) "
        f"running with internet access so that datasets.load_dataset({HUB_DATASET!r}, {task!r}) "
        f"works (a cached copy works offline with HF_HUB_OFFLINE=1). The embedded task "
        f"'rotten_tomatoes' needs neither and runs offline."
    )


class GlueDataError(ValueError):
    """A GLUE TSV file that does not hold what its task needs (names the file, the row and the fix)."""


FIX = "fix the file or download the original GLUE files again"


def _read_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """Tab-separated rows with their line numbers, no quote processing (GLUE texts contain
    unbalanced quotes); blank lines are skipped."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return [(n, line.rstrip("\n").rstrip("\r").split("\t")) for n, line in enumerate(fh, 1) if line.strip()]
    except UnicodeDecodeError as err:
        raise GlueDataError(f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x}); {FIX}") from None


def valid_labels(fmt: GlueFormat) -> str:
    if fmt.regression:
        return "a number from 0 to 5"
    if fmt.label_map is not None:
        return " or ".join(repr(k) for k in fmt.label_map)
    return "0 or 1"


def _convert_label(fmt: GlueFormat, raw: str) -> int | float:
    """The label of a row; ``ValueError`` for anything but the task's labels."""
    raw = raw.strip()
    if fmt.regression:
        value = float(raw)
        if not 0.0 <= value <= 5.0:  # NaN fails too
            raise ValueError(raw)
        return value
    if fmt.label_map is not None:
        if raw not in fmt.label_map:
            raise ValueError(raw)
        return fmt.label_map[raw]
    if raw not in ("0", "1"):
        raise ValueError(raw)
    return int(raw)


def read_glue_tsv(task: str, path: str | Path) -> pd.DataFrame:
    """One GLUE TSV file (original layout) as ``text_a[, text_b], label``.

    Bad data stops with one line naming the file, the line and the fix: an empty file, a header
    without the task's columns, a label that is not one of the task's.  Rows with too few fields
    (a line broken by a stray newline) are skipped *with a warning* that counts them and names
    their lines; if none is left, that is an error too.
    """
    fmt = GLUE_FORMATS[task]
    path = Path(path)
    rows = _read_tsv(path)
    if fmt.tsv_header:
        if not rows:
            raise GlueDataError(f"{path} is empty (no header line, no rows); {FIX}")
        (_, header), rows = rows[0], rows[1:]
        missing = [c for c in fmt.tsv_text + (fmt.tsv_label,) if c not in header]
        if missing:
            raise GlueDataError(f"{path}: the header has no column {', '.join(map(repr, missing))} "
                                f"(found {header[:8]}); {task} needs {list(fmt.tsv_text + (fmt.tsv_label,))}")
        text_idx = [header.index(c) for c in fmt.tsv_text]
        label_idx = header.index(fmt.tsv_label)
    else:
        text_idx, label_idx = list(fmt.tsv_text), fmt.tsv_label
    if not rows:
        raise GlueDataError(f"{path} has no data rows; {FIX}")
    need = max(text_idx + [label_idx])
    records, short = [], []
    for number, row in rows:
        if len(row) <= need:
            short.append(number)
            continue
        try:
            label = _convert_label(fmt, row[label_idx])
        except ValueError:
            raise GlueDataError(
                f"{path} line {number}: label {row[label_idx]!r} is not {valid_labels(fmt)} "
                f"(the {task} labels); correct or delete the row") from None
        rec = {"text_a": row[text_idx[0]]}
        if len(text_idx) > 1:
            rec["text_b"] = row[text_idx[1]]
        rec["label"] = label
        records.append(rec)
    if short:
        lines = ", ".join(map(str, short[:5])) + (" ..." if len(short) > 5 else "")
        if not records:
            raise GlueDataError(f"{path}: no row has the {need + 1} tab-separated fields {task} needs "
                                f"(lines {lines}); {FIX}")
        warnings.warn(f"{path}: skipped {len(short)} of {len(rows)} rows with fewer than {need + 1} "
                      f"tab-separated fields (lines {lines})", stacklevel=2)
    return pd.DataFrame.from_records(records)


def find_task_folder(task: str, glue_dir: str | Path) -> Path | None:
    """The task's folder under ``glue_dir`` (or ``glue_dir`` itself if it holds the TSV files)."""
    root = Path(glue_dir)
    for name in GLUE_FORMATS[task].folder_names:
        if (root / name / TSV_FILES["train"]).exists():
            return root / name
    if (root / TSV_FILES["train"]).exists() and (root / TSV_FILES["validation"]).exists():
        if root.name in GLUE_FORMATS[task].folder_names:
            return root
    return None


def load_glue_tsv(task: str, glue_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Official ``train`` / ``validation`` splits from a local GLUE folder."""
    folder = find_task_folder(task, glue_dir)
    if folder is None:
        raise DataUnavailableError(
            f"no {'/'.join(GLUE_FORMATS[task].folder_names)}/train.tsv under {glue_dir}. "
            + how_to_supply_glue(task)
        )
    out = {}
    for split, name in TSV_FILES.items():
        path = folder / name
        if not path.exists():
            raise DataUnavailableError(f"{path} is missing. " + how_to_supply_glue(task))
        out[split] = read_glue_tsv(task, path)
    return out


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens (so we fail in seconds, not after retries)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_mode() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_glue_hub(task: str) -> dict[str, pd.DataFrame]:
    """Official splits from ``datasets.load_dataset("nyu-mll/glue", task)``."""
    if not _offline_mode() and not hub_reachable():
        raise DataUnavailableError("the Hugging Face hub is unreachable. " + how_to_supply_glue(task))
    import datasets

    try:
        ds = datasets.load_dataset(HUB_DATASET, task)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds
        raise DataUnavailableError(
            f"datasets.load_dataset({HUB_DATASET!r}, {task!r}) failed: {err.__class__.__name__}: "
            f"{str(err)[:200]}. " + how_to_supply_glue(task)
        ) from err
    cols = GLUE_FORMATS[task].hub_columns
    out = {}
    for split in TSV_FILES:
        frame = ds[split].to_pandas()
        df = pd.DataFrame({"text_a": frame[cols[0]].astype(str)})
        if len(cols) > 1:
            df["text_b"] = frame[cols[1]].astype(str)
        df["label"] = frame["label"].astype(float if GLUE_FORMATS[task].regression else int)
        out[split] = df
    return out


def load_glue(task: str, glue_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Official GLUE splits of ``task``: from ``glue_dir`` / ``$GLUE_DIR`` if given, else the hub."""
    if task not in GLUE_FORMATS:
        raise ValueError(f"unknown GLUE task {task!r}; GLUE tasks: {', '.join(GLUE_TASKS)}")
    glue_dir = glue_dir or os.environ.get("GLUE_DIR") or None
    if glue_dir:
        return load_glue_tsv(task, glue_dir)
    return load_glue_hub(task)


__all__ = ["GLUE_TASKS", "GLUE_FORMATS", "DataUnavailableError", "GlueDataError", "load_glue", "load_glue_tsv",
           "load_glue_hub", "read_glue_tsv", "how_to_supply_glue"]
