"""One q/k/v product per layer (paperlib.loraild.qkv_product) against fp64 autograd of peft's formula,
against the composite fused path it replaces (same masks), and against unpatched ``nn.Linear``."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from paperlib.loraild.fused_lora import FusedLoraRecorder
from paperlib.loraild.models import encoder_layers
from paperlib.loraild.qkv_product import PlainQkv, ProductSpec, QkvProduct, qkv_product

from test_loraild_fused_lora import batch, tiny_student


def _leaves(d=12, r=3, outs=(12, 12, 10), bias=True, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, d, generator=g, dtype=dtype)
    ws = [torch.randn(o, d, generator=g, dtype=dtype) / math.sqrt(d) for o in outs]
    bs = [torch.randn(o, generator=g, dtype=dtype) if bias else None for o in outs]
    a = [torch.randn(r, d, generator=g, dtype=dtype) / math.sqrt(d) for _ in range(3)]
    bl = [torch.randn(o, r, generator=g, dtype=dtype) for o in outs]
    return [t.requires_grad_() if t is not None else None for t in (x, *ws, *bs, *a, *bl)]


def _apply(leaves, spec, seed=7):
    x, wq, wk, wv, bq, bk, bv, aq, ak, av, blq, blk, blv = leaves
    torch.manual_seed(seed)  # the same masks on every call (gradcheck calls it many times)
    return QkvProduct.apply(x, wq, bq, wk, bk, wv, bv, aq, ak, av, blq, blk, blv, spec)


def _peft_formula(leaves, p, s, seed=7):
    """``y_m = W_m x + b_m + s B_m A_m dropout_m(x)``, the three masks drawn by three ``F.dropout`` calls on
    ``x`` in the order query, key, value, as peft's dropout modules draw them (what the op must reproduce),
    plus ``H``."""
    x, wq, wk, wv, bq, bk, bv, aq, ak, av, blq, blk, blv = leaves
    x2 = x.reshape(-1, x.shape[-1])
    torch.manual_seed(seed)
    xs = [F.dropout(x2, p, True) if p > 0 else x2 for _ in range(3)]
    h = torch.stack([xs[c] @ a.T for c, a in enumerate((aq, ak, av))])
    ys = [F.linear(x, w, b) + s * (h[m] @ bl.T).view(*x.shape[:-1], -1)
          for m, (w, b, bl) in enumerate(zip((wq, wk, wv), (bq, bk, bv), (blq, blk, blv)))]
    return (*ys, h)


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("outs", [(12, 12, 10), (12, 12, 12)])
@pytest.mark.parametrize("scale", [2.0, 0.3])
def test_product_is_peft_lora_in_outputs_features_and_every_gradient(p, bias, outs, scale):
    """fp64: outputs and features equal the formula with the same masks; every gradient (x, W, b, A, B,
    with a gradient on the features as the ILD loss gives) equals autograd of the formula.  Projections of
    one width take the one-view path for the ``s B`` blocks and their gradients, others the per-block one;
    a scale that is not a power of two checks where ``s`` is applied."""
    spec = ProductSpec(p=p, scale=scale, dtype=torch.float64)
    leaves = _leaves(bias=bias, outs=outs)
    got = _apply(leaves, spec)
    want = _peft_formula(leaves, p, scale)
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_, w_, rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(3)
    cot = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in want]
    params = [t for t in leaves if t is not None]
    g_got = torch.autograd.grad(got, params, cot)
    g_want = torch.autograd.grad(want, params, cot)
    for i, (a, b) in enumerate(zip(g_got, g_want)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"gradient {i}")


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_a_missing_bias_is_a_zero_one(missing):
    """One base layer without a bias (the others with): the product adds nothing for it, as ``F.linear``
    with no bias does, and gives the other biases their gradients (the stack-and-cat path that the
    one-copy path leaves such layers to)."""
    spec = ProductSpec(p=0.3, scale=2.0, dtype=torch.float64)
    leaves = _leaves()
    leaves[4 + missing] = None
    got = _apply(leaves, spec)
    want = _peft_formula(leaves, 0.3, 2.0)
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_, w_, rtol=1e-12, atol=1e-12)
    params = [t for t in leaves if t is not None]
    cot = [torch.ones_like(t) for t in want]
    for a, b in zip(torch.autograd.grad(got, params, cot), torch.autograd.grad(want, params, cot)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("autocast", [False, True])
def test_parameter_gradients_are_stored_as_returned_without_a_copy(autocast):
    """The product returns every parameter gradient contiguous in its parameter's dtype (float32 under
    bf16 autocast), so autograd stores it as it is: the three base weights' gradients are row blocks of
    one tensor, and so are the three A's and the three B's (autograd would have copied a strided or
    bf16 gradient into a tensor of its own)."""
    leaves = [t.detach().float().requires_grad_() if t is not None else None for t in _leaves(outs=(12, 12, 12))]
    x, wq, wk, wv, bq, bk, bv, aq, ak, av, blq, blk, blv = leaves
    dtype = torch.bfloat16 if autocast else torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        *ys, h = _apply(leaves, ProductSpec(p=0.2, scale=2.0, dtype=dtype))
        loss = sum(y.float().square().sum() for y in ys) + h.float().square().sum()
    loss.backward()
    for group in ((wq, wk, wv), (aq, ak, av), (blq, blk, blv), (bq, bk, bv)):
        assert all(t.grad.dtype == torch.float32 and t.grad.is_contiguous() for t in group)
        assert len({t.grad.untyped_storage().data_ptr() for t in group}) == 1


def test_product_passes_gradcheck_with_dropout():
    leaves = _leaves(d=6, r=2, outs=(6, 6, 4))
    spec = ProductSpec(p=0.25, scale=0.5, dtype=torch.float64)
    inputs = [t for t in leaves if t is not None]
    assert torch.autograd.gradcheck(lambda *t: _apply(list(t), spec), inputs)


def test_unused_outputs_get_no_gradient_and_need_no_cotangent():
    """Only the query output in the loss: key/value weights get zero gradients, not an error."""
    leaves = _leaves()
    out = _apply(leaves, ProductSpec(p=0.0, scale=1.0, dtype=torch.float64))
    out[0].sum().backward()
    wk, bk = leaves[2], leaves[5]
    assert torch.count_nonzero(wk.grad) == 0 and torch.count_nonzero(bk.grad) == 0
    assert torch.count_nonzero(leaves[0].grad) > 0


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_student_trains_as_with_the_composite_path(dropout):
    """The whole student, training with dropout: the product path (default) gives the composite path's
    logits, features and every parameter gradient for the same seed (the same masks)."""
    comp, prod = tiny_student(dropout), tiny_student(dropout)
    comp.train(), prod.train()
    rc, rp = FusedLoraRecorder(comp, product=False), FusedLoraRecorder(prod)
    torch.manual_seed(5)
    out_c = comp(**batch()).logits
    torch.manual_seed(5)
    out_p = prod(**batch()).logits
    torch.testing.assert_close(out_p, out_c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rp.stacked(), rc.stacked(), rtol=1e-5, atol=1e-6)
    (out_c.square().sum() + rc.stacked().square().sum()).backward()
    (out_p.square().sum() + rp.stacked().square().sum()).backward()
    grads = dict(comp.named_parameters())
    n = 0
    for name, p in prod.named_parameters():
        if p.requires_grad:  # fp32 sums in another order: relative to the gradient's scale (atol: the
            ref = grads[name].grad  # key biases' gradient is 0 in exact arithmetic, softmax ignores shifts)
            assert (p.grad - ref).abs().max() <= 1e-5 * ref.abs().max() + 1e-6, name
            n += 1
    assert n > 20


def _node_names(loss: torch.Tensor) -> list[str]:
    names, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


def test_one_product_node_per_layer_replaces_six_products_per_layer():
    """With the product, a layer's q/k/v and LoRA are one node: one product node per layer, and six
    fewer ``addmm`` nodes per layer (three base projections, three LoRA-B updates) than the composite path."""
    graphs = {}
    for product in (True, False):
        model = tiny_student(0.1)
        model.train()
        rec = FusedLoraRecorder(model, product=product)
        graphs[product] = _node_names(model(**batch()).logits.sum() + rec.stacked().sum())
    n_layers = len(encoder_layers(model))
    assert graphs[True].count("QkvProductBackward") == n_layers
    assert graphs[False].count("QkvProductBackward") == 0
    assert graphs[False].count("AddmmBackward0") - graphs[True].count("AddmmBackward0") == 6 * n_layers


def test_product_under_cpu_autocast_matches_the_composite_path_and_keeps_fp32_gradients():
    comp, prod = tiny_student(0.2), tiny_student(0.2)
    comp.train(), prod.train()
    rc, rp = FusedLoraRecorder(comp, product=False), FusedLoraRecorder(prod)
    outs = []
    for model, rec in ((comp, rc), (prod, rp)):
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**batch()).logits
            loss = out.float().square().sum() + rec.stacked().float().square().sum()
        loss.backward()
        outs.append((out, rec.stacked()))
    assert outs[1][0].dtype == outs[0][0].dtype and outs[1][1].dtype == torch.bfloat16
    torch.testing.assert_close(outs[1][0].float(), outs[0][0].float(), rtol=0.05, atol=0.05)
    grads = dict(comp.named_parameters())
    for name, p in prod.named_parameters():
        if p.requires_grad:
            assert p.grad.dtype == torch.float32, name
            if name.endswith("key.base_layer.bias"):
                continue  # 0 in exact arithmetic (softmax ignores shifts): both are bf16 rounding noise
            ref = grads[name].grad
            assert (p.grad - ref).norm() <= 0.05 * ref.norm() + 1e-4, name


def test_compiled_product_false_keeps_the_composite_path_while_compiling(monkeypatch):
    model = tiny_student(0.0)
    rec = FusedLoraRecorder(model, compiled_product=False)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    model.train()
    loss = model(**batch()).logits.sum()
    seen, stack = set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        assert type(fn).__name__ != "QkvProductBackward"
        stack.extend(f for f, _ in fn.next_functions)
    rec.remove()


def _plain_roberta():
    from transformers import RobertaConfig, RobertaForSequenceClassification
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    return RobertaForSequenceClassification(cfg)


def test_plain_qkv_is_the_three_linears():
    ref = _plain_roberta()
    fused = copy.deepcopy(ref)
    patch = PlainQkv(encoder_layers(fused))
    out_r, out_f = ref(**batch()).logits, fused(**batch()).logits
    torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-6)
    out_r.square().sum().backward()
    out_f.square().sum().backward()
    grads = dict(ref.named_parameters())
    for name, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    patch.remove()
    assert "forward" not in encoder_layers(fused)[0].attention.self.query.__dict__


def test_plain_qkv_refuses_a_lora_model():
    with pytest.raises(ValueError, match="plain nn.Linear"):
        PlainQkv(encoder_layers(tiny_student(0.0)))


def test_qkv_product_helper_without_lora_returns_three_outputs():
    lins = tuple(nn.Linear(8, o) for o in (8, 8, 6))
    x = torch.randn(4, 8)
    outs = qkv_product(x, lins, ProductSpec())
    assert len(outs) == 3
    for y, lin in zip(outs, lins):
        torch.testing.assert_close(y, lin(x))


def test_product_with_the_triton_features_trains_as_the_one_node_branch(triton_device):
    """``kernel="triton"``: the product takes the op's features (same seed, same masks) and gives the
    one-node branch's logits, features and gradients (Triton's CPU interpreter where there is no GPU)."""
    device = triton_device
    b = {k: v.to(device) for k, v in batch().items()}
    results = []
    for product in (True, False):
        model = tiny_student(0.3).to(device).train()
        rec = FusedLoraRecorder(model, kernel="triton", product=product)
        torch.manual_seed(5)
        logits = model(**b).logits
        feats = rec.stacked()
        loss = logits.square().sum() + feats.square().sum()
        loss.backward()
        results.append((logits.detach(), feats.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (lo1, f1, g1), (lo2, f2, g2) = results
    torch.testing.assert_close(lo1, lo2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f1, f2, rtol=1e-5, atol=1e-5)
    top = max(g.abs().max() for g in g2.values())
    for name, g in g1.items():
        torch.testing.assert_close(g, g2[name], rtol=1e-4, atol=float(top) * 1e-6, msg=name)


def test_compiled_product_traces_the_three_dropouts():
    """With dropout, dynamo traces the product's three dropouts and their backward into the student's graph
    (one frame, backend ``aot_eager``): the compiled student trains, its LoRA-A gradients finite, and its
    features differ from the same student's without dropout (the masks act)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = tiny_student(0.3)
    rec = FusedLoraRecorder(model)
    model.eval()
    with torch.no_grad():
        model(**batch())
    clean = rec.stacked().clone()
    model.train()
    counter = CompileCounterWithBackend("aot_eager")
    out = torch.compile(model, backend=counter)(**batch()).logits
    feats = rec.stacked()
    (out.square().sum() + feats.square().sum()).backward()
    assert counter.frame_count == 1
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert len(grads) == 6 and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert (feats.detach() - clean).abs().max() > 0.1 * clean.abs().max()  # dropout 0.3, not rounding
    torch._dynamo.reset()


