"""The Triton LoRA-A op under dropout (paperlib.loraild.lora_a_kernel) against plain torch.

Runs on CUDA when present; otherwise in Triton's CPU interpreter.  Interpreter mode is fixed when
a ``triton.jit`` function is defined, triton's own (``tl.rand4x``) included, and transformers
imports triton, so without CUDA ``conftest.py`` sets ``TRITON_INTERPRET=1`` before any test module
is imported (if triton was imported before without it, these tests skip).  Skipped where triton is
not installed.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

from paperlib.loraild import lora_a_kernel as K  # noqa: E402
from paperlib.loraild.fused_lora import FusedLoraRecorder  # noqa: E402
from paperlib.loraild.models import LORA_TARGETS  # noqa: E402


@pytest.fixture(scope="module")
def device(triton_device: str) -> str:
    return triton_device


def inputs(device, n, d, r, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(device, dtype).requires_grad_()
    a = (torch.randn(3, r, d, generator=g) / math.sqrt(d)).to(device, dtype).requires_grad_()
    dh = torch.randn(3, n, r, generator=g).to(device, dtype)
    return x, a, dh


def reference(x, a, dh, masks, p):
    """fp64 ``H[c] = ((x * m_c) / (1 - p)) A[c]^T`` and its gradients by autograd."""
    x64 = x.detach().double().requires_grad_()
    a64 = a.detach().double().requires_grad_()
    xs = x64 * masks.double() / (1 - p)
    h = torch.bmm(xs, a64.transpose(1, 2))
    h.backward(dh.double())
    return h.detach(), x64.grad, a64.grad


def kernel_run(x, a, dh, p, seed):
    x, a = x.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    h = K.dropout_lora_a(x, a, p, seed=seed)
    h.backward(dh)
    return h.detach(), x.grad, a.grad


def assert_close(got, want, dtype):
    # fp32: products accumulate in fp32; bf16: the outputs are rounded to bf16 (8 bits)
    tol = 2e-5 if dtype == torch.float32 else 1e-2
    scale = want.abs().max().item()
    err = (got.double() - want).abs().max().item()
    assert err <= tol * max(scale, 1.0), f"max abs error {err:.3g} over max {scale:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("r", [8, 20, 32])
def test_without_dropout_is_the_product_and_its_closed_form_gradients(device, dtype, r):
    n, d = 150, 200  # neither a multiple of the tiles
    x, a, dh = inputs(device, n, d, r, dtype)
    h, dx, da = kernel_run(x, a, dh, 0.0, seed=1)
    assert h.shape == (3, n, r) and h.dtype == dtype and dx.dtype == dtype and da.dtype == dtype
    x64, a64, g64 = x.detach().double(), a.detach().double(), dh.double()
    assert_close(h, x64 @ a64.transpose(1, 2), dtype)
    assert_close(dx, sum(g64[c] @ a64[c] for c in range(3)), dtype)
    assert_close(da, g64.transpose(1, 2) @ x64, dtype)
    ones = torch.ones(3, n, d, device=device)
    for got, want in zip((h, dx, da), reference(x, a, dh, ones, 0.0)):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,d,r", [(150, 200, 8), (300, 96, 32), (64, 128, 20)])
def test_dropout_matches_torch_with_the_kernels_masks(device, dtype, n, d, r):
    p, seed = 0.3, 1234
    x, a, dh = inputs(device, n, d, r, dtype)
    masks = K.dropout_masks(seed, n, d, p, device)
    assert masks.shape == (3, n, d) and masks.dtype == torch.bool
    h, dx, da = kernel_run(x, a, dh, p, seed)
    for got, want in zip((h, dx, da), reference(x, a, dh, masks, p)):
        assert_close(got, want, dtype)


def test_strided_inputs_and_one_sided_gradients(device):
    p, seed, n, d, r = 0.25, 77, 90, 120, 16
    x, a, dh = inputs(device, n, d, r)
    masks = K.dropout_masks(seed, n, d, p, device)
    h_ref, dx_ref, da_ref = reference(x, a, dh, masks, p)
    xt = x.detach().t().contiguous().t()  # column-major [N, d]
    dh_strided = dh.transpose(1, 2).contiguous().transpose(1, 2)  # the torch path's layout
    assert not xt.is_contiguous() and not dh_strided.is_contiguous()
    # gradient of x only
    xg = xt.clone().requires_grad_()
    h = K.dropout_lora_a(xg, a.detach(), p, seed=seed)
    h.backward(dh_strided)
    assert_close(h.detach(), h_ref, torch.float32)
    assert_close(xg.grad, dx_ref, torch.float32)
    # gradient of A only
    ag = a.detach().clone().requires_grad_()
    K.dropout_lora_a(xt, ag, p, seed=seed).backward(dh_strided)
    assert_close(ag.grad, da_ref, torch.float32)


def test_masks_of_a_tall_input_use_one_key_per_row_chunk(device, monkeypatch):
    """Rows past ``chunk_rows`` restart the Philox counters under another key (int32 counters for any
    N): with 64-row chunks the masks still match forward and backward, and chunks differ."""
    monkeypatch.setattr(K, "_chunk_rows", lambda d: 64)
    p, seed, n, d, r = 0.5, 9, 200, 64, 8
    x, a, dh = inputs(device, n, d, r)
    masks = K.dropout_masks(seed, n, d, p, device)
    assert not torch.equal(masks[:, :64], masks[:, 64:128])
    for got, want in zip(kernel_run(x, a, dh, p, seed), reference(x, a, dh, masks, p)):
        assert_close(got, want, torch.float32)


def test_mask_statistics(device):
    """Keep rate ``1 - p`` per copy; the copies (and neighbouring elements) agree as often as
    independent masks do, ``p^2 + (1 - p)^2``; all within 5 standard errors."""
    p, n, d = 0.3, 512, 256
    m = K.dropout_masks(2024, n, d, p, device).cpu()
    count = n * d
    rate_se = math.sqrt(p * (1 - p) / count)
    for c in range(3):
        assert abs(m[c].float().mean().item() - (1 - p)) < 5 * rate_se
    agree = p**2 + (1 - p) ** 2
    agree_se = math.sqrt(agree * (1 - agree) / count)
    pairs = [(m[0], m[1]), (m[0], m[2]), (m[1], m[2]),
             (m[0, :, 1:], m[0, :, :-1]), (m[1, 1:], m[1, :-1])]  # neighbouring columns and rows
    for u, v in pairs:
        assert not torch.equal(u, v)
        assert abs((u == v).float().mean().item() - agree) < 5 * agree_se


def test_seeds(device):
    p, n, d, r = 0.2, 70, 64, 8
    x, a, _ = inputs(device, n, d, r)
    x, a = x.detach(), a.detach()
    h1 = K.dropout_lora_a(x, a, p, seed=5)
    assert torch.equal(h1, K.dropout_lora_a(x, a, p, seed=5))
    assert not torch.equal(h1, K.dropout_lora_a(x, a, p, seed=6))
    torch.manual_seed(3)  # the default seed comes from torch's CPU generator
    h2 = K.dropout_lora_a(x, a, p)
    h3 = K.dropout_lora_a(x, a, p)
    torch.manual_seed(3)
    assert torch.equal(h2, K.dropout_lora_a(x, a, p))
    assert not torch.equal(h2, h3)


def test_bad_inputs(device):
    x, a, _ = inputs(device, 8, 16, 4)
    with pytest.raises(ValueError, match="expected x"):
        K.dropout_lora_a(x, a[:2], 0.1)
    with pytest.raises(ValueError, match="share a dtype"):
        K.dropout_lora_a(x, a.double(), 0.1)
    with pytest.raises(ValueError, match="dropout p"):
        K.dropout_lora_a(x, a, 1.0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        FusedLoraRecorder(torch.nn.Module(), kernel="cuda")


def test_fused_recorder_uses_the_op_with_its_masks(device):
    """``FusedLoraRecorder(kernel="triton")`` in training with dropout: layer 0's features are the op's
    on that layer's input with the seed drawn from torch's generator, and every LoRA weight gets a gradient."""
    from test_loraild_fused_lora import batch, tiny_student

    model = tiny_student(0.5).to(device)
    rec = FusedLoraRecorder(model, kernel="triton")
    seen = []
    query = rec.layers[0][0]
    query.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    model.train()
    b = {k: v.to(device) for k, v in batch().items()}
    torch.manual_seed(11)
    out = model(**b).logits
    torch.manual_seed(11)
    seed0 = K.draw_seed()  # layer 0 draws first
    x2 = seen[0].reshape(-1, seen[0].shape[-1])
    a = torch.stack([m.lora_A["default"].weight for m in rec.layers[0]]).detach()
    want = K.dropout_lora_a(x2, a, 0.5, seed=seed0)
    for ci, name in enumerate(LORA_TARGETS):
        torch.testing.assert_close(rec.get(0, name).reshape(-1, a.shape[1]), want[ci])
    (out.square().sum() + rec.stacked().square().sum()).backward()
    for name, prm in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            assert prm.grad is not None and prm.grad.abs().sum() > 0, name


@pytest.mark.parametrize("config", [  # (128 x 256 forward tiles in 3 stages needed 576 KiB of shared memory,
    # more than an H100's 227 KiB: the test only ever ran in the interpreter until round 12)
    K.Config(fwd_block_n=32, fwd_block_k=64, bwd_block_n=128, bwd_block_k=64),
    K.Config(fwd_block_n=128, fwd_block_k=128, fwd_stages=2, bwd_block_n=32, bwd_block_k=128, bwd_programs_per_sm=8),
], ids=["small-fwd-tiles", "large-fwd-tiles"])
def test_masks_do_not_depend_on_the_tiles(device, config):
    p, seed, n, d, r = 0.4, 31, 260, 200, 32
    x, a, dh = inputs(device, n, d, r)
    masks = K.dropout_masks(seed, n, d, p, device)
    x2, a2 = x.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    h = K.dropout_lora_a(x2, a2, p, seed=seed, config=config)
    h.backward(dh)
    for got, want in zip((h.detach(), x2.grad, a2.grad), reference(x, a, dh, masks, p)):
        assert_close(got, want, torch.float32)
