"""Linear approximation of each layer (paper A, eq. 12) by streamed least squares.

``A_i = argmin_A  E_t || X_{i,t} + Xhat_{i,t} A - X_{i+1,t} ||^2``   (eq. 12)

with ``Xhat_{i,t}`` the mean of the token's hidden state and the ``window - 1`` states before it
in the same sequence (the paper uses 4: the token and the 3 before it).  The fit is accumulated
as normal equations ``G = sum Xhat^T Xhat``, ``C = sum Xhat^T Y`` with ``Y = X_{i+1} - X_i``, in
float64, so any number of tokens streams through ``O(d^2)`` memory, and solved once:
``A = (G + lambda I)^{-1} C``.  The coefficient of determination of each fit is reported.

How each batch's products ``Xhat^T [Xhat | Y]`` are formed (:data:`PRECISIONS`; the sums over
batches are float64 in every mode):

- ``float64``: float64 products (exact to float64 rounding; the default);
- ``bf16x3``: split-bf16, ``x = x_0 + x_1`` with ``x_0 = bf16(x)``, ``x_1 = bf16(x - x_0)`` (16
  significant bits), and ``sum_{i+j<2} x_i^T x_j`` (three products) as one bf16 tensor-core
  product with float32 accumulation: relative error about ``2^-16`` in ``G``, so the maps move by
  about ``cond(G) 2^-16``;
- ``bf16x6``: three bf16 parts (24 bits, float32's precision), six products; the float32
  accumulation inside each product is then the limit, about ``cond(G) 2^-24 sqrt(n)``.
  On a tiny ill-conditioned fit (GPT-2 config, d = 32, 96 tokens) r moved by 2e-3 (bf16x3) and
  2e-4 (bf16x6) relative; ``bench/bench_swap.py --precisions`` measures it at full size;
- ``tf32``: one float32 product on TF32 tensor cores (10-bit inputs, float32 accumulation),
  the fastest and least exact.

Statistics live on the device of the states by default, or on ``device`` (e.g. pinned CPU
memory for models whose ``2 d^2`` float64 numbers per layer do not fit beside the weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

#: how a batch's products are formed (see the module docstring)
PRECISIONS = ("float64", "bf16x3", "bf16x6", "tf32")
#: bf16 parts of each split mode
SPLIT_PARTS = {"bf16x3": 2, "bf16x6": 3}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (default float64), got {precision!r}")
    return precision


def split_bf16(x: torch.Tensor, parts: int = 2) -> tuple[torch.Tensor, ...]:
    """``x = x_0 + x_1 + ...`` in ``parts`` bfloat16 tensors (8 more significant bits each)."""
    out = []
    rest = x.float()
    for k in range(parts):
        p = rest.to(torch.bfloat16)
        out.append(p)
        if k < parts - 1:
            rest = rest - p.float()
    return tuple(out)


def split_pairs(parts: int) -> list[tuple[int, int]]:
    """The products ``x_i^T y_j`` kept by a split of ``parts`` parts: ``i + j < parts``."""
    return [(i, j) for i in range(parts) for j in range(parts) if i + j < parts]


@contextlib.contextmanager
def tf32_matmul(enabled: bool = True) -> Iterator[None]:
    """float32 matrix products on TF32 tensor cores inside the block (restored after)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def gram_products(x: torch.Tensor, y: torch.Tensor, precision: str = "float64") -> torch.Tensor:
    """``x^T [x | y]`` (d, 2d) formed in ``precision``, returned in float64 (or float32 for the
    fast modes, to be added into float64 sums)."""
    if precision == "float64":
        # [x | y] widened straight into one float64 buffer (no separate float64 copies of x and y
        # concatenated afterwards: a third of the memory traffic); x^T is a view of its left half
        d = x.shape[1]
        xy = torch.empty(x.shape[0], d + y.shape[1], dtype=torch.float64, device=x.device)
        xy[:, :d].copy_(x)
        xy[:, d:].copy_(y)
        return xy[:, :d].T @ xy
    if precision in SPLIT_PARTS:
        parts = SPLIT_PARTS[precision]
        xs = split_bf16(x, parts)
        xys = [torch.cat([xp, yp], dim=1) for xp, yp in zip(xs, split_bf16(y, parts))]
        pairs = split_pairs(parts)
        left = torch.cat([xs[i] for i, _ in pairs], dim=0)  # (k n, d): every kept product in one GEMM
        right = torch.cat([xys[j] for _, j in pairs], dim=0)  # (k n, 2d)
        return mm_float32_accumulate(left.T, right)
    if precision == "tf32":
        with tf32_matmul():
            return x.float().T @ torch.cat([x.float(), y.float()], dim=1)
    raise ValueError(check_precision(precision))


