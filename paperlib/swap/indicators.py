"""The paper's indicators computed from the fitted maps ``A_i`` (paper A, eqs. 1, 13, 14, 15).

Row convention as in the paper: a layer acts as ``X -> X + X A_i``, so ``X A_i A_{i+1}`` applies
layer ``i`` first.
"""

from __future__ import annotations

import numpy as np


def trans(A: np.ndarray) -> float:
    """Non-redundancy ``Trans(i) = ||A_i||_F / sqrt(d)`` (eq. 13)."""
    return float(np.linalg.norm(A, "fro") / np.sqrt(A.shape[0]))


def dep(A_i: np.ndarray, A_j: np.ndarray) -> float:
    """Dependence ``Dep(i, j) = ||A_i A_j||_2 / (||A_i||_2 ||A_j||_2)`` (eq. 14), in [0, 1].

    Zero exactly when ``Im(A_i)`` (row space of outputs) lies in ``Ker(A_j)``.  Defined as 0
    when either map is 0 (a redundant layer depends on nothing).
    """
    ni, nj = np.linalg.norm(A_i, 2), np.linalg.norm(A_j, 2)
    if ni == 0.0 or nj == 0.0:
        return 0.0
    return float(np.linalg.norm(A_i @ A_j, 2) / (ni * nj))


def swap_score(trans_i: float, trans_j: float, dep_ij: float, dep_ji: float) -> float:
    """``r(i, i+1) = Trans(i) Trans(i+1) (Dep(i, i+1) + Dep(i+1, i))`` (eq. 1)."""
    return trans_i * trans_j * (dep_ij + dep_ji)


def commutator(A_i: np.ndarray, A_j: np.ndarray) -> np.ndarray:
    """``A_i A_j - A_j A_i``.

    With linear layers ``L'_i(X) = X + X A_i`` (eq. 15),
    ``L'_j(L'_i(X)) - L'_i(L'_j(X)) = X (A_i A_j - A_j A_i)``, so ``delta'`` (eq. 16) is the mean
    relative norm of ``Xhat`` times this matrix.
    """
    return A_i @ A_j - A_j @ A_i
