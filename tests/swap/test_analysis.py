"""The two passes of the swap analysis against direct, independent computations.

The key check: ``delta`` from :func:`measure_swaps` equals what one gets by really swapping two
blocks in the model's ``ModuleList`` and running the model's own forward pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from paperlib.data.tokens import TokenBatch, batches
from paperlib.swap.analysis import BASELINES, FitResult, fit_layers, layer_rows, measure_swaps, pair_rows
from paperlib.swap.blocks import ResidualStack
from paperlib.swap.indicators import dep, swap_score, trans

N = 4  # blocks of the tiny models (tests/swap/conftest.py)
LENGTHS = (20, 13, 17, 9, 20, 11)  # different lengths: batches of 3 are right-padded

PAIR_COLUMNS = ["i", "j", "trans_i", "trans_j", "dep_ij", "dep_ji", "r", "delta", "delta_lin", *BASELINES]


# ----------------------------------------------------------------------------- helpers


def block_list_owner(model: nn.Module) -> tuple[nn.Module, str]:
    """Where each family keeps its blocks (written out here, independent of find_blocks)."""
    if hasattr(model, "h"):
        return model, "h"
    if hasattr(model, "layers"):
        return model, "layers"
    return model.encoder, "layer"


@torch.no_grad()
def run_in_order(model: nn.Module, order: list[int], batch: TokenBatch) -> list[torch.Tensor]:
    """Full forward pass with the blocks reordered; returns the input of the first block and the
    output of the block at every position (hooks), i.e. ``[X_0, X_1', ..., X_n']``."""
    owner, attr = block_list_owner(model)
    original = getattr(owner, attr)
    reordered = nn.ModuleList([original[k] for k in order])
    captured: list = [None] * (len(order) + 1)
    handles = []

    def pre(module, args, kwargs):
        captured[0] = (kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).clone()

    def post(pos):
        def hook(module, args, out):
            captured[pos + 1] = (out[0] if isinstance(out, tuple) else out).clone()
        return hook

    handles.append(reordered[0].register_forward_pre_hook(pre, with_kwargs=True))
    for pos, blk in enumerate(reordered):
        handles.append(blk.register_forward_hook(post(pos)))
    setattr(owner, attr, reordered)
    try:
        kwargs = {"use_cache": False} if attr != "layer" else {}
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
    finally:
        setattr(owner, attr, original)
        for h in handles:
            h.remove()
    assert all(c is not None for c in captured)
    return captured


def direct_delta(model: nn.Module, batch_list: list[TokenBatch]) -> np.ndarray:
    """``mean_t ||X_{i+2} - X'_{i+2}|| / ||X_i||`` with ``X'`` from the model with blocks i, i+1 swapped."""
    n = len(getattr(*block_list_owner(model)))
    sums, count = np.zeros(n - 1), 0
    for b in batch_list:
        real = b.attention_mask.bool()
        base = run_in_order(model, list(range(n)), b)
        for i in range(n - 1):
            order = list(range(n))
            order[i], order[i + 1] = i + 1, i
            swapped = run_in_order(model, order, b)
            torch.testing.assert_close(swapped[i], base[i])  # same input to the pair
            num = (base[i + 2] - swapped[i + 2])[real].double().norm(dim=-1)
            sums[i] += float((num / base[i][real].double().norm(dim=-1)).sum())
        count += int(real.sum())
    return sums / count


@torch.no_grad()
def hf_states(model: nn.Module, batch_list: list[TokenBatch]) -> list[list[np.ndarray]]:
    """Per sequence, ``X_0 .. X_n`` as float64 arrays of its real tokens (model forward + hooks)."""
    n = len(getattr(*block_list_owner(model)))
    out = []
    for b in batch_list:
        states = run_in_order(model, list(range(n)), b)
        for r in range(b.input_ids.shape[0]):
            m = b.attention_mask[r].bool()
            out.append([s[r][m].double().numpy() for s in states])
    return out


def hand_window_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Rows: mean of the row and the ``window - 1`` before it (fewer at the start)."""
    return np.stack([x[max(0, t - window + 1) : t + 1].mean(0) for t in range(len(x))])


def make_batches(tiny, lengths=LENGTHS, batch_size=3, seed=0) -> list[TokenBatch]:
    return batches(tiny.sequences(lengths, seed=seed), batch_size, pad_id=0)


