"""Synthetic token-wise residual layers that make paper A's section 3 and appendix A.1 executable.

Every layer here is a residual layer on ``R^d`` acting on each token (row) separately,

    L(X) = X + l(X),        l(X) = l'(X Q_in) Q_out^T                            (eqs. 2, 6)

with ``Q_in`` (d x k_in) and ``Q_out`` (d x k_out) orthonormal bases of the subspace the layer
reads (``U``) and the one it writes (``W``).  So ``l(X) = l(X) P_out = l(X P_in)`` with the
orthogonal projections ``P = Q Q^T``: exactly the structure assumed in eq. 6.  What is built:

* layers: :func:`redundant_layer` (``l = 0``, eq. 5), :func:`linear_layer` (``l(X) = X A`` with
  ``A = P_in M P_out``), :func:`mlp_layer` (a random tanh MLP between the projections) and
  :func:`even_layer` (a centred square, an update a linear fit cannot see: a counter-example to
  the assumptions, see below);
* pairs: :func:`subspace_pair` tilts layer ``i+1``'s input / output subspace towards layer
  ``i``'s output / input by two angles; angle 0 is eq. 7 (``P_i^out P_{i+1}^in = 0`` and
  ``P_{i+1}^out P_i^in = 0``) and gives ``delta = 0`` exactly (eqs. 8-11); positive angles are
  the counter-cases with ``delta > 0`` and ``r > 0``.  :func:`commuting_pair` shows that the
  converse fails (``delta = 0`` with ``r > 0``);
* measurements: :func:`delta` (eq. 2) for any token-wise callables, :func:`delta_linear`
  (eq. 16), :func:`fit_layer` / :func:`pair_indicators` (eq. 12 fit, then Trans eq. 13,
  Dep eq. 14 and r eq. 1), :func:`eq23_rhs` (the right-hand side of eq. 23) and
  :func:`check_bound`, which measures the smallest ``c`` with ``delta <= c r`` (eq. 24) over a
  random family of pairs and the Spearman correlation of ``r`` and ``delta`` across it.

Honesty about appendix A.1.  The bound ``delta <= c r`` is derived under assumptions that the
constructions here satisfy only in part:

* eq. 6 (layers read and write through orthogonal projections) holds by construction;
* eq. 21 (the relative change of ``l'_i`` is a function ``f`` of the relative size of the
  perturbation alone, with ``f(x) <= c x``) is not guaranteed for any of these layers, linear
  ones included: the ratio of its two sides is not a function of ``x`` and grows without bound
  for tokens whose update ``||l_i(X)_t||`` is small relative to ``||X_t||``
  (:func:`eq21_ratios` gives it per token).  It holds on average, which is what
  :func:`check_bound` measures;
* the step from eq. 23 to eq. 24 assumes ``||l_i(X)_t|| / ||X_t||`` and
  ``||l_{i+1}(X)_t|| / ||X_t||`` independent, equates their means with ``Trans`` of the fitted
  maps (only approximate: for linear layers and isotropic tokens ``Trans(A)^2 =
  E ||x A||^2 / ||x||^2``, so Trans is the root mean square of the relative update, not its
  mean) and replaces ``||P_{i+1}^out P_i^in||_2`` by
  ``Dep(i+1, i)``.  For ``A = P_in M P_out`` one has ``Dep(i, j) <= ||P_i^out P_j^in||_2``
  (sub-multiplicativity), so the replacement can only *shrink* the right side: the constant of
  eq. 24 absorbs the gap.  :func:`check_bound` therefore reports both ``c`` (against ``r``)
  and ``c23`` (against the exact right side of eq. 23);
* the whole chain needs ``Trans(i) = 0`` only when layer ``i`` does nothing (section 2.1).  With
  ``Trans`` computed from a least-squares fit (eq. 12) that fails for :func:`even_layer`: its
  best linear fit on symmetric tokens is ``A = 0`` although it changes every token, so
  ``r ~ 0`` while ``delta > 0`` and no constant ``c`` works.  The low ``R^2`` of the fit flags it.

All tensors are float64 torch tensors of shape (n_tokens, d); seeds are ints or
``torch.Generator`` objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from paperlib.swap.indicators import dep, swap_score, trans
from paperlib.swap.linear_fit import LayerFit, NormalEquations, window_mean
from paperlib.swap.stats import Correlation, spearman

DTYPE = torch.float64
Seed = int | torch.Generator
TokenMap = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# random ingredients


def make_generator(seed: Seed) -> torch.Generator:
    """A ``torch.Generator`` from an int seed (a generator is passed through)."""
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def random_basis(d: int, seed: Seed = 0) -> torch.Tensor:
    """A Haar-random orthogonal ``d x d`` matrix; its column blocks span orthogonal subspaces."""
    g = make_generator(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DTYPE))
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs  # fixing the signs of R's diagonal makes q Haar-distributed


def projection(Q: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection ``P = Q Q^T`` onto the span of the orthonormal columns of ``Q``."""
    return Q @ Q.T