def test_compiled_product_is_traced_and_trains_as_eager(monkeypatch):
    """``compiled_product=True`` (the default): dynamo traces the product into the student's graph (no graph
    break: one frame) and the compiled student gives eager's logits and gradients (no dropout); with
    ``False`` a compiled student keeps the composite path (the product is never called while compiling)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    calls = []
    real = FusedLoraRecorder._run_product
    monkeypatch.setattr(FusedLoraRecorder, "_run_product",
                        lambda self, *a: calls.append(torch.compiler.is_compiling()) or real(self, *a))
    ref = tiny_student(0.0).train()
    rec_ref = FusedLoraRecorder(ref, product=False)
    out_ref = ref(**batch()).logits
    (out_ref.square().sum() + rec_ref.stacked().square().sum()).backward()
    grads = dict(ref.named_parameters())
    for traced in (True, False):
        torch._dynamo.reset()
        calls.clear()
        model = tiny_student(0.0).train()
        rec = FusedLoraRecorder(model, compiled_product=traced)
        counter = CompileCounterWithBackend("aot_eager")
        out = torch.compile(model, backend=counter)(**batch()).logits
        (out.square().sum() + rec.stacked().square().sum()).backward()
        assert counter.frame_count == 1
        assert (any(calls) if traced else not calls), (traced, calls)
        torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
        for name, p in model.named_parameters():
            if name.endswith("key.base_layer.bias"):
                continue  # 0 in exact arithmetic: rounding noise on both sides
            ref_g = grads[name].grad
            assert (p.grad - ref_g).abs().max() <= 1e-5 * ref_g.abs().max() + 1e-6, (traced, name)
    torch._dynamo.reset()
