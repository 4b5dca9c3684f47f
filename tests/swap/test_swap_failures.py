"""Issue 12, paper A: nothing stale, nothing silent, nothing lost (``python -m paperlib swap``)."""

from __future__ import annotations

import functools
import shutil

import pandas as pd
import pytest
import torch

import paperlib.swap.pipeline as pipeline
import paperlib.swap.stats as stats
from paperlib.__main__ import main


@pytest.fixture(autouse=True)
def fast_bootstrap(monkeypatch):
    monkeypatch.setattr(stats, "spearman", functools.partial(stats.spearman, n_resamples=20))


def args_for(model_dir, text, out, cache, *extra):
    return ["swap", "--model", str(model_dir), "--text", str(text), "--metric-tokens", "96",
            "--delta-tokens", "48", "--seq-len", "16", "--batch-size", "4", "--out", str(out),
            "--cache-dir", str(cache), "--quiet", *extra]


def entries(cache):
    return sorted(p for p in cache.iterdir() if p.is_dir())


def error_of(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------ 1. stale results


def test_edited_text_file_is_a_new_cache_entry(gpt2_dir, tmp_path, tiny):
    text = tmp_path / "t.txt"
    text.write_text("\n\n".join(tiny.docs(seed=0)) + "\n")
    cache = tmp_path / "cache"
    assert main(args_for(gpt2_dir, text, tmp_path / "a.csv", cache)) == 0
    text.write_text("\n\n".join(tiny.docs(seed=1)) + "\n")  # same path, other documents
    assert main(args_for(gpt2_dir, text, tmp_path / "b.csv", cache)) == 0
    assert len(entries(cache)) == 2
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert not a["delta"].equals(b["delta"])


def test_new_weights_at_the_same_path_are_a_new_cache_entry(gpt2_dir, text_file, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(gpt2_dir, model_dir)
    cache = tmp_path / "cache"
    assert main(args_for(model_dir, text_file, tmp_path / "a.csv", cache)) == 0
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir)
    with torch.no_grad():
        model.h[1].mlp.c_fc.weight.mul_(1.5)
    model.save_pretrained(model_dir)
    assert main(args_for(model_dir, text_file, tmp_path / "b.csv", cache)) == 0
    assert len(entries(cache)) == 2
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert not a["delta"].equals(b["delta"])


def test_the_key_follows_content_not_names(gpt2_dir, text_file, tmp_path):
    """The key is the configuration and the content: same name, new content -> a new key."""
    copy = tmp_path / "copy.txt"
    shutil.copy(text_file, copy)
    cfg_a = pipeline.SwapConfig(model=str(gpt2_dir), text=str(text_file))
    cfg_b = pipeline.SwapConfig(model=str(gpt2_dir), text=str(copy))
    assert cfg_a.key() != cfg_b.key()  # the names differ ...
    key_b = pipeline.content_key(cfg_b)
    assert pipeline.content_key(cfg_a) != key_b  # ... and so does the config
    copy.write_text(text_file.read_text() + "\nmore words here in a new document .\n")
    assert pipeline.content_key(cfg_b) != key_b  # same name, new content: a new key


# ------------------------------------------------------------------ 4. damaged files


@pytest.mark.parametrize("name", ["fit.npz", "swaps.json"])
def test_damaged_pass_file_is_named_and_recomputed(gpt2_dir, text_file, tmp_path, capsys, name):
    cache = tmp_path / "cache"
    assert main(args_for(gpt2_dir, text_file, tmp_path / "a.csv", cache)) == 0
    damaged = entries(cache)[0] / name
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    capsys.readouterr()
    assert main(args_for(gpt2_dir, text_file, tmp_path / "b.csv", cache)) == 0
    err = capsys.readouterr().err
    assert f"{damaged} is damaged" in err and "recomputing" in err
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv"))
    assert damaged.read_bytes() != data[: len(data) // 2]
    assert not list(entries(cache)[0].glob("*.tmp"))


# ------------------------------------------------------------------ 6. work lost after it is done


def test_unwritable_output_fails_before_any_work(gpt2_dir, text_file, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the output's folder should be: unwritable even for root

    def forbidden(*a, **k):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(pipeline, "fit_layers", forbidden)
    err = error_of(capsys, args_for(gpt2_dir, text_file, blocker / "sub" / "t.csv", tmp_path / "cache"))
    assert "output folder" in err and "not writable" in err
    err = error_of(capsys, args_for(gpt2_dir, text_file, tmp_path / "t.csv", blocker / "cache"))
    assert "cache folder" in err and "not writable" in err


# ------------------------------------------------------------------ 8. bad inputs, one line each


def test_seq_len_above_the_model_context(gpt2_dir, text_file, tmp_path, capsys):
    argv = args_for(gpt2_dir, text_file, tmp_path / "t.csv", "none")
    argv[argv.index("--seq-len") + 1] = "100"  # the tiny GPT-2 has 64 positions
    err = error_of(capsys, argv)
    assert "seq_len 100 exceeds the model's context of 64 positions" in err


def test_unknown_device(gpt2_dir, text_file, tmp_path, capsys):
    err = error_of(capsys, args_for(gpt2_dir, text_file, tmp_path / "t.csv", "none", "--device", "tpu9"))
    assert "unknown device 'tpu9'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_cuda(gpt2_dir, text_file, tmp_path, capsys):
    err = error_of(capsys, args_for(gpt2_dir, text_file, tmp_path / "t.csv", "none", "--device", "cuda"))
    assert "no CUDA GPU is visible here" in err and "--device cpu" in err


def test_jsonl_without_text_field(gpt2_dir, tmp_path, capsys):
    bad = tmp_path / "docs.jsonl"
    bad.write_text('{"text": "one doc"}\n{"body": "no text field"}\n')
    err = error_of(capsys, args_for(gpt2_dir, bad, tmp_path / "t.csv", "none"))
    assert f"{bad} line 2 has no \"text\" string" in err and "['body']" in err


def test_jsonl_line_that_is_not_json(gpt2_dir, tmp_path, capsys):
    bad = tmp_path / "docs.jsonl"
    bad.write_text('{"text": "one doc"}\n{"text": "cut off\n')
    err = error_of(capsys, args_for(gpt2_dir, bad, tmp_path / "t.csv", "none"))
    assert f"{bad} line 2 is not JSON" in err


def test_text_that_is_not_utf8_names_the_file(gpt2_dir, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n\nsecond document\n".encode("latin-1"))
    err = error_of(capsys, args_for(gpt2_dir, bad, tmp_path / "t.csv", "none"))
    assert f"{bad} is not UTF-8 text (byte 0xe9" in err


def test_folder_that_is_not_a_model(text_file, tmp_path, capsys):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    err = error_of(capsys, args_for(folder, text_file, tmp_path / "t.csv", "none"))
    assert f"{folder} is a folder but not a model: it has no config.json (found notes.txt)" in err
    assert "Tokenizer" not in err  # not blamed on the tokenizer class


@pytest.mark.parametrize("bad", ["-1"])
def test_negative_seed(gpt2_dir, text_file, tmp_path, capsys, bad):
    err = error_of(capsys, args_for(gpt2_dir, text_file, tmp_path / "t.csv", "none", "--seed", bad))
    assert "seed must be a non-negative integer" in err
