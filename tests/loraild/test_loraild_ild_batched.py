"""The batched ILD loss (one expression over [B, T, L, 3, r] views) against eq. 3 written out per layer.

The reference below is the earlier formulation, written independently: per token, concatenate the
LoRA-A features of every student layer and module (query, key, value) into one vector, do the same
for the teacher layers aligned with each student layer (the mean over each group), normalise both,
and average the squared distance over the real tokens.  ``DistillModel`` must give the same loss and
the same parameter gradients for Fixed, Average and Random step (the same draw from the same seed).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

from paperlib.loraild.alignment import LayerAligner
from paperlib.loraild.config import METHODS, TaskSpec
from paperlib.loraild.distill import DistillModel
from paperlib.loraild.features import align_teacher
from paperlib.loraild.losses import ild_loss_layers
from paperlib.loraild.models import LORA_TARGETS, student_lora
from paperlib.loraild.teacher_cache import TeacherBatch

N_TEACHER, RANK = 8, 4
TASK = TaskSpec("t", 2, "accuracy", ("accuracy",), False, 1)


def tiny_student(dropout: float) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    model = student_lora(RobertaForSequenceClassification(cfg), RANK, dropout)
    with torch.no_grad():  # peft starts B at 0: give the update something to add
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return model


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 50, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def reference_ild(per_layer: list[dict[str, torch.Tensor]], teacher: torch.Tensor, groups: list[list[int]],
                  mask: torch.Tensor | None) -> torch.Tensor:
    """Eq. 3 the long way: per-token concatenation over layers and modules, then normalise and MSE."""
    s_parts, t_parts = [], []
    for li, g in enumerate(groups):
        for mi, m in enumerate(LORA_TARGETS):
            s_parts.append(per_layer[li][m])  # [B, T, r]
            t_parts.append(sum(teacher[:, :, j, mi] for j in g) / len(g))
    s, t = torch.cat(s_parts, dim=-1), torch.cat(t_parts, dim=-1)
    s = s / s.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    per_token = ((t - s) ** 2).sum(dim=-1)
    if mask is None:
        return per_token.mean()
    m = mask.float()
    return (per_token * m).sum() / m.sum()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mask_padding", [True, False])
@pytest.mark.parametrize("method", ["loraild_fixed", "loraild_average", "loraild_random_step"])
def test_distill_ild_loss_and_gradients_match_the_per_layer_formula(method, mask_padding, fused):
    spec = METHODS[method]
    model = DistillModel(tiny_student(0.1), spec, TASK, N_TEACHER, 32, mask_padding=mask_padding,
                         fused_lora=fused)
    model.train()
    aligner = LayerAligner(spec.alignment, N_TEACHER, 2, seed=3)
    aligner.start_epoch(0)
    groups = [aligner.groups() for _ in range(3)][-1]  # a later draw of Random step
    b = batch()
    g = torch.Generator().manual_seed(2)
    teacher = TeacherBatch(torch.randn(3, 2, generator=g), torch.randn(3, 7, N_TEACHER, 3, RANK, generator=g))

    torch.manual_seed(5)  # the same LoRA dropout masks in both passes
    loss, parts, _ = model(b, teacher, (0.0, 0.0, 1.0), groups)
    loss.backward()
    new_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    torch.manual_seed(5)
    model.student_forward(b)
    rec = model.recorder
    per_layer = [{m: rec.get(li, m) for m in LORA_TARGETS} for li in range(2)]
    ref = reference_ild(per_layer, teacher.lora, groups, b["attention_mask"] if mask_padding else None)
    ref.backward()
    rec.clear()

    torch.testing.assert_close(parts["inter"], ref.detach(), rtol=1e-6, atol=1e-7)
    # the step's loss also holds 0 * L_CE: parameters the ILD term does not reach get zero gradients
    ref_grads = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}
    assert set(new_grads) <= set(ref_grads) and any("lora_A" in n for n in new_grads)
    for n, grad in ref_grads.items():
        torch.testing.assert_close(new_grads.get(n, torch.zeros_like(grad)), grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")
    assert sum(float(g.abs().sum()) for n, g in ref_grads.items() if "lora_A" in n) > 0


@pytest.mark.parametrize("groups", [
    [[3], [7]], [[1], [3], [5], [7]], [[0], [1]], [[2], [6]],  # strided single layers (one view)
    [[0, 1, 2, 3], [4, 5, 6, 7]], [[2, 3], [4, 5]],  # equal consecutive runs (one mean)
    [[0], [1], [5]], [[1, 2], [3]], [[0, 2], [5]], [[4]],  # irregular: per-group slices
])
def test_align_teacher_equals_the_mean_of_each_group(groups):
    f = torch.randn(2, 3, 8, 3, 2)
    expected = torch.stack([f[:, :, g].mean(dim=2) for g in groups], dim=2)
    torch.testing.assert_close(align_teacher(f, groups), expected, rtol=1e-6, atol=1e-7)


def test_random_step_draws_cover_both_alignment_paths():
    """Random step's draws are sometimes strided (one view) and sometimes not: both paths are used."""
    aligner = LayerAligner("random_step", N_TEACHER, 3, seed=0)
    aligner.start_epoch(0)
    kinds = set()
    for _ in range(50):
        layers = [g[0] for g in aligner.groups()]
        kinds.add(len({b - a for a, b in itertools.pairwise(layers)}) == 1)
    assert kinds == {True, False}


