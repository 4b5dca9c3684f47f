"""The two passes of the swap analysis.

Pass 1, on the *metric* tokens: stream the hidden states ``X_0 .. X_n`` of every batch into one
:class:`~paperlib.swap.linear_fit.NormalEquations` per layer (eq. 12) and into the statistics of
the baseline predictors, then solve for every ``A_i``.

Pass 2, on the *delta* tokens: for every adjacent pair ``(i, i+1)``

- ``delta = E_t ||L_{i+1}(L_i(X_i))_t - L_i(L_{i+1}(X_i))_t|| / ||X_{i,t}||`` (eq. 2), where the
  unswapped order is the model's own ``X_{i+2}`` and the swapped order costs two block calls;
- ``delta' = E_t ||Xhat_{i,t} (A_i A_{i+1} - A_{i+1} A_i)|| / ||Xhat_{i,t}||`` (eqs. 15-16);
- the held-out R^2 of every fit.

Both passes keep only ``O(n d^2)`` state, so memory does not grow with the token count.
Baseline predictors (computed on the metric tokens, per pair, over the two-layer block
``X_i -> X_{i+2}``):

- ``block_influence``: ``1 - E_t cos(X_{i,t}, X_{i+2,t})`` (ShortGPT, Men et al. 2024);
- ``angular_distance``: ``E_t arccos(cos(X_{i,t}, X_{i+2,t})) / pi`` averaged over all tokens
  (this book's reading);
- ``relative_update``: ``E_t ||X_{i+2,t} - X_{i,t}|| / ||X_{i,t}||``;
- ``angular_distance_last``: the same angle at the last real token of each sequence only, averaged
  over sequences (Gromov et al. 2024, who measure at the last token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from paperlib.data.tokens import TokenBatch
from paperlib.swap.blocks import ResidualStack
from paperlib.swap.indicators import commutator, dep_from_norms, spectral_norms, swap_score, trans
from paperlib.swap.linear_fit import NormalEquations, window_mean

BASELINES = ("block_influence", "angular_distance", "relative_update", "angular_distance_last")


@dataclass
class FitResult:
    """Output of pass 1: one map per layer and the baseline statistics per pair."""

    A: list[np.ndarray]
    r2: list[float]
    n_tokens: int
    baselines: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class SwapResult:
    """Output of pass 2: per pair delta and delta', per layer held-out R^2."""

    delta: list[float]
    delta_lin: list[float]
    r2_heldout: list[float]
    n_tokens: int


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(batch, seq, d) -> (batch * seq, d) in float32 (padded rows stay, weighted 0 later)."""
    return x.reshape(-1, x.shape[-1]).float()


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)


def _rel_norm(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``||num_t|| / ||den_t||`` per row (0 where ``den`` is a padded zero row)."""
    return num.norm(dim=-1) / den.norm(dim=-1).clamp_min(1e-12)


def _device_of(stack: ResidualStack) -> torch.device:
    return next(stack.model.parameters()).device


# Every expectation runs over real tokens only.  Instead of gathering the real rows (a host
# sync and a copy per tensor), padded rows are kept and weighted by the mask ``w``: Xhat and Y
# are exactly 0 there (so they add nothing to X^T X, X^T Y) and per-token terms are multiplied
# by ``w`` before summing.


@torch.no_grad()
def fit_layers(
    stack: ResidualStack,
    batches: Sequence[TokenBatch],
    window: int = 4,
    ridge: float = 0.0,
    progress: bool = True,
) -> FitResult:
    """Pass 1 (eq. 12 and the baselines) over ``batches``."""
    device = _device_of(stack)
    n = stack.n_layers
    eqs: list[NormalEquations] | None = None
    sums = torch.zeros(len(BASELINES), n - 1, dtype=torch.float64, device=device)
    count = 0
    n_seqs = 0
    for batch in tqdm(batches, desc="pass 1: fit A_i", disable=not progress):
        mask = batch.attention_mask.to(device)
        w = mask.reshape(-1).to(torch.float32)
        # flat row of each sequence's last real token (batches are right-padded)
        last = (mask.sum(1) - 1).clamp_min(0) + torch.arange(mask.shape[0], device=device) * mask.shape[1]
        tr = stack.trace(batch.input_ids.to(device), mask)
        if eqs is None:
            eqs = [NormalEquations(tr.hidden[0].shape[-1], device=device) for _ in range(n)]
        rows = [_flat(h) * w[:, None] for h in tr.hidden]
        for i in range(n):
            xhat = _flat(window_mean(tr.hidden[i].float(), mask, window))
            eqs[i].update(xhat, rows[i + 1] - rows[i], n_rows=batch.n_tokens)
        for i in range(n - 1):
            c = _cos(rows[i], rows[i + 2])
            sums[0, i] += ((1.0 - c) * w).sum(dtype=torch.float64)
            sums[1, i] += (torch.arccos(c) / math.pi * w).sum(dtype=torch.float64)
            sums[2, i] += _rel_norm(rows[i + 2] - rows[i], rows[i]).sum(dtype=torch.float64)
            c_last = _cos(rows[i][last], rows[i + 2][last])
            sums[3, i] += (torch.arccos(c_last) / math.pi).sum(dtype=torch.float64)
        count += batch.n_tokens
        n_seqs += mask.shape[0]
    if eqs is None:
        raise ValueError("no batches to fit")
    fits = [eq.solve(ridge) for eq in tqdm(eqs, desc="solve", disable=not progress)]
    denominators = torch.tensor([count, count, count, n_seqs], dtype=torch.float64, device=device)
    means = (sums / denominators[:, None]).tolist()
    return FitResult(
        A=[f.A for f in fits],
        r2=[f.r2 for f in fits],
        n_tokens=count,
        baselines={k: means[b] for b, k in enumerate(BASELINES)},
    )


