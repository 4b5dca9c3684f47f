"""The paper's indicators computed from the fitted maps ``A_i`` (paper A, eqs. 1, 13, 14, 15).

Row convention as in the paper: a layer acts as ``X -> X + X A_i``, so ``X A_i A_{i+1}`` applies
layer ``i`` first.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import svds

Matrix = np.ndarray | torch.Tensor


def _t(A: Matrix) -> torch.Tensor:
    """float64 tensor view (numpy input) or cast (tensor input, kept on its device)."""
    return torch.as_tensor(A).to(torch.float64)


def trans(A: Matrix) -> float:
    """Non-redundancy ``Trans(i) = ||A_i||_F / sqrt(d)`` (eq. 13)."""
    A = _t(A)
    return float(torch.linalg.matrix_norm(A, "fro") / np.sqrt(A.shape[0]))


def spectral_norms(A: Matrix) -> torch.Tensor:
    """``||A||_2`` (largest singular value) of one matrix or a stack of them.

    On CUDA it is ``sqrt(lambda_max(A^T A))`` (:func:`largest_eigenvalues`; squaring does not
    hurt the largest eigenvalue in float64).  On CPUs it is ARPACK's largest singular value
    (``scipy.sparse.linalg.svds``, a fixed random start vector for determinism), measured 30x
    faster than a full SVD at d = 576 and equal to it to machine precision.
    """
    A = _t(A)
    if A.device.type == "cuda":
        gram = A.transpose(-1, -2) @ A
        return largest_eigenvalues(gram).clamp_min(0.0).sqrt()
    flat = A.reshape(-1, *A.shape[-2:]).numpy()
    out = np.array([_largest_singular_value(m) for m in flat])
    return torch.from_numpy(out.reshape(A.shape[:-2]))


def largest_eigenvalues(G: torch.Tensor, block: int = 16, max_iter: int = 400, tol: float = 1e-13,
                        check_every: int = 10) -> torch.Tensor:
    """``lambda_max`` of each symmetric positive semi-definite matrix in a stack ``[..., n, n]``.

    Block subspace iteration (``Q <- orth(G Q)`` with ``block`` columns from a fixed random start)
    with a Rayleigh-Ritz step (the largest eigenvalue of ``Q^T G Q``) every ``check_every``
    iterations; the Ritz value rises monotonically to ``lambda_max`` with error of order
    ``(lambda_{block+1} / lambda_1)^(2k)``.  Matrices whose Ritz value still moves by more than
    ``tol`` (relative) after ``max_iter`` iterations get the full eigen-solver, so the result is
    ``eigvalsh(G)[..., -1]`` to about ``tol`` either way.  Cost: batched ``n x n x block`` products
    instead of a full ``n x n`` eigen-decomposition per matrix (see ``bench/README.md`` for the
    times on an H100).
    """
    n = G.shape[-1]
    if n <= 4 * block:
        return torch.linalg.eigvalsh(G)[..., -1]
    flat = G.reshape(-1, n, n)
    gen = torch.Generator(device=G.device).manual_seed(0)
    Q = torch.randn(flat.shape[0], n, block, dtype=G.dtype, device=G.device, generator=gen)
    Q = torch.linalg.qr(Q).Q
    prev = torch.full((flat.shape[0],), -1.0, dtype=G.dtype, device=G.device)
    lam = prev
    converged = torch.zeros(flat.shape[0], dtype=torch.bool, device=G.device)
    for k in range(1, max_iter + 1):
        Q = _orthonormal_columns(flat @ Q)
        if k % check_every == 0 or k == max_iter:
            bad = ~torch.isfinite(Q).all(dim=-1).all(dim=-1)  # rank-deficient: left to the full solver
            Qs = torch.where(bad[:, None, None], torch.zeros_like(Q), Q)
            lam = torch.linalg.eigvalsh(Qs.transpose(-1, -2) @ flat @ Qs)[..., -1]
            converged = ((lam - prev).abs() <= tol * lam.abs().clamp_min(torch.finfo(G.dtype).tiny)) & ~bad
            if bool((converged | bad).all()):
                break
            prev = lam
    if not bool(converged.all()):
        idx = (~converged).nonzero().flatten()
        lam = lam.clone()
        lam[idx] = torch.linalg.eigvalsh(flat[idx])[..., -1]
    return lam.reshape(G.shape[:-2])


def _orthonormal_columns(Z: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the columns of each ``Z`` (``[..., n, b]``) by Cholesky-QR, twice.

    ``Q = Z L^{-T}`` with ``Z^T Z = L L^T`` costs two thin products and a ``b x b`` Cholesky,
    far less than a Householder QR of a tall matrix on a GPU; the second pass restores
    orthogonality to machine precision.  A rank-deficient ``Z`` gives NaNs for that matrix (no
    host sync here), which fail the convergence test and send it to the full solver.
    """
    for _ in range(2):
        L = torch.linalg.cholesky_ex(Z.transpose(-1, -2) @ Z).L
        Z = torch.linalg.solve_triangular(L, Z.transpose(-1, -2), upper=False).transpose(-1, -2)
    return Z


def _largest_singular_value(m: np.ndarray) -> float:
    if min(m.shape) <= 3 or not m.any():
        return float(np.linalg.norm(m, 2))
    v0 = np.random.default_rng(0).standard_normal(m.shape[1])
    return float(svds(m, k=1, return_singular_vectors=False, v0=v0, tol=0)[0])


def dep_from_norms(product: torch.Tensor, norm_i: torch.Tensor, norm_j: torch.Tensor) -> torch.Tensor:
    """``Dep = ||A_i A_j||_2 / (||A_i||_2 ||A_j||_2)`` (eq. 14) from the three spectral norms
    (element-wise over stacks); 0 where either map is 0 (a redundant layer depends on nothing)."""
    den = norm_i * norm_j
    safe = den > 0
    return torch.where(safe, product / den.where(safe, torch.ones_like(den)), torch.zeros_like(den))


def dep(A_i: Matrix, A_j: Matrix) -> float:
    """Dependence ``Dep(i, j) = ||A_i A_j||_2 / (||A_i||_2 ||A_j||_2)`` (eq. 14), in [0, 1].

    Zero exactly when ``Im(A_i)`` (row space of outputs) lies in ``Ker(A_j)``, and 0 when either
    map is 0.  Computed in float64 with torch, on the device the tensors live on.
    """
    A_i, A_j = _t(A_i), _t(A_j)
    return float(dep_from_norms(spectral_norms(A_i @ A_j), spectral_norms(A_i), spectral_norms(A_j)))


def swap_score(trans_i: float, trans_j: float, dep_ij: float, dep_ji: float) -> float:
    """``r(i, i+1) = Trans(i) Trans(i+1) (Dep(i, i+1) + Dep(i+1, i))`` (eq. 1)."""
    return trans_i * trans_j * (dep_ij + dep_ji)


def commutator(A_i: Matrix, A_j: Matrix) -> Matrix:
    """``A_i A_j - A_j A_i``.

    With linear layers ``L'_i(X) = X + X A_i`` (eq. 15),
    ``L'_j(L'_i(X)) - L'_i(L'_j(X)) = X (A_i A_j - A_j A_i)``, so ``delta'`` (eq. 16) is the mean
    relative norm of ``Xhat`` times this matrix.
    """
    return A_i @ A_j - A_j @ A_i
