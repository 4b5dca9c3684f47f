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
from paperlib.swap.host_maps import HostMaps
from paperlib.swap.indicators import commutator, dep_from_norms, spectral_norms, swap_score, trans
from paperlib.swap.linear_fit import (
    NormalEquations,
    check_precision,
    mm_float32_accumulate,
    SPLIT_PARTS,
    split_bf16,
    split_pairs,
    tf32_matmul,
    window_mean_masked,
    window_scale,
)

BASELINES = ("block_influence", "angular_distance", "relative_update", "angular_distance_last")


@dataclass
class FitResult:
    """Output of pass 1: one map per layer and the baseline statistics per pair.

    ``A`` is a list of numpy arrays, or, straight out of :func:`fit_layers`, a
    :class:`~paperlib.swap.host_maps.HostMaps` that copies the maps to the host when first read.
    """

    A: Sequence[np.ndarray]
    r2: list[float]
    n_tokens: int
    baselines: dict[str, list[float]] = field(default_factory=dict)
    #: ``A`` as float64 tensors on each layer's device, as solved (equal to ``A``); pass 2 and the
    #: table use them instead of copying ``A`` back to the device (13 MB per layer at GPT-2 Large)
    A_device: list[torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def map_on(self, i: int, device: str | torch.device) -> torch.Tensor:
        """``A_i`` as a float64 tensor on ``device``: the kept device copy when it lives there,
        else one copy of ``A[i]``."""
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if self.A_device is not None and self.A_device[i].device == dev:
            return self.A_device[i]
        return torch.as_tensor(self.A[i], dtype=torch.float64).to(dev)

    @property
    def d(self) -> int:
        """The hidden size (no host copy of the maps needed)."""
        shape = getattr(self.A, "shape", None)
        return int(shape[0]) if shape is not None and len(shape) == 2 else int(np.shape(self.A[0])[0])

    def trans_values(self) -> list[float]:
        """``Trans(i) = ||A_i||_F / sqrt(d)`` (eq. 13) of every layer: from the maps on the GPU
        where :func:`fit_layers` kept them there, else from the host maps (as always on CPUs)."""
        if self.A_device is not None and self.A_device[0].device.type != "cpu":
            return [float(torch.linalg.matrix_norm(a, "fro") / math.sqrt(a.shape[0])) for a in self.A_device]
        return [trans(a) for a in self.A]


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


class _Rows:
    """Per-batch views of the trace on each layer's device, made once and dropped when done.

    ``row(j, dev)``: ``X_j`` flattened to float32 with padded rows zeroed, on ``dev``;
    ``xhat(j, dev)``: the window mean of ``X_j`` (eq. 12) flattened, on ``dev``;
    ``w(dev)``: the real-token weights.  Keeping only a few layers' copies at a time bounds the
    memory of a batch to a few states, whatever the depth.
    """

    def __init__(self, hidden: list[torch.Tensor], mask: torch.Tensor, window: int):
        self.hidden, self.mask, self.window = hidden, mask, window
        self._masks: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._scales: dict[torch.device, torch.Tensor] = {}
        self._rows: dict[tuple[int, torch.device], torch.Tensor] = {}

    def mask_w(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if dev not in self._masks:
            m = self.mask.to(dev)
            self._masks[dev] = (m, m.reshape(-1).to(torch.float32))
        return self._masks[dev]

    def row(self, j: int, dev: torch.device) -> torch.Tensor:
        if (j, dev) not in self._rows:
            _, w = self.mask_w(dev)
            h = self.hidden[j].to(dev)
            row = h.reshape(-1, h.shape[-1]) * w[:, None]  # bf16 * float32 -> float32 in one kernel
            self._rows[(j, dev)] = row if row.dtype == torch.float32 else row.float()
        return self._rows[(j, dev)]

    def xhat(self, j: int, dev: torch.device) -> torch.Tensor:
        m, _ = self.mask_w(dev)
        xm = self.row(j, dev).view(self.hidden[j].shape)
        if dev not in self._scales:  # the window-mean factor depends on the mask only: once per batch
            self._scales[dev] = window_scale(m, self.window, xm.dtype)
        return window_mean_masked(xm, m, self.window, self._scales[dev]).view(-1, xm.shape[-1])

    def forget_below(self, j: int) -> None:
        for key in [k for k in self._rows if k[0] < j]:
            del self._rows[key]


# Every expectation runs over real tokens only.  Instead of gathering the real rows (a host
# sync and a copy per tensor), padded rows are kept and weighted by the mask ``w``: Xhat and Y
# are exactly 0 there (so they add nothing to X^T X, X^T Y) and per-token terms are multiplied
# by ``w`` before summing.
#
# Models split over devices (accelerate's device_map): everything about layer i (its fit
# statistics, its maps, the pair (i, i+1)) lives on block i's device, ``stack.devices[i]``; the
# states are moved there, d numbers per token, never the d x d statistics.


@torch.no_grad()
def fit_layers(
    stack: ResidualStack,
    batches: Sequence[TokenBatch],
    window: int = 4,
    ridge: float = 0.0,
    progress: bool = True,
    precision: str = "float64",
    stats_device: str | torch.device | None = None,
) -> FitResult:
    """Pass 1 (eq. 12 and the baselines) over ``batches``.

    ``precision``: how each batch's Gram products are formed (``linear_fit.PRECISIONS``; always
    summed in float64).  ``stats_device``: where the ``2 d^2`` float64 statistics of every layer
    live (default: the layer's device; ``"cpu"``: pinned host memory, for models whose statistics
    do not fit beside the weights, at the cost of a host transfer per layer and batch); the
    products and the solve run on the layer's device either way.
    """
    check_precision(precision)
    devs = stack.devices
    n = stack.n_layers
    eqs: list[NormalEquations] | None = None
    sums = [torch.zeros(len(BASELINES), dtype=torch.float64, device=devs[i]) for i in range(n - 1)]
    count = 0
    n_seqs = 0
    for batch in tqdm(batches, desc="pass 1: fit A_i", disable=not progress):
        tr = stack.trace(batch.input_ids, batch.attention_mask)
        rows = _Rows(tr.hidden, batch.attention_mask, window)
        mask = batch.attention_mask
        # flat row of each sequence's last real token (batches are right-padded)
        last = (mask.sum(1) - 1).clamp_min(0) + torch.arange(mask.shape[0], device=mask.device) * mask.shape[1]
        last_on: dict[torch.device, torch.Tensor] = {}  # one copy per device and batch, not per layer
        if eqs is None:
            d = tr.hidden[0].shape[-1]
            eqs = [NormalEquations(d, device=stats_device if stats_device is not None else devs[i],
                                   precision=precision, pin=stats_device is not None) for i in range(n)]
        for i in range(n):
            dev = devs[i]
            x_i = rows.row(i, dev)
            eqs[i].update(rows.xhat(i, dev), rows.row(i + 1, dev) - x_i, n_rows=batch.n_tokens)
            if i < n - 1:
                _, w = rows.mask_w(dev)
                x_2 = rows.row(i + 2, dev)
                c = _cos(x_i, x_2)
                last_i = last_on.get(dev)
                if last_i is None:
                    last_i = last_on[dev] = last.to(dev)
                c_last = _cos(x_i[last_i], x_2[last_i])  # Gromov et al.: the last token only
                # the four sums of BASELINES added at once (one add, not four indexed ones)
                sums[i] += torch.stack([((1.0 - c) * w).sum(dtype=torch.float64),
                                        (torch.arccos(c) / math.pi * w).sum(dtype=torch.float64),
                                        _rel_norm(x_2 - x_i, x_i).sum(dtype=torch.float64),
                                        (torch.arccos(c_last) / math.pi).sum(dtype=torch.float64)])
            rows.forget_below(i + 1)
        count += batch.n_tokens
        n_seqs += mask.shape[0]
    if eqs is None:
        raise ValueError("no batches to fit")
    fits = [eq.solve(ridge, device=devs[i]) for i, eq in enumerate(tqdm(eqs, desc="solve", disable=not progress))]
    denominators = torch.tensor([count, count, count, n_seqs], dtype=torch.float64)
    means = ((torch.stack([s_.cpu() for s_ in sums], dim=1) / denominators[:, None]).tolist() if n > 1
             else [[] for _ in BASELINES])
    return FitResult(
        # host copies made when first read; at once when the statistics were sent to the host to
        # spare device memory (then the maps leave the devices too)
        A=HostMaps([f.A_tensor for f in fits]) if stats_device is None else [f.A for f in fits],
        r2=[f.r2 for f in fits],
        n_tokens=count,
        baselines={k: means[b] for b, k in enumerate(BASELINES)},
        # kept where solved, unless the statistics were sent to the host to spare device memory
        A_device=[f.A_tensor for f in fits] if stats_device is None else None,
    )


def _pinned(t: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``t`` on ``device``; in page-locked memory when that is the host of a CUDA machine."""
    t = t.to(device)
    return t.pin_memory() if t.device.type == "cpu" and torch.cuda.is_available() else t


def _products(x: torch.Tensor, maps: tuple[torch.Tensor, ...], precision: str) -> torch.Tensor:
    """``x @ M`` in float32: a float32 product (``float64`` mode), TF32, or split-bf16 (``maps``
    holds the bf16 parts of the float32 ``M``; every kept product in one GEMM)."""
    if precision in SPLIT_PARTS:
        parts = SPLIT_PARTS[precision]
        xs = split_bf16(x, parts)
        pairs = split_pairs(parts)
        left = torch.cat([xs[i] for i, _ in pairs], dim=1)  # (n, k d)
        return mm_float32_accumulate(left, torch.cat([maps[j] for _, j in pairs], dim=0))
    with tf32_matmul(precision == "tf32"):
        return x @ maps[0]


@torch.no_grad()
def measure_swaps(
    stack: ResidualStack,
    batches: Sequence[TokenBatch],
    fit: FitResult,
    window: int = 4,
    progress: bool = True,
    precision: str = "float64",
    maps_device: str | torch.device | None = None,
) -> SwapResult:
    """Pass 2 (eqs. 2, 15-16 and held-out R^2) over ``batches``.

    ``precision`` sets how ``Xhat [A_i | K_i]`` (held-out residuals and delta') is formed: float32
    products (``float64``, the default), split-bf16 with float32 accumulation (``bf16x3``,
    ``bf16x6``) or TF32 (``tf32``); sums are float64 in every mode.  Layer ``i``'s work runs on block ``i``'s device.
    ``maps_device="cpu"`` keeps the ``2 d^2`` float32 numbers of every ``[A_i | K_i]`` in pinned host
    memory and copies each to its device when used (models whose maps do not fit beside the weights).
    """
    check_precision(precision)
    devs = stack.devices
    n = stack.n_layers
    # [A_i | K_i] per layer (K_i = A_i A_{i+1} - A_{i+1} A_i, 0 for the last layer), float32 on its device
    maps: list[tuple[torch.Tensor, ...]] = []
    for i in range(n):
        a = fit.map_on(i, devs[i])  # kept on the device by fit_layers: no host -> device copy
        k = commutator(a, fit.map_on(i + 1, devs[i])) if i < n - 1 else torch.zeros_like(a)
        m = torch.cat([a, k], dim=1).float()
        del a, k
        parts = split_bf16(m, SPLIT_PARTS[precision]) if precision in SPLIT_PARTS else (m,)
        if maps_device is not None:
            parts = tuple(_pinned(p, maps_device) for p in parts)
        maps.append(parts)
    acc = [torch.zeros(4, dtype=torch.float64, device=devs[i]) for i in range(n)]  # delta, delta', sse, sum y^2
    y_sum: list[torch.Tensor] | None = None
    count = 0
    for batch in tqdm(batches, desc="pass 2: delta, delta'", disable=not progress):
        tr = stack.trace(batch.input_ids, batch.attention_mask)
        rows = _Rows(tr.hidden, batch.attention_mask, window)
        if y_sum is None:
            d = tr.hidden[0].shape[-1]
            y_sum = [torch.zeros(d, dtype=torch.float64, device=devs[i]) for i in range(n)]
        for i in range(n):
            dev = devs[i]
            _, w = rows.mask_w(dev)
            x_i = rows.row(i, dev)
            xhat = rows.xhat(i, dev)
            y = rows.row(i + 1, dev) - x_i
            pred = _products(xhat, tuple(p.to(dev, non_blocking=True) for p in maps[i]), precision)  # Xhat [A_i | K_i]
            d = y.shape[-1]
            sse = (y - pred[:, :d]).square_().sum(dtype=torch.float64)
            sst = y.square().sum(dtype=torch.float64)
            y_sum[i] += y.sum(0, dtype=torch.float64)
            if i < n - 1:
                lin = _rel_norm(pred[:, d:], xhat).sum(dtype=torch.float64)
                swapped = tr.block(stack, i, tr.block(stack, i + 1, tr.hidden[i]))
                diff = (rows.row(i + 2, dev) - _flat(swapped.to(dev))) * w[:, None]
                real = _rel_norm(diff, x_i).sum(dtype=torch.float64)
                acc[i] += torch.stack([real, lin, sse, sst])  # one add, not four indexed ones
            else:
                acc[i][2:] += torch.stack([sse, sst])
            rows.forget_below(i + 1)
        count += batch.n_tokens
    if count == 0:
        raise ValueError("no tokens to measure")
    acc_np = torch.stack([a.cpu() for a in acc], dim=1).numpy()
    ysum = torch.stack([y.cpu() for y in y_sum]).numpy()
    sst = acc_np[3] - (ysum ** 2).sum(1) / count
    return SwapResult(
        delta=(acc_np[0, : n - 1] / count).tolist(),
        delta_lin=(acc_np[1, : n - 1] / count).tolist(),
        r2_heldout=[float(1.0 - e / t) if t > 0 else math.nan for e, t in zip(acc_np[2], sst)],  # nan: Y = 0
        n_tokens=count,
    )


def pair_rows(fit: FitResult, swaps: SwapResult | None = None, device: str | torch.device = "cpu",
              memory_budget: int | None = None) -> list[dict]:
    """One row per adjacent pair, layers numbered from 1 as in the paper.

    The spectral norms of ``Dep`` (eq. 14) are computed on ``device``: the maps ``A_i`` and both
    products ``A_i A_{i+1}``, ``A_{i+1} A_i`` of every pair in one batched call, for as many layers
    at a time as fit ``memory_budget`` bytes (default: 2 GiB on the host, half the free memory of
    a GPU: all layers at once at GPT-2 Large and Llama-3-8B size on an 80 GB card).  The maps
    ``fit_layers`` kept on the device are used in place (no host round trip).
    """
    n = len(fit.A)
    d = fit.d
    dev = torch.device(device)
    if memory_budget is None:
        memory_budget = torch.cuda.mem_get_info(dev)[0] // 2 if dev.type == "cuda" else 2 * 2**30
    # per layer: its map, two products, their copies in one stack and three Gram matrices
    chunk = max(1, int(memory_budget // (9 * d * d * 8)))
    t = fit.trans_values()  # as layer_rows: from the maps on the GPU when kept there (no 4 GiB host read at d = 4096)
    dep_f: list[float] = []
    dep_b: list[float] = []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        A = torch.stack([fit.map_on(j, dev) for j in range(s, min(n, e + 1))])  # device copies kept by fit_layers
        m = len(A)  # layers s .. e (e included when it exists: the next chunk's first)
        if m > 1:
            # ||A_i||, ||A_i A_{i+1}||, ||A_{i+1} A_i|| of the pairs (i, i+1), i = s .. e-1, in one batched call
            nrm = spectral_norms(torch.cat([A, A[:-1] @ A[1:], A[1:] @ A[:-1]]))
            nrm, prod_f, prod_b = nrm[:m], nrm[m : 2 * m - 1], nrm[2 * m - 1 :]
            dep_f += dep_from_norms(prod_f, nrm[:-1], nrm[1:]).tolist()  # Dep(i, i+1)
            dep_b += dep_from_norms(prod_b, nrm[1:], nrm[:-1]).tolist()  # Dep(i+1, i)
        del A
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
    for i, t in enumerate(fit.trans_values()):
        row = {"layer": i + 1, "trans": t, "r2_fit": fit.r2[i]}
        if swaps is not None:
            row["r2_heldout"] = swaps.r2_heldout[i]
        rows.append(row)
    return rows
