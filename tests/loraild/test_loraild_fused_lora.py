"""Fused q/k/v LoRA (paperlib.loraild.fused_lora) against peft's own forward and the hook recorder."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

from paperlib.loraild.features import LoraFeatureRecorder
from paperlib.loraild.fused_lora import FusedLoraRecorder
from paperlib.loraild.models import LORA_TARGETS, student_lora


def tiny_student(dropout: float) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    model = student_lora(RobertaForSequenceClassification(cfg), 4, dropout)
    with torch.no_grad():  # peft starts B at 0: give the update something to add
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return model


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 50, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


ON_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


def _assert_same_as_peft(ref, fused, product=True, seed=None, device="cpu", autocast=False):
    """Outputs, features and every gradient of the fused student equal peft's (the hook recorder's), each
    forward run from ``seed`` (its dropout masks) when given: to float32 rounding, or to bf16's under
    bf16 autocast (where peft drops out the float32 input and the fused layer its bf16 cast)."""
    hooks, rec = LoraFeatureRecorder(ref), FusedLoraRecorder(fused, product=product)
    ref.to(device), fused.to(device)
    rtol, atol = (2e-2, 2e-2) if autocast else (1e-5, 1e-6)
    outs = []
    for model in (ref, fused):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            outs.append(model(**{k: v.to(device) for k, v in batch().items()}).logits.float())
    out_ref, out_fused = outs
    torch.testing.assert_close(out_fused, out_ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(rec.stacked().float(), hooks.stacked().float(), rtol=rtol, atol=atol)
    for li in range(2):
        for m in LORA_TARGETS:
            torch.testing.assert_close(rec.get(li, m).float(), hooks.get(li, m).float(), rtol=rtol, atol=atol)
    loss_ref = out_ref.square().sum() + hooks.stacked().float().square().sum()
    loss_fused = out_fused.square().sum() + rec.stacked().float().square().sum()
    loss_ref.backward(), loss_fused.backward()
    grads = dict(ref.named_parameters())
    n_lora = 0
    for name, p in fused.named_parameters():
        want = grads[name].grad  # relative to the gradient's size (up to ~700 with dropout)
        size = max(1.0, want.abs().max().item())
        torch.testing.assert_close(p.grad, want, rtol=max(rtol, 1e-4), atol=atol * size, msg=name)
        n_lora += "lora_" in name
    assert n_lora == 2 * 3 * 2  # A and B of q/k/v in both layers, trained through the fused path


@pytest.mark.parametrize("train", [False, True])
def test_same_outputs_features_and_gradients_as_peft_without_dropout(train):
    ref, fused = tiny_student(0.0), tiny_student(0.0)
    ref.train(train), fused.train(train)
    _assert_same_as_peft(ref, fused)


@pytest.mark.parametrize("device, autocast", [("cpu", False), ("cpu", True), pytest.param("cuda", False, marks=ON_GPU)])
@pytest.mark.parametrize("product", [True, False])
def test_with_dropout_the_masks_are_the_ones_peft_draws(product, device, autocast):
    """Training with dropout: a fused layer draws its three masks one after another on the layer input, as
    peft's query, key and value dropout modules draw theirs, so from one seed the fused student gives
    peft's outputs, features and gradients (the product and the composite path; float32 on the CPU and
    the GPU, where the masks of one dropout of the stride-0 view ``x.expand(3, N, d)``, rounds 6-13, fail
    it; and bf16 autocast on the CPU, where a different mask would change a feature by about its own size).
    Under bf16 autocast on GPUs the fused layer drops out the bf16 cast and peft the float32 input, and
    torch's kernel draws other masks for the two dtypes: runs differ there as two seeds' dropout would."""
    ref, fused = tiny_student(0.3), tiny_student(0.3)
    ref.train(), fused.train()
    _assert_same_as_peft(ref, fused, product=product, seed=5, device=device, autocast=autocast)


def test_dropout_masks_are_independent_per_module_and_unbiased():
    """Training with dropout p: each module's features are A_m applied to its own dropped-out copy of
    the input, so q/k/v differ from one another, and their mean over draws is the no-dropout value."""
    model = tiny_student(0.5)
    rec = FusedLoraRecorder(model)
    model.eval()
    model(**batch())
    clean = rec.stacked()
    model.train()
    draws = []
    for _ in range(400):
        model(**batch())
        draws.append(rec.stacked())
    assert not torch.allclose(draws[0], clean)
    mean = torch.stack(draws).mean(0)
    assert (mean - clean).abs().max() < 0.25 * clean.abs().max()
    # independence: across draws, the dropout noise of query and key at one token is uncorrelated
    # (one shared mask z would give Cov(A_q z, A_k z) = A_q Cov(z) A_k^T, as large as Cov(A_q z))
    noise = torch.stack(draws)[:, 0, 0, 0] - clean[0, 0, 0]  # [draws, 3, r] at layer 0, token (0, 0)
    nq, nk = noise[:, 0] - noise[:, 0].mean(0), noise[:, 1] - noise[:, 1].mean(0)
    cross, own = nq.T @ nk, nq.T @ nq
    assert cross.norm() < 0.25 * own.norm()  # measured: 0.08 (independent masks), 0.46 (one shared mask)


def test_under_autocast_dropout_runs_in_the_autocast_dtype_and_stays_unbiased(monkeypatch):
    """Under bf16 autocast the three dropped-out copies are made of the bf16 input (the cast the A
    product makes anyway, once, before the copies): half the bytes; the features stay unbiased."""

    seen = []
    real = torch.native_dropout

    def spy(x, *a, **k):  # the three masks' draws (the model's own dropout is off)
        seen.append((x.dtype, tuple(x.shape)))
        return real(x, *a, **k)

    monkeypatch.setattr(torch, "native_dropout", spy)
    model = tiny_student(0.5)
    rec = FusedLoraRecorder(model, product=False)  # the composite path (the product's: test_loraild_qkv_product)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.eval()
        model(**batch())
        clean = rec.stacked().float()
        model.train()
        draws = []
        for _ in range(300):
            model(**batch())
            draws.append(rec.stacked().float())
    assert seen and {dt for dt, _ in seen} == {torch.bfloat16}
    mean = torch.stack(draws).mean(0)
    assert (mean - clean).abs().max() < 0.25 * clean.abs().max()
    seen.clear()
    model(**batch())  # without autocast: float32, as before
    assert {dt for dt, _ in seen} == {torch.float32}


def test_remove_restores_peft():
    model = tiny_student(0.0)
    ref = copy.deepcopy(model).eval()
    rec = FusedLoraRecorder(model)
    rec.remove()
    model.eval()
    assert all("forward" not in m.__dict__ for mods in rec.layers for m in mods)
    torch.testing.assert_close(model(**batch()).logits, ref(**batch()).logits)
