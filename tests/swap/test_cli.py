"""``python -m paperlib swap``: a CSV table, a disk cache, clean errors."""

from __future__ import annotations

import functools
import runpy
import sys

import numpy as np
import pandas as pd
import pytest

import paperlib.swap.pipeline as pipeline
import paperlib.swap.stats as stats
import paperlib.__main__ as paperlib_main
from paperlib.__main__ import main
from paperlib.swap.analysis import BASELINES

COLUMNS = ["i", "j", "trans_i", "trans_j", "dep_ij", "dep_ji", "r", "delta", "delta_lin", *BASELINES]


@pytest.fixture(autouse=True)
def fast_bootstrap(monkeypatch):
    """The CLI prints Spearman correlations with a bootstrap CI; 2000 resamples take seconds."""
    monkeypatch.setattr(stats, "spearman", functools.partial(stats.spearman, n_resamples=50))


def swap_args(model_dir, text, out, cache, *extra):
    return ["swap", "--model", str(model_dir), "--text", str(text), "--metric-tokens", "96",
            "--delta-tokens", "48", "--seq-len", "16", "--batch-size", "4", "--out", str(out),
            "--cache-dir", str(cache), "--quiet", *extra]


def test_swap_writes_table_and_reuses_cache(gpt2_dir, text_file, tmp_path, capsys, monkeypatch):
    out, layers_out, cache = tmp_path / "table.csv", tmp_path / "layers.csv", tmp_path / "cache"
    assert main(swap_args(gpt2_dir, text_file, out, cache, "--layers-out", str(layers_out))) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 pairs" in printed and "Spearman rho" in printed
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS
    assert len(table) == 3  # n_layers - 1 adjacent pairs
    assert table["i"].tolist() == [1, 2, 3] and table["j"].tolist() == [2, 3, 4]
    assert table.notna().all().all()
    assert (table["delta"] > 0).all() and (table["delta_lin"] >= 0).all()
    layers = pd.read_csv(layers_out)
    assert list(layers.columns) == ["layer", "trans", "r2_fit", "r2_heldout"] and len(layers) == 4

    runs = [p for p in cache.iterdir() if p.is_dir()]
    assert len(runs) == 1
    fit_npz, swaps_json = runs[0] / "fit.npz", runs[0] / "swaps.json"
    assert fit_npz.exists() and swaps_json.exists() and (runs[0] / "config.json").exists()
    stamps = (fit_npz.stat().st_mtime_ns, swaps_json.stat().st_mtime_ns)

    # second run: read back, nothing loaded or recomputed
    def forbidden(*a, **k):
        raise AssertionError("the cached run recomputed or reloaded something")

    monkeypatch.setattr(pipeline, "load_model", forbidden)
    monkeypatch.setattr(pipeline, "fit_layers", forbidden)
    monkeypatch.setattr(pipeline, "measure_swaps", forbidden)
    out2 = tmp_path / "table2.csv"
    assert main(swap_args(gpt2_dir, text_file, out2, cache)) == 0
    assert (fit_npz.stat().st_mtime_ns, swaps_json.stat().st_mtime_ns) == stamps
    pd.testing.assert_frame_equal(pd.read_csv(out2), table)

    # a different configuration is a different cache entry (and is recomputed)
    monkeypatch.undo()
    assert main(swap_args(gpt2_dir, text_file, tmp_path / "t3.csv", cache, "--window", "2")) == 0
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_resume_after_pass_one(gpt2_dir, text_file, tmp_path, monkeypatch):
    """With fit.npz present but no swaps.json, only pass 2 runs."""
    cache = tmp_path / "cache"
    assert main(swap_args(gpt2_dir, text_file, tmp_path / "a.csv", cache)) == 0
    run = next(p for p in cache.iterdir() if p.is_dir())
    (run / "swaps.json").unlink()
    stamp = (run / "fit.npz").stat().st_mtime_ns
    monkeypatch.setattr(pipeline, "fit_layers", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pass 1 rerun")))
    assert main(swap_args(gpt2_dir, text_file, tmp_path / "b.csv", cache)) == 0
    assert (run / "fit.npz").stat().st_mtime_ns == stamp and (run / "swaps.json").exists()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b.csv"), pd.read_csv(tmp_path / "a.csv"))


def test_no_cache(gpt2_dir, text_file, tmp_path):
    out = tmp_path / "t.csv"
    assert main(swap_args(gpt2_dir, text_file, out, "none")) == 0
    assert len(pd.read_csv(out)) == 3
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        (("--window", "0"), "window must be a positive integer"),
        (("--metric-tokens", "16"), "needs at least 32 tokens"),  # hidden size 32
        (("--delta-tokens", "100000"), "were asked for"),
        (("--text", "no_such_source"), "unknown text source"),
        (("--model", "/no/such/model/folder"), "could not load model"),
        (("--dtype", "float64"), "unknown dtype"),
        (("--ridge", "-1"), "ridge must be >= 0"),
    ],
    ids=["window0", "too-few-tokens", "too-few-delta-tokens", "text", "model", "dtype", "ridge"],
)
def test_errors_are_clean_messages_with_exit_code_2(gpt2_dir, text_file, tmp_path, capsys, change, expected):
    args = swap_args(gpt2_dir, text_file, tmp_path / "t.csv", tmp_path / "cache")
    for k in range(0, len(change), 2):
        if change[k] in args:
            args[args.index(change[k]) + 1] = change[k + 1]
        else:
            args += list(change[k : k + 2])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "t.csv").exists()


