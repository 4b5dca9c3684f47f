"""GLUE TSV loader on files written here, the paper's split, metrics, the embedded task, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paperlib.data import glue
from paperlib.data.glue import DataUnavailableError, load_glue, read_glue_tsv
from paperlib.data.rotten_tomatoes import load_corpus, load_rotten_tomatoes
from paperlib.loraild.config import TASKS, RunConfig, UnknownTaskError, default_results_dir
from paperlib.loraild.tasks import compute_metrics, load_task


def test_tsv_loader_reads_every_layout(tiny):
    for task, pair in (("sst2", False), ("cola", False), ("rte", True), ("qnli", True), ("mrpc", True),
                       ("stsb", True)):
        parts = load_glue(task, tiny.glue)
        assert set(parts) == {"train", "validation"}
        assert len(parts["train"]) == 60 and len(parts["validation"]) == 30, task
        assert ("text_b" in parts["train"].columns) == pair
        assert parts["train"]["text_a"].str.len().min() > 0
    rte = load_glue("rte", tiny.glue)["train"]
    assert set(rte["label"]) <= {0, 1} and rte["label"].dtype.kind == "i"
    assert load_glue("stsb", tiny.glue)["train"]["label"].dtype.kind == "f"


def test_tsv_loader_label_encodings_and_malformed_rows(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text('index\tsentence1\tsentence2\tlabel\n0\tA "quoted" one\tB\tentailment\n'
                    '1\tC\tD\tnot_entailment\n2\tbroken line\n')
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 rows .* \(lines 4\)"):  # counted, never silent
        df = read_glue_tsv("rte", path)
    assert df.to_dict("records") == [
        {"text_a": 'A "quoted" one', "text_b": "B", "label": 0},
        {"text_a": "C", "text_b": "D", "label": 1},
    ]
    cola = tmp_path / "cola.tsv"
    cola.write_text("clc95\t0\t*\tThe more you eat, the less.\nclc95\t1\t\tI ate.\n")
    assert read_glue_tsv("cola", cola)["label"].tolist() == [0, 1]


def test_paper_split_is_9_to_1_deterministic_and_limited(tiny):
    d = load_task("sst2", str(tiny.glue))
    assert d.sizes() == {"train": 54, "valid": 6, "test": 30}
    official = load_glue("sst2", tiny.glue)
    both = pd.concat([d.train, d.valid])
    assert sorted(both["text_a"]) == sorted(official["train"]["text_a"])  # a partition of the train split
    assert d.test.equals(official["validation"])
    again = load_task("sst2", str(tiny.glue))
    assert d.train.equals(again.train) and d.valid.equals(again.valid)
    small = load_task("sst2", str(tiny.glue), max_train=10, max_valid=3, max_test=7)
    assert small.sizes() == {"train": 10, "valid": 3, "test": 7}
    assert small.train.equals(d.train.iloc[:10])


def test_glue_dir_from_environment(tiny, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tiny.glue))
    assert len(load_glue("mrpc")["validation"]) == 30


def test_unknown_task_lists_valid_tasks():
    with pytest.raises(UnknownTaskError) as err:
        load_task("mnli")
    for t in ("cola", "mrpc", "qnli", "rte", "sst2", "stsb", "rotten_tomatoes"):
        assert t in str(err.value)
    with pytest.raises(UnknownTaskError):
        RunConfig(task="imdb").resolved()
    with pytest.raises(ValueError, match="valid methods"):
        RunConfig(method="pkd").resolved()


def test_missing_glue_says_how_to_supply_it(tmp_path, monkeypatch):
    with pytest.raises(DataUnavailableError) as err:
        load_task("rte", str(tmp_path))
    msg = str(err.value)
    assert "GLUE_DIR" in msg and "rotten_tomatoes" in msg and "RTE/train.tsv" in msg
    # no local copy and the hub unreachable: fails at once with the same advice
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(glue, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(DataUnavailableError, match="unreachable.*GLUE_DIR.*rotten_tomatoes"):
        load_task("cola")


def test_metrics():
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([1, 0, 0, 1, 0, 1])
    m = compute_metrics(TASKS["mrpc"], p, y)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["f1"] == pytest.approx(2 / 3)
    mcc = compute_metrics(TASKS["cola"], p, y)["matthews"]
    assert mcc == pytest.approx((2 * 2 - 1 * 1) / np.sqrt(3 * 3 * 3 * 3))
    s = compute_metrics(TASKS["stsb"], np.array([0.1, 0.4, 0.2, 0.9]), np.array([1.0, 3.0, 2.0, 5.0]))
    assert s["spearman"] == pytest.approx(1.0) and 0.9 < s["pearson"] < 1.0
    assert compute_metrics(TASKS["stsb"], np.zeros(4), np.arange(4.0))["pearson"] == 0.0


def test_rotten_tomatoes_embedded_corpus():
    df = load_corpus()
    assert set(df["label"]) == {0, 1}
    assert not df["text_a"].duplicated().any() and (df["text_a"].str.strip() != "").all()
    assert 12_700 < len(df) < 12_810  # 7,403 fresh + 5,405 rotten less empty / duplicate texts
    parts = load_rotten_tomatoes()
    assert abs(len(parts["validation"]) - 0.2 * len(df)) <= 1
    assert not set(parts["train"]["text_a"]) & set(parts["validation"]["text_a"])
    d = load_task("rotten_tomatoes", max_train=50, max_valid=10, max_test=20)
    assert d.sizes() == {"train": 50, "valid": 10, "test": 20}
    assert d.train.equals(load_task("rotten_tomatoes", max_train=50).train)


def test_results_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("PAPERLIB_RESULTS", raising=False)
    assert default_results_dir().parts[-2:] == ("results", "loraild")
    assert (default_results_dir().parent.parent / "paperlib").is_dir()  # the repository's root
    monkeypatch.setenv("PAPERLIB_RESULTS", str(tmp_path / "runs"))
    assert default_results_dir() == tmp_path / "runs"
