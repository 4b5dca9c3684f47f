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


def largest_eigenvalues(G: torch.Tensor, block: int = 8, max_iter: int = 60, tol: float = 1e-13,
                        check_every: int = 5) -> torch.Tensor:
    """``lambda_max`` of each symmetric positive semi-definite matrix in a stack ``[..., n, n]``.

    Block Lanczos with full reorthogonalisation: the orthonormal basis ``V`` of the Krylov space
    ``[Q, G Q, G^2 Q, ...]`` (``block`` columns from a fixed random start, one block per step,
    projected twice against the basis and orthonormalised by Cholesky-QR) and every
    ``check_every`` steps the Rayleigh-Ritz value ``lambda_max(V^T G V)``, which rises
    monotonically to ``lambda_max``.  The Krylov space contains the subspace-iteration space
    ``G^k Q``, and its error falls like ``exp(-4 k sqrt(gap))`` instead of ``(1 - gap)^(2k)``, so a
    few tens of steps do what block subspace iteration needed hundreds for (each step one batched
    ``n x n x block`` product).  ``V^T G V`` is built from the projection coefficients (no extra
    product) and its largest eigenvalue found by repeated squaring on the device (no host
    solver).  Matrices whose Ritz value still moves by more than ``tol`` (relative) after
    ``max_iter`` steps, or whose Krylov space stops growing (rank-deficient, zero), get the full
    eigen-solver, so the result is ``eigvalsh(G)[..., -1]`` to about ``tol`` either way.
    """
    n = G.shape[-1]
    if n <= 4 * block:
        return torch.linalg.eigvalsh(G)[..., -1]
    flat = G.reshape(-1, n, n)
    b, nb = block, flat.shape[0]
    steps = max(1, min(max_iter, n // b - 1))  # the basis holds (steps + 1) blocks, at most n columns
    dim = (steps + 1) * b
    gen = torch.Generator(device=G.device).manual_seed(0)
    V = torch.zeros(nb, n, dim, dtype=G.dtype, device=G.device)
    T = torch.zeros(nb, dim, dim, dtype=G.dtype, device=G.device)  # upper triangle of V^T G V
    start = torch.randn(nb, n, b, dtype=G.dtype, device=G.device, generator=gen)
    V[..., :b], bad = _orthonormal_block(start, start.norm(dim=-2).amax(-1))
    prev = torch.full((nb,), -1.0, dtype=G.dtype, device=G.device)
    lam = prev
    converged = torch.zeros(nb, dtype=torch.bool, device=G.device)
    for k in range(steps + 1):
        m = (k + 1) * b
        Vm = V[..., :m]
        W = flat @ V[..., k * b : m]
        H = Vm.transpose(-1, -2) @ W  # column block k of V^T G V
        Z = W - Vm @ H
        H2 = Vm.transpose(-1, -2) @ Z  # second projection (full reorthogonalisation)
        Z = Z - Vm @ H2
        T[:, :m, k * b : m] = H + H2
        if (k + 1) % check_every == 0 or k == steps:
            Tm = T[:, :m, :m].triu()
            lam = _top_eigenvalue(Tm + Tm.triu(1).transpose(-1, -2))
            converged = ((lam - prev).abs() <= tol * lam.abs().clamp_min(torch.finfo(G.dtype).tiny)) & ~bad
            if bool((converged | bad).all()):
                break
            prev = lam
        if k < steps:
            nxt, deficient = _orthonormal_block(Z, W.norm(dim=-2).amax(-1))
            bad = bad | deficient
            V[..., m : m + b] = torch.where(bad[:, None, None], torch.zeros_like(nxt), nxt)
    if not bool(converged.all()):
        idx = (~converged).nonzero().flatten()
        lam = lam.clone()
        lam[idx] = torch.linalg.eigvalsh(flat[idx])[..., -1]
    return lam.reshape(G.shape[:-2])


def _orthonormal_block(Z: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An orthonormal basis of the columns of each ``Z`` (``[..., n, b]``) by Cholesky-QR, twice,
    and which ``Z`` are (numerically) rank-deficient: Cholesky fails or a new direction is below
    ``1e-10 scale`` (the norm of what was projected).  Deficient entries hold no usable basis."""
    deficient = torch.zeros(Z.shape[:-2], dtype=torch.bool, device=Z.device)
    for p in range(2):
        L, info = torch.linalg.cholesky_ex(Z.transpose(-1, -2) @ Z)
        if p == 0:
            deficient = (info != 0) | (L.diagonal(dim1=-2, dim2=-1).amin(-1) <= 1e-10 * scale)
        L = torch.where(deficient[..., None, None], torch.eye(L.shape[-1], dtype=L.dtype, device=L.device), L)
        Z = torch.linalg.solve_triangular(L, Z.transpose(-1, -2), upper=False).transpose(-1, -2)
    deficient = deficient | ~torch.isfinite(Z).all(dim=-1).all(dim=-1)
    return torch.where(deficient[..., None, None], torch.zeros_like(Z), Z), deficient


def _top_eigenvalue(T: torch.Tensor, squarings: int = 40) -> torch.Tensor:
    """``lambda_max`` of each small symmetric positive semi-definite ``T`` (``[b, m, m]``) on its
    device: ``T^(2^s)`` by normalised repeated squaring (its columns fall into the top
    eigenspace: the share of an eigenvalue ``lambda < lambda_max`` shrinks like
    ``(lambda / lambda_max)^(2^s)``), then the Rayleigh quotient of its largest column."""
    X = T
    for _ in range(squarings):
        X = X / X.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(T.dtype).tiny)
        X = X @ X
    cols = X.norm(dim=-2)  # (b, m)
    v = X.gather(-1, cols.argmax(-1)[:, None, None].expand(-1, X.shape[-2], 1)).squeeze(-1)
    num = (v * (T @ v[..., None]).squeeze(-1)).sum(-1)
    den = (v * v).sum(-1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(T.dtype).tiny), torch.zeros_like(num))


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
