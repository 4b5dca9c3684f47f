"""Loss terms of eqs. (1)-(4) and the RAIL-KD baselines.

- ``L_CE``: cross-entropy with the gold label (MSE for the regression task STS-B).
- ``L_KD`` (eq. 2): ``KL(p_T || p_S)`` with ``p = softmax(z / T)`` (temperature applied to the
  logits *before* the softmax; the authors' code divides the probabilities, a no-op at their
  T = 1), summed over classes and averaged over the batch; STS-B: MSE between the two outputs.
  No ``T^2`` factor (the paper uses T = 1).
- ``L_ILD`` (eq. 3): with ``h`` the per-token concatenation of the aligned LoRA-A features,
  ``|| h^T / |h^T|_2 - h^S / |h^S|_2 ||_2^2``, averaged over the real (non-padding) tokens of the
  batch.  ``mask=None`` averages over every position, padding included (the authors' code, which
  pads every sequence to ``max_length``); the paper writes a sum over the batch, the code a mean.
- RAIL-KD (Haidar et al.): mean-pooled hidden states ``h_bar`` of the selected layers, linearly
  projected to 32 dims by training-only maps ``W_T``, ``W_S``, normalised; non-squared L2 distance
  averaged over the batch.  ``_c`` concatenates the layers before one projection; ``_l`` projects
  each layer with its own map and averages the per-layer distances.
- eq. (4): ``L = lambda_1 L_CE + lambda_2 L_KD + lambda_3 L_ILD`` (weights from
  :mod:`paperlib.loraild.curriculum`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool = False) -> torch.Tensor:
    """``L_CE``: cross-entropy, or MSE on the single output for regression."""
    if regression:
        return F.mse_loss(logits.squeeze(-1), labels.float())
    return F.cross_entropy(logits, labels.long())


def kd_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0,
            regression: bool = False) -> torch.Tensor:
    """``L_KD`` (eq. 2): ``KL(softmax(z_T/T) || softmax(z_S/T))``, batch mean; MSE for regression."""
    if regression:
        return F.mse_loss(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def normalise(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / |x|_2`` along the last dimension."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def ild_loss(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``L_ILD`` (eq. 3) for ``[B, T, D]`` features (each token's whole vector ``h_x``); ``mask``
    ``[B, T]`` (1 = real token) or ``None``.  The same computation as :func:`ild_loss_layers`,
    which training runs, with ``D`` seen as one layer and one module (float32, teacher frozen)."""
    if teacher.shape != student.shape or teacher.dim() != 3:
        raise ValueError(f"teacher features {tuple(teacher.shape)} and student features {tuple(student.shape)} "
                         "must both be [batch, tokens, features]")
    return ild_loss_layers(teacher[:, :, None, None], student[:, :, None, None], mask)


class _IldLayers(torch.autograd.Function):
    """Eq. 3 on ``[B, T, L, 3, r]`` features with its gradient written out (no autograd graph).

    Forward, per token: ``s_hat = s / n``, ``n = max(|s|, eps)``, ``u = t / max(|t|, eps)``,
    ``L = sum_tok w_tok |u - s_hat|^2``.  Backward, with ``g = 2 w_tok dL_out (s_hat - u)``:
    ``dL/ds = (g - a s_hat <s_hat, g>) / n``, where ``a = 1`` when ``|s| >= eps`` and ``0`` when the
    clamp holds ``n`` at ``eps`` (then ``s_hat = s / eps`` is linear in ``s``), as autograd of the
    written-out expression gives (``tests/loraild/test_loraild_ild_batched.py`` checks both).
    """

    @staticmethod
    def forward(ctx, teacher: torch.Tensor, student: torch.Tensor, weights: torch.Tensor | None):
        dims = (2, 3, 4)
        s, t = student.float(), teacher.float()
        n_s = torch.linalg.vector_norm(s, dim=dims, keepdim=True)
        active = n_s >= _EPS
        n_s = n_s.clamp_min(_EPS)
        s_hat = s / n_s
        diff = s_hat - t / torch.linalg.vector_norm(t, dim=dims, keepdim=True).clamp_min(_EPS)
        per_token = diff.square().sum(dim=dims)  # [B, T]
        ctx.student_dtype = student.dtype
        ctx.mean_over = None if weights is not None else per_token.numel()
        ctx.save_for_backward(s_hat, diff, n_s, active, weights)
        if weights is None:
            return per_token.mean()
        return torch.dot(per_token.reshape(-1), weights.reshape(-1))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        s_hat, diff, n_s, active, weights = ctx.saved_tensors
        if weights is None:
            g = diff * (grad_out * (2.0 / ctx.mean_over))
        else:
            g = diff * (weights * (2.0 * grad_out))[:, :, None, None, None]
        radial = (s_hat * g).sum(dim=(2, 3, 4), keepdim=True).mul_(active)
        grad = g.sub_(s_hat * radial).div_(n_s)
        return None, grad.to(ctx.student_dtype), None


