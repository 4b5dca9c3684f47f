"""The q/k/v LoRA branch as one autograd node (paperlib.loraild.lora_branch) against a closed form and
against the composite path it replaces.

Runs on CUDA when present, otherwise in Triton's CPU interpreter (``conftest.py``), like the op's own tests.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

from paperlib.loraild import lora_a_kernel as K  # noqa: E402
from paperlib.loraild.fused_lora import FusedLoraRecorder  # noqa: E402
from paperlib.loraild.lora_branch import lora_branch  # noqa: E402


@pytest.fixture(scope="module")
def device(triton_device: str) -> str:
    return triton_device


def _nodes(loss: torch.Tensor, name: str) -> int:
    """How many autograd nodes called ``name`` the graph of ``loss`` holds."""
    seen, stack, count = set(), [loss.grad_fn], 0
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        count += type(fn).__name__ == name
        stack.extend(f for f, _ in fn.next_functions)
    return count


def test_branch_is_the_closed_form_with_the_ops_masks(device):
    """Outputs ``y_m = y0_m + s H[m] B_m^T``, features ``H[c] = (m_c x) A[c]^T / (1 - p)`` and every
    gradient (``dy0_m = dy_m``, ``dB``, ``dA``, ``dx``, with an ILD gradient on ``H``) against fp64 autograd
    on the masks the op draws for the seed."""
    g = torch.Generator().manual_seed(0)
    n0, n1, d, r, p, s, seed = 3, 7, 48, 8, 0.3, 2.0, 1234
    x = torch.randn(n0, n1, d, generator=g)
    y0 = [torch.randn(n0, n1, dm, generator=g) for dm in (d, d, 40)]  # value may have another width
    a = [torch.randn(r, d, generator=g) / math.sqrt(d) for _ in range(3)]
    b = [torch.randn(dm, r, generator=g) for dm in (d, d, 40)]
    dys = [torch.randn(n0, n1, dm, generator=g) for dm in (d, d, 40)]
    dh = torch.randn(3, n0 * n1, r, generator=g)

    leaves = [t.to(device).clone().requires_grad_() for t in (x, *y0, *a, *b)]
    *outs, h = lora_branch(leaves[0], tuple(leaves[1:4]), tuple(leaves[4:7]), tuple(leaves[7:10]), p, s,
                           torch.float32, seed=seed)
    torch.autograd.backward([*outs, h], [t.to(device) for t in (*dys, dh)])

    masks = K.dropout_masks(seed, n0 * n1, d, p, device).double().cpu()
    ref = [t.double().requires_grad_() for t in (x, *y0, *a, *b)]
    x2 = ref[0].reshape(-1, d)
    h_ref = torch.stack([(x2 * masks[c] / (1 - p)) @ ref[4 + c].T for c in range(3)])
    outs_ref = [ref[1 + m] + s * (h_ref[m] @ ref[7 + m].T).view(n0, n1, -1) for m in range(3)]
    torch.autograd.backward([*outs_ref, h_ref], [t.double() for t in (*dys, dh)])

    for got, want in zip((*outs, h), (*outs_ref, h_ref)):
        torch.testing.assert_close(got.detach().cpu().double(), want.detach(), rtol=1e-4, atol=1e-4)
    for i, (got, want) in enumerate(zip(leaves, ref)):
        torch.testing.assert_close(got.grad.cpu().double(), want.grad, rtol=1e-4, atol=1e-4, msg=f"input {i}")


def _students(device, one_node_first: bool):
    from test_loraild_fused_lora import tiny_student

    models = [tiny_student(0.5).to(device) for _ in range(2)]
    recs = [FusedLoraRecorder(mdl, kernel="triton", one_node=flag, product=False)
            for mdl, flag in zip(models, (one_node_first, not one_node_first))]
    return models, recs


@pytest.mark.parametrize("use_features", [True, False], ids=["ild-loss", "logits-only"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_one_node_trains_as_the_composite_path(device, use_features, autocast):
    """Same seed, same masks: logits, features and every parameter's gradient of the one-node student equal
    the composite path's; the graph holds one branch node per layer (and none in the composite)."""
    from test_loraild_fused_lora import batch

    (one, comp), (rec_one, rec_comp) = _students(device, True)
    b = {k: v.to(device) for k, v in batch().items()}
    results = []
    for model, rec in ((one, rec_one), (comp, rec_comp)):
        model.train()
        torch.manual_seed(5)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            logits = model(**b).logits
            feats = rec.stacked()
            loss = logits.float().square().sum()
            if use_features:
                loss = loss + feats.float().square().sum()
        results.append((logits.detach(), feats.detach(), _nodes(loss, "LoraBranchBackward")))
        loss.backward()
    (lo1, f1, n1), (lo2, f2, n2) = results
    assert (n1, n2) == (rec_one.n_layers, 0)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lo1, lo2, **tol)
    torch.testing.assert_close(f1, f2, **tol)
    grads = dict(comp.named_parameters())
    # absolute tolerance relative to the largest gradient entry of the model (the key bias's gradient is 0
    # up to rounding: softmax is shift invariant)
    top = max(p.grad.abs().max() for p in comp.parameters())
    atol = float(top) * (2e-2 if autocast else 1e-6)
    for name, prm in one.named_parameters():
        assert prm.grad is not None, name
        torch.testing.assert_close(prm.grad, grads[name].grad, rtol=tol["rtol"], atol=atol, msg=name)
        assert prm.grad.dtype == prm.dtype