def test_batched_loss_is_float32_under_bf16_autocast_and_matches_float32_arithmetic():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 3, 3, 4, generator=g).to(torch.bfloat16).requires_grad_(True)
    t = torch.randn(2, 5, 3, 3, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ild_loss_layers(t, s, mask)
    assert got.dtype == torch.float32
    per_layer = [{m: s.float()[:, :, li, mi] for mi, m in enumerate(LORA_TARGETS)} for li in range(3)]
    want = reference_ild(per_layer, t, [[0], [1], [2]], mask)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_batched_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="layers, 3, rank"):
        ild_loss_layers(torch.randn(2, 3, 4, 3, 2), torch.randn(2, 3, 2, 3, 2))


@pytest.mark.parametrize("masked", [True, False])
def test_written_out_gradient_matches_autograd_including_clamped_tokens(masked):
    """The hand-written backward of eq. 3 against autograd of the per-layer formula, with a token whose
    student features are all zero and one whose norm is below the clamp (``n = eps`` holds there)."""
    g = torch.Generator().manual_seed(4)
    s0 = torch.randn(2, 5, 3, 3, 4, generator=g)
    s0[0, 1] = 0.0
    s0[1, 2] = 1e-14 * torch.randn(3, 3, 4, generator=g)
    t = torch.randn(2, 5, 3, 3, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]) if masked else None
    s_new, s_ref = s0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
    got = ild_loss_layers(t, s_new, mask)
    (3.0 * got).backward()
    per_layer = [{m: s_ref[:, :, li, mi] for mi, m in enumerate(LORA_TARGETS)} for li in range(3)]
    want = reference_ild(per_layer, t, [[0], [1], [2]], mask)
    (3.0 * want).backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s_new.grad, s_ref.grad, rtol=1e-5, atol=1e-6)
    assert s_ref.grad[0, 1].abs().max() > 1e6  # the clamped token's gradient (1 / eps scale) is compared too


def test_bf16_student_gets_a_bf16_gradient_equal_to_float32_autograd():
    g = torch.Generator().manual_seed(6)
    s = torch.randn(2, 5, 2, 3, 4, generator=g).to(torch.bfloat16).requires_grad_(True)
    s_ref = s.detach().float().requires_grad_(True)
    t = torch.randn(2, 5, 2, 3, 4, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ild_loss_layers(t, s, mask).backward()
    per_layer = [{m: s_ref[:, :, li, mi] for mi, m in enumerate(LORA_TARGETS)} for li in range(2)]
    reference_ild(per_layer, t, [[0], [1]], mask).backward()
    assert s.grad.dtype == torch.bfloat16
    torch.testing.assert_close(s.grad.float(), s_ref.grad.to(torch.bfloat16).float(), rtol=1e-2, atol=1e-4)


def test_teacher_features_that_require_grad_are_refused():
    t = torch.randn(1, 2, 1, 3, 2, requires_grad=True)
    with pytest.raises(ValueError, match="frozen"):
        ild_loss_layers(t, torch.randn(1, 2, 1, 3, 2))
