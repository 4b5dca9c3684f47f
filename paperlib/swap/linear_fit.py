"""Linear approximation of each layer (paper A, eq. 12) by streamed least squares.

``A_i = argmin_A  E_t || X_{i,t} + Xhat_{i,t} A - X_{i+1,t} ||^2``   (eq. 12)

with ``Xhat_{i,t}`` the mean of the token's hidden state and the ``window - 1`` states before it
in the same sequence (the paper uses 4: the token and the 3 before it).  The fit is accumulated
as normal equations ``G = sum Xhat^T Xhat``, ``C = sum Xhat^T Y`` with ``Y = X_{i+1} - X_i``, in
float64, so any number of tokens streams through ``O(d^2)`` memory, and solved once:
``A = (G + lambda I)^{-1} C``.  The coefficient of determination of each fit is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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
    m = mask.to(x.dtype).unsqueeze(-1)
    xm = x * m
    # sum of shifted copies, not a difference of running sums: over long sequences with large
    # activations the cumulative sums lose the small variations in float32
    wsum = xm.clone()
    wcount = m.clone()
    for k in range(1, min(window, x.shape[1])):
        wsum[:, k:] += xm[:, :-k]
        wcount[:, k:] += m[:, :-k]
    return wsum / wcount.clamp_min(1.0) * m


@dataclass
class LayerFit:
    """Result of one layer's fit: the map and how well it explains the update."""

    A: np.ndarray  # (d, d), row convention: Y ~ Xhat @ A
    r2: float  # 1 - SSE / SST of Y = X_{i+1} - X_i
    n_tokens: int


class NormalEquations:
    """Streamed sufficient statistics of ``Y ~ Xhat A`` for one layer, in float64."""

    def __init__(self, d: int, device: torch.device | str = "cpu"):
        self.d = d
        self.G = torch.zeros(d, d, dtype=torch.float64, device=device)
        self.C = torch.zeros(d, d, dtype=torch.float64, device=device)
        self.y_sum = torch.zeros(d, dtype=torch.float64, device=device)
        self.y_sq = torch.zeros((), dtype=torch.float64, device=device)
        self.n = 0

    def update(self, xhat: torch.Tensor, y: torch.Tensor, n_rows: int | None = None) -> None:
        """Add rows ``xhat`` (n, d) and targets ``y`` (n, d).

        Rows that are zero in both (padding) add nothing to the sums; pass ``n_rows``, the
        number of real rows, so that they are not counted either.

        Products are formed in float64: with float32 the fitted maps of small or
        ill-conditioned fits move measurably (seen with post-LN encoders); data-center GPUs run
        float64 matrix products at the float32 rate.
        """
        xh = xhat.to(torch.float64)
        yy = y.to(torch.float64)
        self.G += xh.T @ xh
        self.C += xh.T @ yy
        self.y_sum += yy.sum(0, dtype=torch.float64)
        self.y_sq += (yy.to(torch.float64) ** 2).sum()
        self.n += xh.shape[0] if n_rows is None else int(n_rows)

    def solve(self, ridge: float = 0.0) -> LayerFit:
        """``A = (G + ridge * n * I)^{-1} C`` and its R^2.

        Without a ridge, fewer tokens than the hidden size leave ``G`` singular: that is an
        error that says how many tokens are needed.
        """
        if ridge == 0.0 and self.n < self.d:
            raise TooFewTokensError(
                f"fitting a {self.d}x{self.d} map needs at least {self.d} tokens "
                f"(got {self.n}); use more tokens (a few times d is better) or pass ridge > 0"
            )
        G = self.G + ridge * max(self.n, 1) * torch.eye(self.d, dtype=torch.float64, device=self.G.device)
        try:
            L = torch.linalg.cholesky(G)
            A = torch.cholesky_solve(self.C, L)
        except torch.linalg.LinAlgError:
            A = torch.linalg.lstsq(G, self.C).solution
        sse = self.y_sq - 2.0 * torch.sum(A * self.C) + torch.sum(A * (self.G @ A))
        sst = self.y_sq - (self.y_sum @ self.y_sum) / max(self.n, 1)
        r2 = float(1.0 - sse / sst) if sst > 0 else float("nan")
        return LayerFit(A=A.cpu().numpy(), r2=r2, n_tokens=self.n)