def sample_tokens(n: int, d: int, seed: Seed = 0) -> torch.Tensor:
    """``n`` isotropic Gaussian token states ``X_t ~ N(0, I_d)`` (rows), float64."""
    return torch.randn(n, d, generator=make_generator(seed), dtype=DTYPE)


# --------------------------------------------------------------------------------------------
# layers


@dataclass(frozen=True, eq=False)
class ResidualLayer:
    """A token-wise residual layer ``L(X) = X + l(X)`` with ``l(X) = l'(X Q_in) Q_out^T`` (eq. 6).

    ``inner`` is ``l'`` restricted to subspace coordinates: it maps (n, k_in) to (n, k_out).
    ``linear_map`` is the exact ``d x d`` matrix ``A`` with ``l(X) = X A`` when the layer is
    linear (``None`` otherwise).
    """

    name: str
    Q_in: torch.Tensor
    Q_out: torch.Tensor
    inner: TokenMap
    linear_map: torch.Tensor | None = None

    @property
    def d(self) -> int:
        return self.Q_in.shape[0]

    @property
    def P_in(self) -> torch.Tensor:
        """``P^in``: projection onto the subspace the layer reads (eq. 6)."""
        return projection(self.Q_in)

    @property
    def P_out(self) -> torch.Tensor:
        """``P^out``: projection onto the subspace the layer writes (eq. 6)."""
        return projection(self.Q_out)

    def update(self, X: torch.Tensor) -> torch.Tensor:
        """The non-linear part ``l(X)`` (section 2.2)."""
        return self.inner(X @ self.Q_in) @ self.Q_out.T

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return X + self.update(X)


def redundant_layer(d: int, name: str = "redundant") -> ResidualLayer:
    """``l = 0``, i.e. ``L(X) = X`` (eq. 5): a layer with ``Trans = 0`` (eq. 3).

    Its subspaces are 0-dimensional, so ``P^in = P^out = 0``.
    """
    empty = torch.zeros(d, 0, dtype=DTYPE)
    return ResidualLayer(name, empty, empty, lambda Z: Z, torch.zeros(d, d, dtype=DTYPE))


def _scaled_gaussian(rows: int, cols: int, std: float, g: torch.Generator) -> torch.Tensor:
    return torch.randn(rows, cols, generator=g, dtype=DTYPE) * std


def linear_layer(
    Q_in: torch.Tensor, Q_out: torch.Tensor, scale: float = 0.3, seed: Seed = 0,
    M: torch.Tensor | None = None, name: str = "linear",
) -> ResidualLayer:
    """``l(X) = X A`` with ``A = Q_in M Q_out^T = P_in (Q_in M Q_out^T) P_out`` (eqs. 6, 15).

    ``M`` (k_in x k_out) defaults to a Gaussian matrix normalised so that
    ``E ||M||_F^2 = scale^2 d``, i.e. ``Trans(A) = ||A||_F / sqrt(d) ~ scale`` (eq. 13).
    """
    k_in, k_out = Q_in.shape[1], Q_out.shape[1]
    if M is None:
        M = _scaled_gaussian(k_in, k_out, scale * math.sqrt(Q_in.shape[0] / max(k_in * k_out, 1)),
                             make_generator(seed))
    M = M.to(DTYPE)
    return ResidualLayer(name, Q_in, Q_out, lambda Z: Z @ M, Q_in @ M @ Q_out.T)