def test_key_and_value_follow_their_own_input(device):
    """Key and value return the outputs the query call computed only for the same input tensor."""
    from test_loraild_fused_lora import tiny_student

    model = tiny_student(0.5).to(device).train()
    rec = FusedLoraRecorder(model, kernel="triton", product=False)
    q, k, v = rec.layers[0]
    x = torch.randn(2, 5, 32, device=device)
    other = torch.randn(1, 3, 32, device=device)
    yq = q(x)
    assert k(x) is rec._outs[0][1]
    assert v(other).shape == (1, 3, 32)  # recomputed for its own input, not the stored [2, 5, 32]
    assert yq.shape == (2, 5, 32) and rec.get(0, "value").shape == (1, 3, 4)
    rec.remove()


def test_evaluation_and_other_kernels_keep_the_composite_path(device):
    """No dropout (evaluation), ``kernel="auto"`` (the torch path) or ``"torch"``, or ``one_node=False``: no
    branch node, and the Triton op is not called."""
    from test_loraild_fused_lora import batch, tiny_student

    b = {k: v.to(device) for k, v in batch().items()}
    calls = []
    original = K.forward_features
    K.forward_features = lambda *args, **kw: calls.append(1) or original(*args, **kw)
    try:
        for kernel, one_node, train in (("triton", True, False), ("auto", True, True), ("torch", True, True),
                                        ("triton", False, True)):
            model = tiny_student(0.5).to(device).train(train)
            rec = FusedLoraRecorder(model, kernel=kernel, one_node=one_node, product=False)
            calls.clear()
            with torch.autocast(device, dtype=torch.bfloat16):  # 16-bit: what the op was once picked for
                loss = model(**b).logits.float().sum() + rec.stacked().float().sum()
            assert _nodes(loss, "LoraBranchBackward") == 0, (kernel, one_node, train)
            assert bool(calls) == (kernel == "triton" and train), (kernel, one_node, train)
            rec.remove()
    finally:
        K.forward_features = original


def test_bad_inputs(device):
    x = torch.randn(4, 16, device=device)
    w = tuple(torch.randn(2, 16, device=device) for _ in range(3))
    bw = tuple(torch.randn(16, 2, device=device) for _ in range(3))
    with pytest.raises(ValueError, match="dropout p"):
        lora_branch(x, (x, x, x), w, bw, 1.0, 2.0, torch.float32)
    with pytest.raises(ValueError, match="expected x"):
        lora_branch(x[:, :8], (x, x, x), w, bw, 0.1, 2.0, torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        lora_branch(x, (x, x, x), w, bw, 0.1, 2.0, torch.float64)
    with pytest.raises(ValueError, match="seed must be in"):
        lora_branch(x, (x, x, x), w, bw, 0.1, 2.0, torch.float32, seed=-1)
