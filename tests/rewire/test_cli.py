"""``python -m paperlib rewire``: a CSV table, a resumable disk cache, clean errors."""

from __future__ import annotations

import functools

import pandas as pd
import pytest

import paperlib.rewire.pipeline as pipeline
import paperlib.rewire.report as report
from paperlib.__main__ import main
from paperlib.rewire.pipeline import COLUMNS


@pytest.fixture(autouse=True)
def fast_bootstrap(monkeypatch):
    monkeypatch.setattr(report, "spearman", functools.partial(report.spearman, n_resamples=50))


def rewire_args(model_dir, text, out, cache, *extra):
    return ["rewire", "--model", str(model_dir), "--text", str(text), "--tokens", "64", "--metric-tokens", "96",
            "--delta-tokens", "48", "--seq-len", "16", "--batch-size", "2", "--out", str(out),
            "--cache-dir", str(cache), "--quiet", *extra]


def test_rewire_writes_table_and_reuses_cache(lm_dir, rewire_text, tmp_path, capsys, monkeypatch):
    out, rho_out, cache = tmp_path / "table.csv", tmp_path / "rho.csv", tmp_path / "cache"
    args = rewire_args(lm_dir, rewire_text, out, cache, "--ops", "swap", "delete", "parallel", "repeat",
                       "--spearman-out", str(rho_out))
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 14 operations" in printed and "64 held-out tokens" in printed and "Spearman" in printed
    table = pd.read_csv(out)
    assert list(table.columns) == list(COLUMNS)
    assert table["op"].value_counts().to_dict() == {"swap": 3, "delete": 4, "parallel": 3, "repeat": 4}
    assert table.loc[table["op"] == "delete", "j"].isna().all()
    assert (table.loc[table["op"] == "swap", "j"] == table.loc[table["op"] == "swap", "i"] + 1).all()
    assert table.loc[table["op"] == "swap", "r"].notna().all() and table.loc[table["op"] != "swap", "r"].isna().all()
    assert table[["delta", "kl", "dnll", "linear", "block_influence"]].notna().all().all()
    assert (table["kl"] > 0).all()  # tiny GPT-2 LM with its head: output costs exist
    rho = pd.read_csv(rho_out)
    assert set(rho["family"]) == {"swap", "delete", "parallel", "repeat"} and (rho["cost"] == "kl").all()
    assert (cache / "swap").is_dir() and len(list((cache / "rewire").iterdir())) == 1

    def forbidden(*a, **k):
        raise AssertionError("the cached run recomputed or reloaded something")

    monkeypatch.setattr(pipeline, "load_model_with_head", forbidden)
    monkeypatch.setattr(pipeline, "measure_rewirings", forbidden)
    out2 = tmp_path / "table2.csv"
    assert main(rewire_args(lm_dir, rewire_text, out2, cache, "--ops", "swap", "delete", "parallel", "repeat")) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out2), table)


def test_rewire_resumes_from_saved_state(lm_dir, rewire_text, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    args = rewire_args(lm_dir, rewire_text, tmp_path / "a.csv", cache, "--ops", "swap_all")
    assert main(args) == 0
    run = next((cache / "rewire").iterdir())
    (run / "ops.csv").unlink()
    (run / "meta.json").unlink()
    real = pipeline.measure_rewirings
    seen = []

    def spy(*a, state=None, **k):
        seen.append(state)
        return real(*a, state=state, **k)

    monkeypatch.setattr(pipeline, "measure_rewirings", spy)
    assert main(rewire_args(lm_dir, rewire_text, tmp_path / "b.csv", cache, "--ops", "swap_all")) == 0
    assert seen[0] is not None and seen[0].batches_done > 0  # resumed, nothing left to do
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b.csv"), pd.read_csv(tmp_path / "a.csv"))


def test_encoder_has_hidden_state_costs_only(tmp_path, rewire_text, encoder):
    from tests.swap.conftest import make_tokenizer

    folder = tmp_path / "bert"
    encoder("bert").save_pretrained(folder)
    make_tokenizer(bert_style=True).save_pretrained(folder)
    out = tmp_path / "t.csv"
    assert main(rewire_args(folder, rewire_text, out, "none", "--ops", "delete", "swap")) == 0
    table = pd.read_csv(out)
    assert table[["kl", "dnll"]].isna().all().all()
    assert (table["delta_out"] > 0).all() and (table["delta"] > 0).all()


@pytest.mark.parametrize(
    "change, expected",
    [
        (("--ops", "shuffle"), "unknown or no operations ['shuffle']"),
        (("--max-span", "1"), "max_span must be at least 2"),
        (("--tokens", "0"), "tokens must be positive"),
        (("--tokens", "100000"), "were asked for"),
        (("--metric-tokens", "16"), "needs at least 32 tokens"),
        (("--text", "no_such_source"), "unknown text source"),
        (("--model", "/no/such/model/folder"), "could not load model"),
        (("--window", "0"), "window must be a positive integer"),
    ],
    ids=["op", "max-span", "tokens0", "too-many-tokens", "too-few-metric", "text", "model", "window"],
)
def test_errors_are_clean_messages_with_exit_code_2(lm_dir, rewire_text, tmp_path, capsys, change, expected):
    args = rewire_args(lm_dir, rewire_text, tmp_path / "t.csv", tmp_path / "cache", *change)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "t.csv").exists()