def mlp_layer(
    Q_in: torch.Tensor, Q_out: torch.Tensor, scale: float = 0.3, gain: float = 1.0,
    hidden: int = 64, seed: Seed = 0, name: str = "mlp",
) -> ResidualLayer:
    """A random tanh MLP sandwiched between the projections (eq. 6):

        l(X) = (tanh(gain * (X Q_in) W_1) / gain) W_2 Q_out^T

    ``W_1`` (k_in x hidden) has entries ``N(0, 1/k_in)``; ``W_2`` is scaled so that the
    small-``gain`` (linear) limit has ``Trans ~ scale``.  Larger ``gain`` saturates the tanh:
    the layer becomes more non-linear and its update shrinks relative to ``scale``.
    """
    g = make_generator(seed)
    k_in, k_out, d = Q_in.shape[1], Q_out.shape[1], Q_in.shape[0]
    W1 = _scaled_gaussian(k_in, hidden, 1.0 / math.sqrt(max(k_in, 1)), g)
    W2 = _scaled_gaussian(hidden, k_out, scale * math.sqrt(d / max(k_out * hidden, 1)), g)
    return ResidualLayer(name, Q_in, Q_out, lambda Z: (torch.tanh(gain * (Z @ W1)) / gain) @ W2)


def even_layer(
    Q_in: torch.Tensor, Q_out: torch.Tensor, scale: float = 0.3, seed: Seed = 0, name: str = "even",
) -> ResidualLayer:
    """``l(X) = ((X Q_in)^2 - 1) W Q_out^T / sqrt(2)`` (square taken entrywise).

    An even function of the token: for symmetric tokens (e.g. :func:`sample_tokens`)
    ``E[X^T l(X)] = 0``, so the least-squares fit of eq. 12 is ``A = 0`` up to sampling noise and
    ``Trans ~ 0`` although the layer changes every token.  It violates section 2.1's requirement
    that ``Trans(i) = 0`` only for a layer that does nothing, and hence the bound of eq. 24.
    """
    k_in, k_out, d = Q_in.shape[1], Q_out.shape[1], Q_in.shape[0]
    W = _scaled_gaussian(k_in, k_out, scale * math.sqrt(d / max(k_in * k_out, 1)), make_generator(seed))
    return ResidualLayer(name, Q_in, Q_out, lambda Z: ((Z * Z - 1.0) / math.sqrt(2.0)) @ W)


# --------------------------------------------------------------------------------------------
# pairs of layers


@dataclass(frozen=True, eq=False)
class LayerPair:
    """Two adjacent layers ``i`` and ``i+1`` with the angles they were built with."""

    layer_i: ResidualLayer
    layer_j: ResidualLayer
    theta: float = 0.0  # tilt of U_{i+1} towards W_i   (feeds Dep(i, i+1))
    phi: float = 0.0  # tilt of W_{i+1} towards U_i     (feeds Dep(i+1, i))
    label: str = ""
    kind: str = ""

    @property
    def overlap_ij(self) -> float:
        """``||P_i^out P_{i+1}^in||_2``: zero is the first half of eq. 7."""
        return float(torch.linalg.matrix_norm(self.layer_i.P_out @ self.layer_j.P_in, 2))

    @property
    def overlap_ji(self) -> float:
        """``||P_{i+1}^out P_i^in||_2``: zero is the second half of eq. 7."""
        return float(torch.linalg.matrix_norm(self.layer_j.P_out @ self.layer_i.P_in, 2))


