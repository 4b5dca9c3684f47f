"""Issue 15, speed without other numbers: maps copied to the host only when read (and saved while
pass 2 runs), and GPT-2's composed tanh-GELU run as one fused kernel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import paperlib.swap.pipeline as pipeline
from paperlib.data.tokens import batches as make_batches
from paperlib.swap.analysis import fit_layers, layer_rows, measure_swaps, pair_rows
from paperlib.swap.blocks import ResidualStack
from paperlib.swap.fused_activations import composed_tanh_gelus, fused_activations
from paperlib.swap.host_maps import HostMaps


def _batches(tiny):
    # 128 tokens: more than d = 32, so the fits are determined
    return make_batches(tiny.sequences([20, 15, 18, 12] * 2, seed=1), 4, pad_id=0)


def _tensors(n=3, d=5, device="cpu"):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(d, d, generator=g, dtype=torch.float64).to(device) for _ in range(n)]


def test_host_maps_copy_once_on_first_read_and_release_the_tensors():
    ts = _tensors()
    maps = HostMaps(ts)
    assert len(maps) == 3 and maps.shape == (5, 5) and maps._host is None  # no copy for len/shape
    np.testing.assert_array_equal(maps[1], ts[1].numpy())
    assert maps._tensors is None  # released after the copy
    arr = maps.array()
    assert arr.shape == (3, 5, 5) and arr.dtype == np.float64
    assert all(np.shares_memory(a, arr) for a in maps)  # items are views of the one array
    np.testing.assert_array_equal(np.stack(list(maps)), torch.stack(ts).numpy())


def test_host_maps_read_from_two_threads_copy_once():
    maps = HostMaps(_tensors(n=8, d=64))
    out: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: out.append(maps.array())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and all(o is out[0] for o in out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_host_maps_on_a_side_stream_wait_for_the_work_that_made_the_maps(monkeypatch):
    import paperlib.swap.host_maps as hm

    monkeypatch.setattr(hm._PinnedCopier, "PIECE", 10_000)  # 7 pieces per map, through both buffers
    vals = _tensors(n=4, d=256)
    ts = [torch.zeros(256, 256, dtype=torch.float64, device="cuda") for _ in vals]
    big = torch.randn(4096, 4096, device="cuda")
    for _ in range(30):  # keeps the default stream busy for a while ...
        big = torch.tanh(big @ big)
    for t, v in zip(ts, vals):  # ... so that these writes are still queued when the maps are made
        t.copy_(v.to("cuda", non_blocking=True))
    # column-major, as torch.linalg's solvers return them (a row-major copy is needed)
    ts = [t.T.contiguous().T for t in ts]
    assert not ts[0].is_contiguous()
    maps = HostMaps(ts)
    for _ in range(30):  # later work (as pass 2 would queue): the copy need not wait for it
        big = torch.tanh(big @ big)
    np.testing.assert_array_equal(maps.array(), torch.stack(vals).numpy())


def test_fit_keeps_maps_on_the_device_and_copies_them_when_read(tiny):
    model = tiny.model("gpt2")
    stack = ResidualStack(model)
    batches = _batches(tiny)
    fit = fit_layers(stack, batches, progress=False)
    assert isinstance(fit.A, HostMaps) and fit.A._host is None
    swaps = measure_swaps(stack, batches, fit, progress=False)
    rows = pair_rows(fit, swaps)  # on the CPU the table reads the host maps
    assert fit.A._host is not None
    for i, row in enumerate(rows):
        assert row["trans_i"] == pytest.approx(np.linalg.norm(fit.A[i]) / np.sqrt(fit.d))
    assert [r["trans"] for r in layer_rows(fit, swaps)] == pytest.approx([r["trans_i"] for r in rows] + [rows[-1]["trans_j"]])


# ------------------------------------------------------------------ saving while pass 2 runs

def test_fit_file_is_written_while_pass_2_runs_and_equals_the_maps(gpt2_dir, text_file, tmp_path, monkeypatch):
    started = threading.Event()
    real_save = pipeline._save_fit

    def save(path, fit):
        started.set()
        real_save(path, fit)

    real_measure = pipeline.measure_swaps

    def measure(*a, **k):
        assert started.wait(10), "the fit was not being saved while pass 2 ran"
        return real_measure(*a, **k)

    monkeypatch.setattr(pipeline, "_save_fit", save)
    monkeypatch.setattr(pipeline, "measure_swaps", measure)
    cfg = pipeline.SwapConfig(model=str(gpt2_dir), text=str(text_file), metric_tokens=96, delta_tokens=48,
                              seq_len=16, batch_size=4)
    res = pipeline.run_swap_analysis(cfg, cache_dir=tmp_path, progress=False)
    saved = pipeline._load_fit(tmp_path / pipeline.content_key(cfg) / "fit.npz")
    np.testing.assert_array_equal(np.stack(saved.A), np.stack(list(res.fit.A)))
    assert saved.r2 == pytest.approx(res.fit.r2)


def test_an_error_in_pass_2_leaves_the_fit_file_for_the_rerun(gpt2_dir, text_file, tmp_path, monkeypatch):
    cfg = pipeline.SwapConfig(model=str(gpt2_dir), text=str(text_file), metric_tokens=96, delta_tokens=48,
                              seq_len=16, batch_size=4)

    def broken(*a, **k):
        raise RuntimeError("pass 2 failed")

    monkeypatch.setattr(pipeline, "measure_swaps", broken)
    with pytest.raises(RuntimeError, match="pass 2 failed"):
        pipeline.run_swap_analysis(cfg, cache_dir=tmp_path, progress=False)
    assert (tmp_path / pipeline.content_key(cfg) / "fit.npz").exists()
    monkeypatch.undo()
    calls = []
    real_fit = pipeline.fit_layers
    monkeypatch.setattr(pipeline, "fit_layers", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    res = pipeline.run_swap_analysis(cfg, cache_dir=tmp_path, progress=False)
    assert calls == [] and "pass1" not in res.seconds and "pass2" in res.seconds  # resumed at pass 2


# ------------------------------------------------------------------ fused tanh-GELU

def test_fused_gelu_is_the_same_function_and_the_model_is_restored(tiny):
    model = tiny.model("gpt2")  # GPT-2's gelu_new: NewGELUActivation in every block
    found = composed_tanh_gelus(model)
    assert len(found) == len(model.h)
    originals = [getattr(p, n) for p, n in found]
    x = torch.linspace(-6, 6, 2001)
    with fused_activations(model) as n:
        assert n == len(model.h)
        assert all(isinstance(getattr(p, k), nn.GELU) for p, k in found)
        fused = getattr(*found[0])(x)
    assert [getattr(p, n) for p, n in found] == originals  # the model's own modules are back
    np.testing.assert_allclose(fused.numpy(), originals[0](x).numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(KeyError):
        with fused_activations(model):
            raise KeyError("inside")
    assert [getattr(p, n) for p, n in found] == originals  # restored on errors too
    with fused_activations(model, enabled=False) as n:
        assert n == 0
    with fused_activations(tiny.model("llama")) as n:  # SiLU: already one kernel, left alone
        assert n == 0


def test_fused_gelu_gives_the_table_of_the_model_own_code(tiny):
    model = tiny.model("gpt2")
    stack = ResidualStack(model)
    batches = _batches(tiny)
    fit0 = fit_layers(stack, batches, progress=False)
    rows0 = pair_rows(fit0, measure_swaps(stack, batches, fit0, progress=False))
    with fused_activations(model):
        fit1 = fit_layers(stack, batches, progress=False)
        rows1 = pair_rows(fit1, measure_swaps(stack, batches, fit1, progress=False))
    for r0, r1 in zip(rows0, rows1):
        for k in ("r", "delta", "delta_lin", "trans_i", "dep_ij"):
            assert r1[k] == pytest.approx(r0[k], rel=1e-4), k


def test_without_a_cache_the_maps_leave_the_device_when_the_run_ends(gpt2_dir, text_file):
    cfg = pipeline.SwapConfig(model=str(gpt2_dir), text=str(text_file), metric_tokens=96, delta_tokens=48,
                              seq_len=16, batch_size=4)
    res = pipeline.run_swap_analysis(cfg, cache_dir=None, progress=False)
    assert isinstance(res.fit.A, HostMaps)
    assert res.fit.A._tensors is None and res.fit.A_device is None  # no device references kept
    assert [r for r in res.layers["trans"]] == pytest.approx([np.linalg.norm(a) / np.sqrt(res.fit.d) for a in res.fit.A])
