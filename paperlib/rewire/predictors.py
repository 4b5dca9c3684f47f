"""Predictors of a rewiring's cost, from pass 1's fits and the states a batch already holds.

- ``r``: paper A's score (eq. 1) from pass 1 (:func:`paperlib.swap.analysis.pair_rows`); adjacent
  swaps only.
- ``linear``: the linear prediction of any rewiring.  With linear layers
  ``L'_k(X) = X + X A_k`` (eq. 15) a sequence of steps multiplies ``X`` by the product of its
  step matrices (``I + A_k`` for a block, ``I + sum_k A_k`` for parallel blocks whose updates
  are added, ``I + mean_k A_k`` for Sun et al.'s averaged outputs), so a rewiring of the span
  ``s .. e-1`` changes ``X_e`` by ``Xhat_s (P_new - P_orig)`` with
  ``P_orig = (I + A_s) ... (I + A_{e-1})``, and

  ``linear = E_t ||Xhat_{s,t} (P_new - P_orig)|| / ||Xhat_{s,t}||``,

  paper A's ``delta'`` (eq. 16) for an adjacent swap (``P_new - P_orig`` is then the commutator
  ``A_{i+1} A_i - A_i A_{i+1}`` up to sign) and its generalisation to every operation.
  No forward pass: the maps come from pass 1 and ``Xhat_s`` from the batch's cached prefix.
- ``block_influence = 1 - E_t cos(X_{s,t}, X_{e,t})`` (ShortGPT), ``angular_distance =
  E_t arccos(cos(X_{s,t}, X_{e,t})) / pi`` (Gromov et al.) and ``relative_update =
  E_t ||X_{e,t} - X_{s,t}|| / ||X_{s,t}||``: the literature's predictors over the span the
  operation changes, as pass 1 defines them for pairs (paperlib.swap.analysis), here read from
  the held-out batch's original states (no extra forward pass).  For ``delete`` the relative
  update of the span *is* the hidden-state cost ``delta`` at the span's end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from paperlib.rewire.costs import rel_norm
from paperlib.rewire.operations import Parallel, Rewiring, Step
from paperlib.swap.linear_fit import window_mean

#: predictor columns of the table, in order
PREDICTORS = ("r", "linear", "block_influence", "angular_distance", "relative_update")


def step_matrix(step: Step, A: Sequence[np.ndarray]) -> np.ndarray:
    """The matrix one step multiplies a row by, for linear layers ``X -> X + X A_k`` (eq. 15)."""
    eye = np.eye(A[0].shape[0])
    if isinstance(step, Parallel):
        maps = np.stack([A[k] for k in step.layers])
        return eye + (maps.mean(0) if step.mean else maps.sum(0))
    return eye + A[step]


def linear_effect(op: Rewiring, A: Sequence[np.ndarray]) -> np.ndarray:
    """``P_new - P_orig``: the rewiring's change of ``X_e`` for linear layers, ``X_s (P_new - P_orig)``
    (float64)."""
    A = [np.asarray(a, dtype=np.float64) for a in A]
    d = A[0].shape[0]
    new, orig = np.eye(d), np.eye(d)
    for step in op.steps:
        new = new @ step_matrix(step, A)
    for k in op.original:
        orig = orig @ step_matrix(k, A)
    return new - orig


def apply_linear_steps(steps: Sequence[Step], rows: torch.Tensor, A: Sequence[torch.Tensor]) -> torch.Tensor:
    """``rows @ P`` for the steps' product ``P``, one step at a time (cheaper than forming ``P``
    when there are fewer rows than features)."""
    for step in steps:
        if isinstance(step, Parallel):
            updates = [rows @ A[k] for k in step.layers]
            upd = sum(updates)
            rows = rows + (upd / len(updates) if step.mean else upd)
        else:
            rows = rows + rows @ A[step]
    return rows


class BatchPredictors:
    """Per-operation predictor sums on one batch, from its original states and pass 1's maps.

    Operations should come sorted by their first changed block (as
    :func:`paperlib.rewire.operations.expand` returns them): the original path
    ``Xhat_s (I + A_s) ... (I + A_{e-1})`` is then built once per start ``s`` and extended.
    """

    def __init__(self, A: Sequence[np.ndarray] | None, hidden: Sequence[torch.Tensor], mask: torch.Tensor,
                 window: int = 4):
        self.hidden = hidden
        self.mask = mask
        self.w = mask.reshape(-1).float()
        self.window = window
        device = hidden[0].device
        self.A = None if A is None else [torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device) for a in A]
        self._start = -1
        self._orig: dict[int, torch.Tensor] = {}

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1]).float() * self.w[:, None]

    def _original_rows(self, s: int, e: int) -> torch.Tensor:
        if s != self._start:
            self._start = s
            self._orig = {s: self._flat(window_mean(self.hidden[s].float(), self.mask, self.window))}
        last = max(k for k in self._orig if k <= e)
        rows = self._orig[last]
        for k in range(last, e):
            rows = rows + rows @ self.A[k]
            self._orig[k + 1] = rows
        return rows

    def sums(self, op: Rewiring) -> dict[str, float]:
        """Sums over real tokens of ``linear`` (when maps are given) and the three span baselines."""
        xs, xe = self._flat(self.hidden[op.start]), self._flat(self.hidden[op.end])
        cos = torch.nn.functional.cosine_similarity(xs, xe, dim=-1).clamp(-1.0, 1.0)
        w = self.w
        out = {
            "block_influence": float(((1.0 - cos) * w).sum(dtype=torch.float64)),
            "angular_distance": float((torch.arccos(cos) / math.pi * w).sum(dtype=torch.float64)),
            "relative_update": float((rel_norm(xe - xs, xs) * w).sum(dtype=torch.float64)),
        }
        if self.A is not None:
            xhat = self._original_rows(op.start, op.start)
            orig = self._original_rows(op.start, op.end)
            new = apply_linear_steps(op.steps, xhat, self.A)
            out["linear"] = float((rel_norm(new - orig, xhat) * w).sum(dtype=torch.float64))
        return out
