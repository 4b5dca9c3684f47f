"""GLUE TSV loader on files written here, the paper's split, metrics, the embedded task, clear errors."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from paperlib.data import glue
from paperlib.data.glue import DataUnavailableError, load_glue, read_glue_tsv
from paperlib.data.rotten_tomatoes import load_corpus, load_rotten_tomatoes
from paperlib.data.split import shuffled_head_split
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


def _authors_split(n: int) -> tuple[list[int], list[int]]:
    """normal_preprocess.py of TKC002/LoRAILD, line for line (global random state saved and restored)."""
    state = random.getstate()
    try:
        tmp = list(range(n))
        random.seed(0)
        random.shuffle(tmp)
        valid_size = n // 10
        return tmp[:valid_size], tmp[valid_size:]
    finally:
        random.setstate(state)


#: official train sizes (hub) of CoLA, MRPC, QNLI, RTE, SST-2, STS-B
GLUE_TRAIN_SIZES = (8551, 3668, 104743, 2490, 67349, 5749)


@pytest.mark.parametrize("n", (0, 1, 9, 10, 20, 60) + GLUE_TRAIN_SIZES)
def test_split_indices_are_the_authors(n):
    valid, train = shuffled_head_split(n)
    assert (valid, train) == _authors_split(n)
    assert len(valid) == n // 10 and sorted(valid + train) == list(range(n))


def test_split_pinned_values_and_global_state_untouched():
    state = random.getstate()
    assert shuffled_head_split(20) == ([10, 18], [16, 14, 0, 17, 11, 2, 3, 9, 5, 7, 4, 19, 6, 15, 8, 1, 13, 12])
    assert random.getstate() == state
    # valid sizes n // 10, not round(n / 10): MRPC 366, SST-2 6734, STS-B 574
    assert [len(shuffled_head_split(n)[0]) for n in GLUE_TRAIN_SIZES] == [855, 366, 10474, 249, 6734, 574]
    with pytest.raises(ValueError, match="divisor"):
        shuffled_head_split(10, divisor=0)


def test_task_split_takes_the_authors_rows(tiny):
    official = load_glue("mrpc", tiny.glue)["train"]
    valid_idx, train_idx = _authors_split(len(official))
    d = load_task("mrpc", str(tiny.glue))
    assert d.valid.equals(official.iloc[valid_idx].reset_index(drop=True))
    assert d.train.equals(official.iloc[train_idx].reset_index(drop=True))


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
    assert len(parts["validation"]) == len(df) // 5
    test_idx = sorted(shuffled_head_split(len(df), 5)[0])
    assert parts["validation"]["text_a"].tolist() == df["text_a"].iloc[test_idx].tolist()
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


# ------------------------------------------------------------------ token ids kept on disk


def _same_encoding(a, b) -> None:
    assert set(a) == set(b)
    for s in a:
        assert a[s].input_ids == b[s].input_ids and a[s].token_type_ids == b[s].token_type_ids
        assert a[s].labels.dtype == b[s].labels.dtype and np.array_equal(a[s].labels, b[s].labels)


def test_encoded_ids_round_trip_with_and_without_token_types(tmp_path):
    from paperlib.loraild.encoded_cache import load_encoded, save_encoded
    from paperlib.loraild.encoding import EncodedSplit

    enc = {"train": EncodedSplit([[0, 5, 2], [0, 2], [0, 7, 8, 9, 2]], [[0, 0, 0], [0, 0], [0, 0, 1, 1, 1]],
                                 np.array([1, 0, 1])),
           "valid": EncodedSplit([[0, 3, 2]], [[0, 0, 0]], np.array([0])),
           "test": EncodedSplit([], [], np.array([], dtype=np.int64))}
    assert save_encoded(tmp_path / "a.safetensors", enc)
    _same_encoding(load_encoded(tmp_path / "a.safetensors"), enc)
    floats = {s: EncodedSplit(e.input_ids, None, e.labels.astype(np.float32)) for s, e in enc.items()}  # STS-B
    assert save_encoded(tmp_path / "b.safetensors", floats)
    _same_encoding(load_encoded(tmp_path / "b.safetensors"), floats)
    assert load_encoded(tmp_path / "missing.safetensors") is None


def test_training_keeps_the_token_ids_and_reads_them_back(tiny, monkeypatch, capsys):
    """prepare_data(keep=True) writes the ids once; a new process (the in-process cache emptied) reads them
    instead of tokenising; a damaged file is moved aside and the task tokenised again; keep=False (a reader
    of finished results) writes nothing; another max_length is another file."""
    from paperlib.loraild import prepare
    from paperlib.loraild.encoded_cache import encoded_path

    cfg = tiny.config(results_dir=str(tiny.root / "encoded"))
    path = encoded_path(cfg)
    prepare._DATA.clear()
    prepare.prepare_data(cfg)
    assert not path.exists()
    prepare._DATA.clear()
    first = prepare.prepare_data(cfg, keep=True).encoded
    assert path.exists()

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised although the ids were kept")

    prepare._DATA.clear()
    with monkeypatch.context() as m:
        m.setattr(prepare, "encode", no_tokenising)
        _same_encoding(prepare.prepare_data(cfg, keep=True).encoded, first)

    path.write_bytes(path.read_bytes()[:40])  # a write cut short
    prepare._DATA.clear()
    _same_encoding(prepare.prepare_data(cfg, keep=True).encoded, first)
    assert "is damaged" in capsys.readouterr().err and path.with_name(path.name + ".damaged").exists()
    assert encoded_path(cfg.replace(max_length=12)) != path
    prepare._DATA.clear()


def test_unwritable_results_folder_only_skips_keeping_the_ids(tiny, tmp_path):
    from paperlib.loraild import prepare

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = tiny.config(results_dir=str(blocker / "results"))
    prepare._DATA.clear()
    assert len(prepare.prepare_data(cfg, keep=True).encoded["train"]) > 0
    prepare._DATA.clear()