@pytest.fixture(scope="module")
def fitted(tiny):
    """Pass 1 and pass 2 for each of the three families (fit on 24 sequences, delta on 6)."""
    out = {}
    for name in ("gpt2", "llama", "bert"):
        model = tiny.model(name)
        stack = ResidualStack(model)
        fit_b = make_batches(tiny, lengths=[20, 15, 18, 12] * 4, batch_size=4, seed=1)
        delta_b = make_batches(tiny)
        fit = fit_layers(stack, fit_b, window=4, progress=False)
        swaps = measure_swaps(stack, delta_b, fit, window=4, progress=False)
        out[name] = (model, stack, fit_b, delta_b, fit, swaps)
    return out


# ----------------------------------------------------------------------------- delta


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_delta_equals_really_swapping_the_blocks(fitted, name):
    model, stack, _, delta_b, fit, swaps = fitted[name]
    want = direct_delta(model, delta_b)
    got = np.array(swaps.delta)
    assert got.shape == (N - 1,)
    assert np.all(want > 1e-3), want  # the swaps change the output measurably: not a trivial 0 = 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert swaps.n_tokens == sum(LENGTHS)


def test_delta_of_the_model_without_swap_is_zero(tiny):
    """Sanity check of the reference: the unswapped order reproduces the trace exactly."""
    model = tiny.model("gpt2")
    b = make_batches(tiny)[0]
    tr = ResidualStack(model).trace(b.input_ids, b.attention_mask)
    states = run_in_order(model, list(range(N)), b)
    for i in range(N + 1):
        torch.testing.assert_close(states[i], tr.hidden[i])


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_padding_does_not_change_the_results(tiny, fitted, name):
    model, stack, fit_b, delta_b, fit, swaps = fitted[name]
    fit_b1 = make_batches(tiny, lengths=[20, 15, 18, 12] * 4, batch_size=1, seed=1)
    delta_b1 = make_batches(tiny, batch_size=1)
    assert all(int(b.attention_mask.min()) == 1 for b in fit_b1 + delta_b1)  # really unpadded
    assert any(int(b.attention_mask.min()) == 0 for b in fit_b + delta_b)  # really padded
    fit1 = fit_layers(stack, fit_b1, window=4, progress=False)
    swaps1 = measure_swaps(stack, delta_b1, fit1, window=4, progress=False)
    assert fit1.n_tokens == fit.n_tokens
    for a, a1 in zip(fit.A, fit1.A):
        np.testing.assert_allclose(a1, a, rtol=1e-3, atol=1e-4 * np.abs(a).max())
    np.testing.assert_allclose(fit1.r2, fit.r2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(swaps1.delta, swaps.delta, rtol=1e-4)
    np.testing.assert_allclose(swaps1.delta_lin, swaps.delta_lin, rtol=1e-3)
    np.testing.assert_allclose(swaps1.r2_heldout, swaps.r2_heldout, rtol=1e-4, atol=1e-5)
    for k in BASELINES:
        np.testing.assert_allclose(fit1.baselines[k], fit.baselines[k], rtol=1e-4)


# ----------------------------------------------------------------------------- fit, delta', baselines


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_fit_equals_numpy_lstsq_and_delta_lin_equals_brute_force(fitted, name):
    model, _, fit_b, delta_b, fit, swaps = fitted[name]
    seqs = hf_states(model, fit_b)
    for i in range(N):
        xhat = np.concatenate([hand_window_mean(s[i], 4) for s in seqs])
        y = np.concatenate([s[i + 1] - s[i] for s in seqs])
        a_ref = np.linalg.lstsq(xhat, y, rcond=None)[0]
        np.testing.assert_allclose(fit.A[i], a_ref, rtol=1e-3, atol=1e-4 * np.abs(a_ref).max())
        r2 = 1 - ((y - xhat @ a_ref) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        assert fit.r2[i] == pytest.approx(r2, abs=1e-4)
    assert fit.n_tokens == sum(len(s[0]) for s in seqs)

    # delta' (eq. 16), one token at a time
    held = hf_states(model, delta_b)
    for i in range(N - 1):
        K = fit.A[i] @ fit.A[i + 1] - fit.A[i + 1] @ fit.A[i]
        vals = []
        for s in held:
            xh = hand_window_mean(s[i], 4)
            for t in range(len(xh)):
                vals.append(np.linalg.norm(xh[t] @ K) / np.linalg.norm(xh[t]))
        assert swaps.delta_lin[i] == pytest.approx(np.mean(vals), rel=1e-4)
    # held-out R^2 with the fitted maps
    for i in range(N):
        xhat = np.concatenate([hand_window_mean(s[i], 4) for s in held])
        y = np.concatenate([s[i + 1] - s[i] for s in held])
        r2 = 1 - ((y - xhat @ fit.A[i]) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        assert swaps.r2_heldout[i] == pytest.approx(r2, abs=1e-4)


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_baselines_match_their_formulas(fitted, name):
    model, _, fit_b, _, fit, _ = fitted[name]
    seqs = hf_states(model, fit_b)
    for i in range(N - 1):
        a = np.concatenate([s[i] for s in seqs])
        b = np.concatenate([s[i + 2] for s in seqs])
        cos = np.clip((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1), -1, 1)
        assert fit.baselines["block_influence"][i] == pytest.approx(np.mean(1 - cos), rel=1e-4, abs=1e-6)
        assert fit.baselines["angular_distance"][i] == pytest.approx(np.mean(np.arccos(cos) / math.pi), rel=1e-4, abs=1e-6)
        rel = np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
        assert fit.baselines["relative_update"][i] == pytest.approx(np.mean(rel), rel=1e-4)
        # Gromov et al.: the angle at each sequence's last token only, averaged over sequences
        last = [np.arccos(np.clip(s[i][-1] @ s[i + 2][-1] / np.linalg.norm(s[i][-1]) / np.linalg.norm(s[i + 2][-1]),
                                  -1, 1)) / math.pi for s in seqs]
        assert fit.baselines["angular_distance_last"][i] == pytest.approx(np.mean(last), rel=1e-4, abs=1e-6)


def test_pair_and_layer_rows(fitted):
    _, _, _, _, fit, swaps = fitted["llama"]
    rows = pair_rows(fit, swaps)
    assert len(rows) == N - 1
    assert list(rows[0]) == PAIR_COLUMNS
    for k, row in enumerate(rows):
        i = k  # 0-based index of the first layer
        assert (row["i"], row["j"]) == (k + 1, k + 2)  # 1-based, adjacent
        assert row["trans_i"] == pytest.approx(np.linalg.norm(fit.A[i]) / np.sqrt(fit.A[i].shape[0]))
        assert row["trans_j"] == pytest.approx(trans(fit.A[i + 1]))
        assert row["dep_ij"] == pytest.approx(
            np.linalg.norm(fit.A[i] @ fit.A[i + 1], 2) / np.linalg.norm(fit.A[i], 2) / np.linalg.norm(fit.A[i + 1], 2))
        assert row["dep_ji"] == pytest.approx(dep(fit.A[i + 1], fit.A[i]))
        assert 0.0 <= row["dep_ij"] <= 1.0 + 1e-12
        assert row["r"] == pytest.approx(row["trans_i"] * row["trans_j"] * (row["dep_ij"] + row["dep_ji"]))
        assert row["delta"] == swaps.delta[i] and row["delta_lin"] == swaps.delta_lin[i]
        for b in BASELINES:
            assert row[b] == fit.baselines[b][i]
    assert "delta" not in pair_rows(fit)[0]
    lrows = layer_rows(fit, swaps)
    assert [r["layer"] for r in lrows] == list(range(1, N + 1))
    assert [r["r2_fit"] for r in lrows] == fit.r2
    assert [r["r2_heldout"] for r in lrows] == swaps.r2_heldout
    assert "r2_heldout" not in layer_rows(fit)[0]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_maps_kept_on_the_device_give_the_same_results_as_host_copies(fitted, name):
    """fit_layers keeps each A_i where it was solved (``A_device``); pass 2 and the table must give
    bit-identical numbers to the path that copies ``A`` from the host (a fit loaded from disk)."""
    _, stack, _, delta_b, fit, swaps = fitted[name]
    assert fit.A_device is not None and len(fit.A_device) == N
    for a, t in zip(fit.A, fit.A_device):
        assert t.dtype == torch.float64 and np.array_equal(t.cpu().numpy(), a)
    host = FitResult(A=list(fit.A), r2=fit.r2, n_tokens=fit.n_tokens, baselines=fit.baselines)
    assert host.A_device is None
    swaps_host = measure_swaps(stack, delta_b, host, window=4, progress=False)
    assert swaps_host == swaps  # exact, every field
    assert pair_rows(host, swaps_host) == pair_rows(fit, swaps)



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_table_on_the_gpu_equals_the_host_table(fitted):
    """Trans and the spectral norms on the GPU (maps moved there, batched eigen-solver) give the
    host's table to rounding."""
    _, _, _, _, fit, swaps = fitted["gpt2"]
    host = pair_rows(fit, swaps)
    gpu = pair_rows(fit, swaps, device="cuda")
    for a, b in zip(gpu, host):
        for k in ("trans_i", "trans_j", "dep_ij", "dep_ji", "r"):
            assert a[k] == pytest.approx(b[k], rel=1e-10, abs=1e-14), k

def test_maps_are_not_kept_when_the_statistics_live_on_the_host(tiny):
    """``stats_device="cpu"`` spares device memory for large models: no device copies kept."""
    stack = ResidualStack(tiny.model("gpt2"))
    fit = fit_layers(stack, make_batches(tiny, lengths=[20, 15, 18, 12] * 4, batch_size=4, seed=1),
                     progress=False, stats_device="cpu")
    assert fit.A_device is None
    assert np.array_equal(fit.map_on(1, "cpu").numpy(), fit.A[1])


# ----------------------------------------------------------------------------- synthetic linear model


def causal_window_mean(x: torch.Tensor, mask: torch.Tensor, window: int) -> torch.Tensor:
    """Explicit loop (independent of paperlib.swap.linear_fit.window_mean)."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if not mask[b, t]:
                continue
            lo = max(0, t - window + 1)
            m = mask[b, lo : t + 1].bool()
            out[b, t] = x[b, lo : t + 1][m].mean(0)
    return out


class LinearBlock(nn.Module):
    """``L(X) = X + Xhat A`` with ``Xhat`` the causal window mean: eq. 12 holds exactly."""

    def __init__(self, A: torch.Tensor, window: int):
        super().__init__()
        self.register_buffer("A", A)
        self.window = window

    def forward(self, x, attention_mask=None):
        return x + causal_window_mean(x, attention_mask, self.window) @ self.A


class LinearStack(nn.Module):
    """A 'model' made of linear residual blocks (found by find_blocks as ``layers``)."""

    def __init__(self, As, window: int, d: int, vocab: int = 50):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = nn.Embedding(vocab, d)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab, d, generator=g) + 0.5)
        self.layers = nn.ModuleList([LinearBlock(A, window) for A in As])

    def forward(self, input_ids, attention_mask, use_cache=False):
        x = self.embed(input_ids)
        for blk in self.layers:
            x = blk(x, attention_mask=attention_mask)
        return x


def synthetic_maps(d: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    half = d // 2
    A0 = torch.zeros(d, d)
    A0[:half, :half] = 0.3 * torch.randn(half, half, generator=g)  # acts on the first half only
    A1 = torch.zeros(d, d)
    A1[half:, half:] = 0.3 * torch.randn(half, half, generator=g)  # the second half: commutes with A0
    A2 = 0.3 * torch.randn(d, d, generator=g)  # generic: does not commute with A1
    return [A0, A1, A2]


def synthetic_batches(lengths=(9, 14, 11, 6, 14, 12, 8, 10), seed=0, vocab=50):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]
    return batches(seqs, 3, pad_id=0)


@pytest.mark.parametrize("window", [1, 4])
def test_fit_recovers_the_maps_of_a_linear_model(window):
    As = synthetic_maps()
    stack = ResidualStack(LinearStack(As, window, d=8))
    fit = fit_layers(stack, synthetic_batches(), window=window, progress=False)
    for a, A in zip(fit.A, As):
        np.testing.assert_allclose(a, A.double().numpy(), atol=1e-5)
    np.testing.assert_allclose(fit.r2, 1.0, atol=1e-6)
    swaps = measure_swaps(stack, synthetic_batches(seed=1), fit, window=window, progress=False)
    np.testing.assert_allclose(swaps.r2_heldout, 1.0, atol=1e-6)

    rows = pair_rows(fit, swaps)
    assert [(r["i"], r["j"]) for r in rows] == [(1, 2), (2, 3)]
    # A0 and A1 act on complementary halves: A0 A1 = A1 A0 = 0, so both Dep, r, delta' vanish
    assert rows[0]["dep_ij"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["dep_ji"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["r"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["delta_lin"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["trans_i"] == pytest.approx(trans(As[0].numpy()), rel=1e-5)
    assert rows[1]["trans_j"] == pytest.approx(trans(As[2].numpy()), rel=1e-5)
    assert rows[1]["dep_ij"] > 0.05 and rows[1]["delta_lin"] > 1e-3
    r = swap_score(rows[1]["trans_i"], rows[1]["trans_j"], rows[1]["dep_ij"], rows[1]["dep_ji"])
    assert rows[1]["r"] == pytest.approx(r)
    if window == 1:
        # X + X A_i layers: the swap difference is exactly X (A_i A_j - A_j A_i), so delta == delta'
        np.testing.assert_allclose(swaps.delta, swaps.delta_lin, rtol=1e-4, atol=1e-6)
        assert rows[0]["delta"] == pytest.approx(0.0, abs=1e-5)
    layers = layer_rows(fit, swaps)
    assert [r["layer"] for r in layers] == [1, 2, 3]


def test_fit_layers_rejects_no_batches(tiny):
    stack = ResidualStack(tiny.model("gpt2"))
    with pytest.raises(ValueError):
        fit_layers(stack, [], progress=False)