_EPS = 1e-12


def ild_loss_layers(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``L_ILD`` (eq. 3) for ``[B, T, L, 3, r]`` features, without flattening them first.

    The same value as ``ild_loss(concat_tokens(t), concat_tokens(s), mask)``: each token's vector
    ``h_x`` is its ``L x 3 x r`` block, normalised by the norm over those three dimensions.  The
    inputs may be strided views (a permuted feature record, a sliced teacher), so no copy is made to
    flatten them, and the arithmetic runs in float32 whatever the dtype of the features (a bf16
    student record is cast once, a float32 teacher not at all).  With a mask the real-token mean is a
    dot product with the weights ``m / sum(m)``.  The gradient (the student's only: the teacher is
    frozen) is written out in :class:`_IldLayers`, a handful of operations instead of autograd's
    two dozen (the step at the paper's size is bound by launching operations,
    ``bench/count_loraild_ops.py``).
    """
    if teacher.shape != student.shape or teacher.dim() != 5:
        raise ValueError(f"teacher features {tuple(teacher.shape)} and student features {tuple(student.shape)} "
                         "must both be [batch, tokens, layers, 3, rank]")
    if teacher.requires_grad:
        raise ValueError("teacher features require grad; the ILD loss treats the teacher as frozen (detach them)")
    weights = None
    if mask is not None:
        m = mask.detach().to(torch.float32)
        weights = m / m.sum().clamp_min(1.0)
    return _IldLayers.apply(teacher, student, weights)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``h_bar``: mean over the tokens (real tokens only when ``mask`` is given), ``[B, T, H] -> [B, H]``."""
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def pooled_layers(hidden_states: tuple[torch.Tensor, ...], mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, L, H]``: mean-pooled outputs of every transformer layer (embeddings excluded)."""
    return torch.stack([mean_pool(h, mask) for h in hidden_states[1:]], dim=1)


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``|a/|a| - b/|b||_2`` (RAIL-KD's non-squared distance)."""
    return (normalise(a) - normalise(b)).norm(dim=-1).mean()


class RailKDHead(nn.Module):
    """RAIL-KD's training-only projections (``mode`` ``"c"``: concatenated; ``"l"``: per layer)."""

    def __init__(self, mode: str, teacher_hidden: int, student_hidden: int, n_teacher: int,
                 n_student: int, dim: int = 32):
        super().__init__()
        if mode not in ("c", "l"):
            raise ValueError("RAIL-KD mode is 'c' or 'l'")
        self.mode, self.n_student = mode, n_student
        if mode == "c":
            self.w_t = nn.Linear(teacher_hidden * n_student, dim)
            self.w_s = nn.Linear(student_hidden * n_student, dim)
        else:
            self.w_t = nn.ModuleList(nn.Linear(teacher_hidden, dim) for _ in range(n_teacher))
            self.w_s = nn.ModuleList(nn.Linear(student_hidden, dim) for _ in range(n_student))

    def project_student(self, s_pooled: torch.Tensor) -> torch.Tensor:
        """``[B, n_s, dim]`` for ``_l`` (per layer) or ``[B, dim]`` for ``_c``."""
        if self.mode == "c":
            return self.w_s(s_pooled.flatten(1))
        return torch.stack([w(s_pooled[:, j]) for j, w in enumerate(self.w_s)], dim=1)

    def forward(self, t_pooled: torch.Tensor, s_pooled: torch.Tensor, selected: list[int]) -> torch.Tensor:
        """Loss for teacher layers ``selected`` (sorted, one per student layer)."""
        if len(selected) != self.n_student:
            raise ValueError(f"need {self.n_student} teacher layers, got {len(selected)}")
        t_sel = t_pooled[:, selected]  # [B, n_s, H_t]
        if self.mode == "c":
            return l2_distance(self.w_t(t_sel.flatten(1)), self.w_s(s_pooled.flatten(1)))
        losses = [l2_distance(self.w_t[t](t_sel[:, j]), self.w_s[j](s_pooled[:, j]))
                  for j, t in enumerate(selected)]
        return torch.stack(losses).mean()


__all__ = ["ce_loss", "kd_loss", "ild_loss", "ild_loss_layers", "normalise", "mean_pool", "pooled_layers",
           "l2_distance", "RailKDHead"]