_MM_OUT_DTYPE: dict[str, bool] = {}


def mm_float32_accumulate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of bfloat16 matrices with the float32 accumulator returned unrounded.

    On CUDA: ``torch.mm(a, b, out_dtype=torch.float32)`` (bf16 tensor cores; a plain bf16 product
    would round the sums to 8 bits).  Where that is missing (older torch, CPUs) the bf16 values
    are widened to float32 first, with TF32 off, which is the same arithmetic at the float32 rate.
    """
    key = a.device.type
    if key == "cuda" and _MM_OUT_DTYPE.get(key, True):
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            _MM_OUT_DTYPE[key] = False
    with tf32_matmul(False):
        return a.float() @ b.float()


def bf16_tensor_cores_used(device: torch.device | str = "cuda") -> bool:
    """Whether :func:`mm_float32_accumulate` runs on bf16 tensor cores on ``device`` (for reports)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return False
    a = torch.ones(16, 16, dtype=torch.bfloat16, device=dev)
    mm_float32_accumulate(a, a)
    return _MM_OUT_DTYPE.get("cuda", True)


class TooFewTokensError(ValueError):
    """The fit of a d x d map needs at least d tokens (or an explicit ridge)."""


def window_mean(x: torch.Tensor, mask: torch.Tensor, window: int = 4) -> torch.Tensor:
    """``Xhat_t`` = mean of ``x_s`` over the valid positions ``s`` in ``[t - window + 1, t]``.

    ``x``: (batch, seq, d); ``mask``: (batch, seq) with 1 for real tokens.  Padding (left or
    right) never enters a mean; at the start of a sequence fewer than ``window`` states exist
    and the mean is over those.  Values at padded positions are 0.
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer (the paper uses 4), got {window!r}")
    return window_mean_masked(x * mask.to(x.dtype).unsqueeze(-1), mask, window)


def window_scale(mask: torch.Tensor, window: int = 4, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``mask_t / count_t`` (batch, seq, 1): the factor that turns a window sum into the window mean
    of :func:`window_mean` (``count_t``: valid positions in the window; 0 at padded positions).
    It depends on the mask only, so a pass computes it once per batch, not once per layer."""
    m = mask.to(dtype).unsqueeze(-1)
    wcount = m.clone()
    for k in range(1, min(window, mask.shape[1])):
        wcount[:, k:] += m[:, :-k]
    return m / wcount.clamp_min(1.0)