def test_unsupported_model_is_a_clean_error(tmp_path, text_file, capsys, tiny):
    from transformers import T5Config, T5Model

    T5Model(T5Config(vocab_size=100, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)).save_pretrained(tmp_path / "t5")
    tiny.tokenizer().save_pretrained(tmp_path / "t5")
    capsys.readouterr()
    args = swap_args(tmp_path / "t5", text_file, tmp_path / "t.csv", "none")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Supported:" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["2.5", "four"])
def test_non_integer_window_is_an_argparse_error(gpt2_dir, text_file, tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as info:
        main(swap_args(gpt2_dir, text_file, tmp_path / "t.csv", "none", "--window", bad))
    assert info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_module_entry_point_exit_code_and_message(gpt2_dir, text_file, tmp_path, capsys, monkeypatch):
    """``python -m paperlib swap ...`` (run in-process with runpy: a subprocess would spend seconds
    importing torch and transformers again): exit status 2 and a clean message."""
    argv = ["python -m paperlib", *swap_args(gpt2_dir, text_file, tmp_path / "t.csv", "none", "--window", "0")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(paperlib_main.__file__, run_name="__main__")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: window must be a positive integer" in err and "Traceback" not in err


def test_device_map_auto_and_precision_options_give_the_table(gpt2_dir, text_file, tmp_path, capsys):
    """``--device-map auto`` (here: accelerate places everything on the CPU) gives the same table as
    the plain run; ``--precision bf16x6`` agrees closely (on this ill-conditioned 96-token fit its
    float32 accumulation moves r by 2e-4 relative, bf16x3 by 2e-3); a bad precision is a one-line error."""
    plain, mapped, fast = tmp_path / "plain.csv", tmp_path / "mapped.csv", tmp_path / "fast.csv"
    assert main(swap_args(gpt2_dir, text_file, plain, "none")) == 0
    assert main(swap_args(gpt2_dir, text_file, mapped, "none", "--device-map", "auto", "--stats-device", "cpu")) == 0
    assert main(swap_args(gpt2_dir, text_file, fast, "none", "--precision", "bf16x6")) == 0
    a, b, c = pd.read_csv(plain), pd.read_csv(mapped), pd.read_csv(fast)
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)
    pd.testing.assert_series_equal(a["r"], c["r"], rtol=1e-3)
    assert not np.allclose(a["r"], c["r"], rtol=1e-9, atol=0)  # a different arithmetic really ran
    capsys.readouterr()
    assert main(swap_args(gpt2_dir, text_file, fast, "none", "--precision", "fp8")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: precision must be one of") and "Traceback" not in err