def tilted_subspaces(d: int, k: int, theta: float, phi: float, seed: Seed = 0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bases ``(Q_in_i, Q_out_i, Q_in_j, Q_out_j)`` of four k-dimensional subspaces of ``R^d``.

    With ``[Q_a, Q_b]`` two orthogonal blocks of a random orthogonal matrix: layer ``i`` reads
    and writes ``span(Q_a)``; layer ``j = i+1`` reads ``span(cos(theta) Q_b + sin(theta) Q_a)``
    and writes ``span(cos(phi) Q_b + sin(phi) Q_a)``.  Hence
    ``||P_i^out P_j^in||_2 = |sin(theta)|`` and ``||P_j^out P_i^in||_2 = |sin(phi)|``;
    ``theta = phi = 0`` is eq. 7.  Needs ``2k <= d``.
    """
    if 2 * k > d:
        raise ValueError(f"two orthogonal {k}-dimensional subspaces need d >= {2 * k}, got d = {d}")
    Q = random_basis(d, seed)
    Qa, Qb = Q[:, :k], Q[:, k:2 * k]
    Q_in_j = math.cos(theta) * Qb + math.sin(theta) * Qa
    Q_out_j = math.cos(phi) * Qb + math.sin(phi) * Qa
    return Qa, Qa, Q_in_j, Q_out_j


_BUILDERS: dict[str, Callable[..., ResidualLayer]] = {"linear": linear_layer, "mlp": mlp_layer}


def subspace_pair(
    d: int, k: int, theta: float = 0.0, phi: float = 0.0, kind: str = "mlp",
    scale_i: float = 0.3, scale_j: float = 0.3, gain: float = 1.0, seed: Seed = 0, label: str = "",
) -> LayerPair:
    """Two non-redundant layers (``kind`` "mlp" or "linear") on :func:`tilted_subspaces`.

    ``theta = phi = 0``: eq. 7 holds, so ``delta = 0`` exactly (eqs. 8-11).  Any positive angle
    makes the layers interact: ``delta > 0`` and ``r > 0`` (the counter-cases).
    """
    g = make_generator(seed)
    Qi_in, Qi_out, Qj_in, Qj_out = tilted_subspaces(d, k, theta, phi, g)
    build = _BUILDERS[kind]
    extra = {"gain": gain} if kind == "mlp" else {}
    li = build(Qi_in, Qi_out, scale=scale_i, seed=g, name=f"{kind} i", **extra)
    lj = build(Qj_in, Qj_out, scale=scale_j, seed=g, name=f"{kind} i+1", **extra)
    return LayerPair(li, lj, theta, phi, label, kind)


def orthogonal_pair(d: int, k: int, kind: str = "mlp", **kwargs) -> LayerPair:
    """The independent case of section 3: eq. 7 holds, ``delta = 0`` (eqs. 8-11)."""
    return subspace_pair(d, k, 0.0, 0.0, kind, label=kwargs.pop("label", "orthogonal"), **kwargs)


def overlapping_pair(d: int, k: int, kind: str = "mlp", angle: float = math.pi / 2, **kwargs) -> LayerPair:
    """A counter-case: both layers non-redundant and reading each other's output subspace
    (``theta = phi = angle``; ``pi/2`` = the same subspace), so ``delta > 0`` and ``r > 0``."""
    return subspace_pair(d, k, angle, angle, kind, label=kwargs.pop("label", "overlapping"), **kwargs)


def commuting_pair(d: int, k: int, scale: float = 0.3, seed: Seed = 0) -> LayerPair:
    """Two linear layers ``A_i = Q diag(a) Q^T`` and ``A_{i+1} = Q diag(b) Q^T`` on the *same*
    subspace: they commute, so ``delta = 0`` although ``Trans > 0`` and ``Dep > 0`` (``r > 0``).

    Section 3 shows ``r = 0  =>  delta = 0``; this pair shows the converse does not hold.
    """
    g = make_generator(seed)
    Q = random_basis(d, g)[:, :k]
    s = scale * math.sqrt(d / k)
    a, b = (s * (0.5 + torch.rand(k, generator=g, dtype=DTYPE)) for _ in range(2))
    return LayerPair(linear_layer(Q, Q, M=torch.diag(a), name="diag i"),
                     linear_layer(Q, Q, M=torch.diag(b), name="diag i+1"),
                     math.pi / 2, math.pi / 2, "commuting", "linear")


def redundant_pair(d: int, k: int, scale: float = 0.3, seed: Seed = 0) -> LayerPair:
    """The redundant case of section 3: layer ``i`` is the identity (eq. 5, ``Trans(i) = 0``,
    eq. 3), layer ``i+1`` a tanh MLP on a random k-dimensional subspace; ``delta = 0``."""
    g = make_generator(seed)
    Q = random_basis(d, g)[:, :k]
    return LayerPair(redundant_layer(d), mlp_layer(Q, Q, scale=scale, seed=g, name="mlp i+1"),
                     0.0, 0.0, "redundant", "mlp")


def even_pair(d: int, k: int, scale: float = 0.3, seed: Seed = 0) -> LayerPair:
    """Where the assumptions break: layer ``i`` is an :func:`even_layer` (best linear fit ~ 0, so
    ``Trans(i) ~ 0`` and ``r ~ 0``), layer ``i+1`` a tanh MLP reading and writing its subspace;
    ``delta > 0``.  The fitted ``R^2`` of layer ``i`` is ~ 0, which is how a user would notice."""
    g = make_generator(seed)
    Q = random_basis(d, g)[:, :k]
    return LayerPair(even_layer(Q, Q, scale=scale, seed=g, name="even i"),
                     mlp_layer(Q, Q, scale=scale, seed=g, name="mlp i+1"),
                     math.pi / 2, math.pi / 2, "even (assumption broken)", "even+mlp")


def standard_cases(d: int, k: int, scale: float = 0.3, seed: Seed = 0) -> list[LayerPair]:
    """The cases of section 3 and their counter-cases, tanh MLP layers unless stated:
    redundant (eq. 3), orthogonal (eq. 7, MLP and linear), one-way overlap (only
    ``P_i^out P_{i+1}^in != 0``), full overlap, commuting linear maps and the even layer."""
    g = make_generator(seed)
    return [
        redundant_pair(d, k, scale, g),
        orthogonal_pair(d, k, "mlp", scale_i=scale, scale_j=scale, seed=g, label="orthogonal (MLP)"),
        orthogonal_pair(d, k, "linear", scale_i=scale, scale_j=scale, seed=g, label="orthogonal (linear)"),
        subspace_pair(d, k, math.pi / 2, 0.0, "mlp", scale, scale, seed=g, label="one-way overlap"),
        overlapping_pair(d, k, "mlp", scale_i=scale, scale_j=scale, seed=g, label="full overlap"),
        commuting_pair(d, k, scale, g),
        even_pair(d, k, scale, g),
    ]


# --------------------------------------------------------------------------------------------
# measurements


def _rows_and_norms(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.as_tensor(X).to(DTYPE).reshape(-1, X.shape[-1])
    return X, torch.linalg.vector_norm(X, dim=-1)


def delta(layer_i: TokenMap, layer_j: TokenMap, X: torch.Tensor) -> float:
    """Swap effect (eq. 2): ``E_t ||L_{i+1}(L_i(X))_t - L_i(L_{i+1}(X))_t|| / ||X_t||``.

    ``layer_i``, ``layer_j`` are the full residual maps ``L`` (callables on (n, d) tensors);
    ``X`` is (..., d) and every row is a token.  Rows with ``||X_t|| = 0`` are left out (eq. 2
    is undefined there).
    """
    X, xn = _rows_and_norms(X)
    diff = layer_j(layer_i(X)) - layer_i(layer_j(X))
    keep = xn > 0
    return float((torch.linalg.vector_norm(diff, dim=-1)[keep] / xn[keep]).mean())


def delta_linear(A_i: np.ndarray | torch.Tensor, A_j: np.ndarray | torch.Tensor, X: torch.Tensor) -> float:
    """Eq. 16: the swap effect of linear layers ``X -> X + X A``, ``E_t ||X_t [A_i, A_j]|| / ||X_t||``."""
    A_i, A_j = (torch.as_tensor(A).to(DTYPE) for A in (A_i, A_j))
    return delta(lambda Z: Z + Z @ A_i, lambda Z: Z + Z @ A_j, X)


def fit_layer(layer: TokenMap, X: torch.Tensor, ridge: float = 0.0) -> LayerFit:
    """Eq. 12 for one synthetic layer: least squares of ``Y = L(X) - X`` on ``Xhat``.

    ``Xhat`` is :func:`~paperlib.swap.linear_fit.window_mean` with ``window=1``, i.e.
    ``Xhat = X``.  The paper averages each token with the 3 before it to give the linear map a
    crude view of the context that attention uses; the synthetic layers are token-wise (no
    mixing across positions, and the rows of ``X`` are an unordered sample), so any window > 1
    would only blur the regressor and bias ``A`` away from the layer's own map.
    """
    X, _ = _rows_and_norms(X)
    xhat = window_mean(X.unsqueeze(0), torch.ones(1, X.shape[0], dtype=DTYPE), window=1)[0]
    ne = NormalEquations(X.shape[1])
    ne.update(xhat, layer(X) - X)
    return ne.solve(ridge)


@dataclass
class PairIndicators:
    """Trans (eq. 13), Dep (eq. 14) and r (eq. 1) of a pair from its fitted maps (eq. 12)."""

    trans_i: float
    trans_j: float
    dep_ij: float  # Dep(i, i+1) = ||A_i A_{i+1}|| / (||A_i|| ||A_{i+1}||)
    dep_ji: float  # Dep(i+1, i)
    r: float
    fit_i: LayerFit
    fit_j: LayerFit

    def as_dict(self) -> dict[str, float]:
        return {"Trans(i)": self.trans_i, "Trans(i+1)": self.trans_j, "Dep(i,i+1)": self.dep_ij,
                "Dep(i+1,i)": self.dep_ji, "r": self.r, "R2(i)": self.fit_i.r2, "R2(i+1)": self.fit_j.r2}


def pair_indicators(layer_i: TokenMap, layer_j: TokenMap, X: torch.Tensor, ridge: float = 0.0) -> PairIndicators:
    """Fit ``A_i``, ``A_{i+1}`` on tokens ``X`` (:func:`fit_layer`) and return Trans, Dep and r."""
    fi, fj = fit_layer(layer_i, X, ridge), fit_layer(layer_j, X, ridge)
    ti, tj = trans(fi.A), trans(fj.A)
    dij, dji = dep(fi.A, fj.A), dep(fj.A, fi.A)
    return PairIndicators(ti, tj, dij, dji, swap_score(ti, tj, dij, dji), fi, fj)


def eq23_rhs(layer_i: ResidualLayer, layer_j: ResidualLayer, X: torch.Tensor) -> float:
    """Right-hand side of eq. 23 without ``c``, from the layers themselves (no fit):

        E_t [ ||l_i(X)_t|| ||l_{i+1}(X)_t|| / ||X_t||^2 ] (||P_{i+1}^out P_i^in||_2 + ||P_i^out P_{i+1}^in||_2)

    (the two expectations of eq. 23 are the same, so they are merged).
    """
    X, xn = _rows_and_norms(X)
    keep = xn > 0
    ui = torch.linalg.vector_norm(layer_i.update(X), dim=-1)[keep] / xn[keep]
    uj = torch.linalg.vector_norm(layer_j.update(X), dim=-1)[keep] / xn[keep]
    over = (torch.linalg.matrix_norm(layer_j.P_out @ layer_i.P_in, 2)
            + torch.linalg.matrix_norm(layer_i.P_out @ layer_j.P_in, 2))
    return float((ui * uj).mean() * over)


def eq21_ratios(layer_i: ResidualLayer, layer_j: ResidualLayer, X: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token sides of eq. 21 for the effect of layer ``j = i+1`` on layer ``i``:

        x_t = ||l_{i+1}(X)_t P_{i+1}^out P_i^in|| / ||X_t||,
        y_t = ||l_i(X)_t - l_i(X + l_{i+1}(X))_t|| / ||l_i(X)_t||

    (``l_i(X + E) = l'_i((X + E) P_i^in)`` by eq. 6, so only ``E P_i^in`` matters, as in eq. 20).
    Eq. 21 with ``f(x) <= c x`` asks ``y_t <= c x_t`` for every token; ``y_t / x_t`` is large
    where ``||l_i(X)_t||`` is small, so in practice ``c`` is only bounded on average.  Tokens
    with ``x_t = 0`` or ``l_i(X)_t = 0`` are returned as they are (the caller filters).
    """
    X, xn = _rows_and_norms(X)
    e = layer_j.update(X)
    li = layer_i.update(X)
    x = torch.linalg.vector_norm(e @ layer_j.P_out @ layer_i.P_in, dim=-1) / xn
    y = torch.linalg.vector_norm(li - layer_i.update(X + e), dim=-1) / torch.linalg.vector_norm(li, dim=-1)
    return x, y


def analyse_pair(pair: LayerPair, X: torch.Tensor) -> dict[str, float | str]:
    """One table row: ``delta`` (eq. 2), the fitted indicators (eqs. 1, 13, 14), the overlaps
    of eq. 7 and the right side of eq. 23."""
    ind = pair_indicators(pair.layer_i, pair.layer_j, X)
    return {"case": pair.label, "kind": pair.kind, "delta": delta(pair.layer_i, pair.layer_j, X),
            **ind.as_dict(),
            "||P_i^out P_i+1^in||": pair.overlap_ij, "||P_i+1^out P_i^in||": pair.overlap_ji,
            "rhs23": eq23_rhs(pair.layer_i, pair.layer_j, X)}


# --------------------------------------------------------------------------------------------
# appendix A.1: delta <= c r over a random family


def random_family(
    d: int, k: int, n_pairs: int, seed: Seed = 0, kind: str = "mlp",
    scale_range: tuple[float, float] = (0.05, 0.8), gains: Sequence[float] = (0.5, 1.0, 2.0),
    p_orthogonal: float = 0.1,
) -> list[LayerPair]:
    """``n_pairs`` random :func:`subspace_pair` s: scales log-uniform in ``scale_range``, angles
    ``theta, phi`` uniform in ``[0, pi/2]`` (each set to 0, i.e. that half of eq. 7 exact, with
    probability ``p_orthogonal``) and a tanh gain drawn from ``gains`` (ignored for "linear")."""
    g = make_generator(seed)
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    pairs = []
    for n in range(n_pairs):
        u = torch.rand(6, generator=g, dtype=DTYPE).tolist()
        theta = 0.0 if u[0] < p_orthogonal else u[1] * math.pi / 2
        phi = 0.0 if u[2] < p_orthogonal else u[3] * math.pi / 2
        s_i, s_j = (math.exp(lo + (hi - lo) * v) for v in u[4:6])
        gain = float(gains[int(torch.randint(len(gains), (1,), generator=g))])
        pairs.append(subspace_pair(d, k, theta, phi, kind, s_i, s_j, gain, g, label=f"pair {n}"))
    return pairs


@dataclass
class BoundCheck:
    """Outcome of :func:`check_bound`."""

    table: pd.DataFrame  # one row per pair (see analyse_pair) plus delta/r and delta/rhs23
    c: float  # smallest c with delta <= c r over the family (eq. 24)
    c23: float  # smallest c with delta <= c * rhs23 (eq. 23, the step before eq. 24)
    ratio_min: float  # smallest delta / r among pairs with r > 0
    correlation: Correlation  # Spearman of r vs delta across the family

    def summary(self) -> pd.Series:
        return pd.Series({"pairs": len(self.table), "c = max delta/r (eq. 24)": self.c,
                          "min delta/r": self.ratio_min, "c23 = max delta/rhs23 (eq. 23)": self.c23,
                          "Spearman rho(r, delta)": self.correlation.rho,
                          "95% CI low": self.correlation.ci_low, "95% CI high": self.correlation.ci_high,
                          "p-value": self.correlation.pvalue})


def _max_ratio(num: pd.Series, den: pd.Series) -> float:
    pos = den > 0
    if (num[~pos] > 1e-12).any():
        return math.inf  # delta > 0 with r = 0: no finite c
    return float((num[pos] / den[pos]).max()) if pos.any() else 0.0


def check_bound(pairs: Sequence[LayerPair], X: torch.Tensor, n_resamples: int = 2000, seed: int = 0) -> BoundCheck:
    """Appendix A.1 numerically: ``delta`` (eq. 2) and ``r`` (eq. 1, from fitted maps) for each
    pair, the smallest ``c`` with ``delta <= c r`` on all of them (eq. 24; ``inf`` if some pair
    has ``delta > 0 = r``), the same against eq. 23's right side, and Spearman's rho of ``r``
    and ``delta`` (:func:`paperlib.swap.stats.spearman`, bootstrap CI).  A bounded ratio
    ``delta / r`` across pairs of very different scale and overlap, together with a high rho,
    is what "r controls delta" means in practice; ``c`` is specific to the family (d, k, kind).
    """
    table = pd.DataFrame([analyse_pair(p, X) | {"theta": p.theta, "phi": p.phi} for p in pairs])
    table["delta/r"] = np.where(table["r"] > 0, table["delta"] / table["r"].where(table["r"] > 0), np.nan)
    table["delta/rhs23"] = table["delta"] / table["rhs23"].where(table["rhs23"] > 0)
    corr = spearman(table["r"].to_numpy(), table["delta"].to_numpy(), n_resamples=n_resamples, seed=seed)
    return BoundCheck(table, _max_ratio(table["delta"], table["r"]), _max_ratio(table["delta"], table["rhs23"]),
                      float(table["delta/r"].min()), corr)
