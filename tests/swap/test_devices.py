"""Models split over devices, where the fit statistics live, and the faster product modes.

No GPU here: the device-aware code paths are exercised with accelerate's hooks on an all-CPU
device map (the same hooks move tensors between cards), and the statistics' placement with the
``meta`` device.  Each result is compared with the plain single-device run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paperlib.data.tokens import batches
from paperlib.swap.analysis import fit_layers, measure_swaps, pair_rows
from paperlib.swap.blocks import BlockCall, ResidualStack, to_device
from paperlib.swap.config import SwapConfig
from paperlib.swap.linear_fit import NormalEquations, gram_products, split_bf16


def token_batches(seed: int, n_seqs: int = 8, vocab: int = 100):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(3, vocab, (int(n),), generator=g).tolist() for n in torch.randint(12, 25, (n_seqs,), generator=g)]
    return batches(seqs, 4, pad_id=0)


def run(stack, **kw):
    fit = fit_layers(stack, token_batches(0), progress=False, **{k: v for k, v in kw.items() if k != "table_budget"})
    swaps = measure_swaps(stack, token_batches(1), fit, progress=False,
                          **{k: v for k, v in kw.items() if k == "precision"},
                          maps_device=kw.get("stats_device"))
    return fit, swaps, pair_rows(fit, swaps, memory_budget=kw.get("table_budget", 2 * 2**30))


def assert_same_table(a, b, rtol=1e-6, atol=1e-9):
    for ra, rb in zip(a[2], b[2]):
        for key in ("r", "delta", "delta_lin", "trans_i", "dep_ij", "dep_ji", "block_influence"):
            assert ra[key] == pytest.approx(rb[key], rel=rtol, abs=atol), key
    np.testing.assert_allclose(a[1].r2_heldout, b[1].r2_heldout, rtol=rtol, atol=atol)


def test_accelerate_dispatched_model_gives_the_same_table(tiny):
    from accelerate import dispatch_model
    from transformers import AutoModel

    plain = run(ResidualStack(tiny.model("llama")))
    torch.manual_seed(0)
    model = AutoModel.from_config(tiny.config("llama")).eval()
    model.load_state_dict(tiny.model("llama").state_dict())
    device_map = {"embed_tokens": "cpu", "rotary_emb": "cpu", "norm": "cpu",
                  **{f"layers.{i}": "cpu" for i in range(tiny.N_LAYERS)}}
    dispatch_model(model, device_map=device_map, force_hooks=True)
    stack = ResidualStack(model)
    assert hasattr(stack.blocks[0], "_hf_hook")  # accelerate's hooks really wrap the blocks
    assert all(d == torch.device("cpu") for d in stack.devices)
    assert_same_table(run(stack), plain)


def test_statistics_in_host_memory_and_chunked_table_give_the_same_table(tiny):
    stack = ResidualStack(tiny.model("gpt2"))
    plain = run(stack)
    assert_same_table(run(stack, stats_device="cpu", table_budget=1), plain)  # one layer per chunk


def test_statistics_follow_the_device_of_their_layer():
    eq = NormalEquations(4, device="meta")
    x = torch.empty(10, 4, device="meta")
    eq.update(x, x)
    assert eq.GC.device.type == "meta" and eq.G.shape == (4, 4) and eq.C.shape == (4, 4)
    call = BlockCall(args=(torch.ones(2),), kwargs={"position_embeddings": (torch.ones(3), torch.ones(3)), "flag": True},
                     device=torch.device("meta"))
    moved = to_device((call.args, call.kwargs), call.device)
    assert moved[0][0].device.type == "meta"
    assert all(t.device.type == "meta" for t in moved[1]["position_embeddings"]) and moved[1]["flag"] is True
    seen = {}

    def block(x, *args, **kwargs):
        seen.update(x=x.device, arg=args[0].device)
        return (x,)

    call(block, torch.ones(2, 3))
    assert seen == {"x": torch.device("meta"), "arg": torch.device("meta")}


def test_split_bf16_products_are_close_to_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=g) * torch.logspace(-2, 2, 16)  # badly scaled columns
    y = torch.randn(500, 16, generator=g)
    hi, lo = split_bf16(x)
    assert hi.dtype == lo.dtype == torch.bfloat16
    rel = ((hi.float() + lo.float() - x).abs() / x.abs()).max()
    assert rel < 2**-15  # 16 significant bits
    three = split_bf16(x, 3)
    rel3 = ((three[0].float() + three[1].float() + three[2].float() - x).abs() / x.abs()).max()
    assert rel3 < 2**-22 and rel3 < rel / 50  # 24 bits: float32's precision
    exact = gram_products(x.double(), y.double(), "float64")
    for precision, tol in (("bf16x3", 1e-4), ("bf16x6", 1e-6), ("tf32", 1e-6)):  # tf32 is float32 on a CPU
        approx = gram_products(x, y, precision).double()
        err = (approx - exact).norm() / exact.norm()
        assert err < tol, (precision, float(err))
    assert (gram_products(x, y, "bf16x3").double() - exact).norm() / exact.norm() > 1e-9  # really approximate


@pytest.mark.parametrize("precision", ["bf16x3", "bf16x6", "tf32"])
def test_fast_precisions_agree_with_float64_on_a_tiny_model(tiny, precision):
    stack = ResidualStack(tiny.model("llama"))
    exact = run(stack)
    fast = run(stack, precision=precision)
    for re, rf in zip(exact[2], fast[2]):
        assert rf["r"] == pytest.approx(re["r"], rel=1e-3)
        assert rf["delta_lin"] == pytest.approx(re["delta_lin"], rel=1e-3)
        assert rf["delta"] == re["delta"]  # delta does not use the fits


def test_config_fields_for_placement_do_not_change_the_cache_key():
    base = SwapConfig()
    assert SwapConfig(stats_device="cpu").key() == base.key()
    for act in ("model", "fused"):  # with the activations fixed, where the model runs does not count
        assert SwapConfig(device_map="auto", activations=act).key() == SwapConfig(activations=act).key()
    # activations="auto" fuses on GPUs: other numbers, another key; the model's own modules keep
    # the keys of runs made before the option existed (CPU runs resolve to them)
    assert SwapConfig(device="cuda").key() != base.key()
    assert SwapConfig(activations="model").key() == base.key()
    assert SwapConfig(device="cuda", activations="model").key() == base.key()
    with pytest.raises(ValueError, match="activations must be one of"):
        SwapConfig(activations="fast")
    assert SwapConfig(precision="bf16x3").key() != base.key()
    with pytest.raises(ValueError, match="precision must be one of"):
        SwapConfig(precision="fp8")
    with pytest.raises(ValueError, match="stats_device"):
        SwapConfig(stats_device="gpu")


def test_load_model_with_a_device_map(gpt2_dir):
    from paperlib.data.models import load_model

    model, _ = load_model(str(gpt2_dir), device_map={"": "cpu"})
    assert not model.training and ResidualStack(model).devices[0] == torch.device("cpu")