def window_mean_masked(xm: torch.Tensor, mask: torch.Tensor, window: int = 4,
                       scale: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`window_mean` of states already zeroed at padded positions (``xm = x * mask``), in
    ``xm``'s dtype: one copy, ``window - 1`` shifted adds and one scaling by ``mask / count``
    (``scale``: :func:`window_scale` of ``mask``, when the caller already has it)."""
    # sum of shifted copies, not a difference of running sums: over long sequences with large
    # activations the cumulative sums lose the small variations in float32
    wsum = xm.clone()
    for k in range(1, min(window, xm.shape[1])):
        wsum[:, k:] += xm[:, :-k]
    return wsum.mul_(window_scale(mask, window, xm.dtype) if scale is None else scale)


@dataclass
class LayerFit:
    """Result of one layer's fit: the map and how well it explains the update."""

    #: the map (d, d), row convention ``Y ~ Xhat @ A``, as a float64 tensor where it was solved (on
    #: a GPU it stays there: later steps need no copy of its d^2 numbers, and the host copy
    #: :attr:`A` is made only when read)
    A_tensor: torch.Tensor = field(repr=False, compare=False)
    r2: float  # 1 - SSE / SST of Y = X_{i+1} - X_i
    n_tokens: int

    @property
    def A(self) -> np.ndarray:
        """The map as a float64 numpy array on the host (copied from the device on first read)."""
        if not hasattr(self, "_A_host"):
            self._A_host = self.A_tensor.cpu().numpy()
        return self._A_host


class NormalEquations:
    """Streamed sufficient statistics of ``Y ~ Xhat A`` for one layer, in float64."""

    def __init__(self, d: int, device: torch.device | str = "cpu", precision: str = "float64", pin: bool = False):
        self.d = d
        self.precision = check_precision(precision)
        pin = pin and torch.device(device).type == "cpu" and torch.cuda.is_available()
        # G and C side by side: [G | C] = sum Xhat^T [Xhat | Y], one (d, 2d) float64 block
        self.GC = torch.zeros(d, 2 * d, dtype=torch.float64, device=device, pin_memory=pin)
        self.y_sum = torch.zeros(d, dtype=torch.float64, device=device)
        self.y_sq = torch.zeros((), dtype=torch.float64, device=device)
        self.n = 0

    @property
    def G(self) -> torch.Tensor:
        return self.GC[:, : self.d]

    @property
    def C(self) -> torch.Tensor:
        return self.GC[:, self.d :]

    @staticmethod
    def bytes_per_layer(d: int) -> int:
        """Memory of one layer's statistics: ``2 d^2`` float64 numbers (1 GiB at d = 8192)."""
        return 2 * d * d * 8 + (d + 1) * 8

    def update(self, xhat: torch.Tensor, y: torch.Tensor, n_rows: int | None = None) -> None:
        """Add rows ``xhat`` (n, d) and targets ``y`` (n, d).

        Rows that are zero in both (padding) add nothing to the sums; pass ``n_rows``, the
        number of real rows, so that they are not counted either.

        Products are formed in ``self.precision`` on the device of ``xhat`` and summed in float64
        where the statistics live.  float64 is the default: with float32 the fitted maps of small
        or ill-conditioned fits move measurably (seen with post-LN encoders); data-center GPUs run
        float64 matrix products at the float32 rate.
        """
        prod = gram_products(xhat, y, self.precision)
        self.GC += prod.to(self.GC.device, non_blocking=False)
        y_sum = y.sum(0, dtype=torch.float64)
        y_sq = y.square().sum(dtype=torch.float64)
        self.y_sum += y_sum.to(self.y_sum.device)
        self.y_sq += y_sq.to(self.y_sq.device)
        self.n += xhat.shape[0] if n_rows is None else int(n_rows)

    def solve(self, ridge: float = 0.0, device: torch.device | str | None = None) -> LayerFit:
        """``A = (G + ridge * n * I)^{-1} C`` and its R^2, solved on ``device`` (default: where the
        statistics live).

        Without a ridge, fewer tokens than the hidden size leave ``G`` singular: that is an
        error that says how many tokens are needed.
        """
        if device is not None and torch.device(device) != self.GC.device:
            moved = NormalEquations.__new__(NormalEquations)
            moved.__dict__.update(self.__dict__)
            moved.GC, moved.y_sum, moved.y_sq = (t.to(device) for t in (self.GC, self.y_sum, self.y_sq))
            return moved.solve(ridge)
        if ridge == 0.0 and self.n < self.d:
            raise TooFewTokensError(
                f"fitting a {self.d}x{self.d} map needs at least {self.d} tokens "
                f"(got {self.n}); use more tokens (a few times d is better) or pass ridge > 0"
            )
        G = self.G.clone()  # contiguous copy; the ridge goes on its diagonal (no d x d identity made)
        if ridge:
            G.diagonal().add_(ridge * max(self.n, 1))
        try:
            L = torch.linalg.cholesky(G)
            A = torch.cholesky_solve(self.C, L)
        except torch.linalg.LinAlgError:
            A = torch.linalg.lstsq(G, self.C).solution
        sse = self.y_sq - 2.0 * torch.sum(A * self.C) + torch.sum(A * (self.G @ A))
        sst = self.y_sq - (self.y_sum @ self.y_sum) / max(self.n, 1)
        r2 = float(1.0 - sse / sst) if sst > 0 else float("nan")
        return LayerFit(A_tensor=A, r2=r2, n_tokens=self.n)