@torch.no_grad()
def measure_swaps(
    stack: ResidualStack,
    batches: Sequence[TokenBatch],
    fit: FitResult,
    window: int = 4,
    progress: bool = True,
) -> SwapResult:
    """Pass 2 (eqs. 2, 15-16 and held-out R^2) over ``batches``."""
    device = _device_of(stack)
    n = stack.n_layers
    A64 = [torch.as_tensor(a, dtype=torch.float64).to(device) for a in fit.A]
    A = [a.float() for a in A64]
    K = [commutator(A64[i], A64[i + 1]).float() for i in range(n - 1)]
    acc = torch.zeros(4, n, dtype=torch.float64, device=device)  # delta, delta', sse, sum y^2
    y_sum = None
    count = 0
    for batch in tqdm(batches, desc="pass 2: delta, delta'", disable=not progress):
        mask = batch.attention_mask.to(device)
        w = mask.reshape(-1).to(torch.float32)
        tr = stack.trace(batch.input_ids.to(device), mask)
        rows = [_flat(h) * w[:, None] for h in tr.hidden]
        if y_sum is None:
            y_sum = torch.zeros(n, rows[0].shape[-1], dtype=torch.float64, device=device)
        for i in range(n):
            xhat = _flat(window_mean(tr.hidden[i].float(), mask, window))
            y = rows[i + 1] - rows[i]
            acc[2, i] += ((y - xhat @ A[i]) ** 2).sum(dtype=torch.float64)
            acc[3, i] += (y.to(torch.float64) ** 2).sum()
            y_sum[i] += y.sum(0, dtype=torch.float64)
            if i < n - 1:
                acc[1, i] += _rel_norm(xhat @ K[i], xhat).sum(dtype=torch.float64)
                swapped = tr.call(stack.blocks[i], tr.call(stack.blocks[i + 1], tr.hidden[i]))
                diff = (rows[i + 2] - _flat(swapped)) * w[:, None]
                acc[0, i] += _rel_norm(diff, rows[i]).sum(dtype=torch.float64)
        count += batch.n_tokens
    if count == 0:
        raise ValueError("no tokens to measure")
    acc = acc.cpu().numpy()
    sst = acc[3] - (y_sum.cpu().numpy() ** 2).sum(1) / count
    return SwapResult(
        delta=(acc[0, : n - 1] / count).tolist(),
        delta_lin=(acc[1, : n - 1] / count).tolist(),
        r2_heldout=(1.0 - acc[2] / sst).tolist(),
        n_tokens=count,
    )


def pair_rows(fit: FitResult, swaps: SwapResult | None = None, device: str | torch.device = "cpu") -> list[dict]:
    """One row per adjacent pair, layers numbered from 1 as in the paper.

    The spectral norms of ``Dep`` (eq. 14) are computed on ``device`` (SVDs of d x d maps).
    """
    n = len(fit.A)
    A = torch.stack([torch.as_tensor(a, dtype=torch.float64) for a in fit.A]).to(device)
    t = [trans(a) for a in A]
    # Dep (eq. 14) for all pairs at once: batched spectral norms of A_i and of both products
    norms = spectral_norms(A)
    dep_f = dep_from_norms(spectral_norms(A[:-1] @ A[1:]), norms[:-1], norms[1:]).tolist()  # Dep(i, i+1)
    dep_b = dep_from_norms(spectral_norms(A[1:] @ A[:-1]), norms[1:], norms[:-1]).tolist()  # Dep(i+1, i)
    rows = []
    for i in range(n - 1):
        d_ij, d_ji = dep_f[i], dep_b[i]
        row = {
            "i": i + 1,
            "j": i + 2,
            "trans_i": t[i],
            "trans_j": t[i + 1],
            "dep_ij": d_ij,
            "dep_ji": d_ji,
            "r": swap_score(t[i], t[i + 1], d_ij, d_ji),
        }
        if swaps is not None:
            row["delta"] = swaps.delta[i]
            row["delta_lin"] = swaps.delta_lin[i]
        for k, v in fit.baselines.items():
            row[k] = v[i]
        rows.append(row)
    return rows


def layer_rows(fit: FitResult, swaps: SwapResult | None = None) -> list[dict]:
    """One row per layer: Trans and the fit quality (train and held-out R^2)."""
    rows = []
    for i, a in enumerate(fit.A):
        row = {"layer": i + 1, "trans": trans(a), "r2_fit": fit.r2[i]}
        if swaps is not None:
            row["r2_heldout"] = swaps.r2_heldout[i]
        rows.append(row)
    return rows
