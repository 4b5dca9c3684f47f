"""k-means on the features' own device (torch): the cluster analysis of Table 2 on a GPU.

The same algorithm as scikit-learn's ``KMeans(n_clusters=k, n_init=10, random_state=0)``
(Lloyd's algorithm), written for a device and for all restarts at once:

- the data are centred (``x - mean(x)``) and kept in float64 unless ``dtype`` says otherwise
  (squared distances are formed as ``|x|^2 - 2 x.c + |c|^2``; float64 keeps their
  cancellation error far below the gaps between clusters, as scikit-learn's float64 path);
- *greedy k-means++* initialisation (Arthur & Vassilvitskii 2007, scikit-learn's variant): the
  first centre is a uniform draw; each further centre is the best, by the potential
  ``sum_i min_j |x_i - c_j|^2``, of ``2 + floor(ln k)`` candidates drawn with probability
  proportional to ``D(x)^2``, the squared distance to the nearest centre chosen so far;
- Lloyd iterations ``c_j <- mean{x_i : argmin_l |x_i - c_l|^2 = j}`` until the labels no longer
  change or the total squared centre shift is at most ``tol * mean_d var(x_d)`` (scikit-learn's
  tolerance), at most ``max_iter`` times; an empty cluster takes the point farthest from its
  centre (scikit-learn's relocation);
- ``n_init`` restarts run together (one ``[N, n_init * k]`` product per iteration); the one with
  the least inertia ``sum_i |x_i - c_{label(i)}|^2`` is returned.

Random draws come from a ``torch.Generator`` seeded with ``seed`` on the features' device, so a
result is reproducible on one device and torch version; the draws differ from NumPy's, so labels
can differ from scikit-learn's where the objective has several near-equal optima.  The ARI
against scikit-learn is checked in ``tests/loraild/test_loraild_kmeans.py`` and measured at the
paper's feature sizes by ``bench/bench_loraild.py --kmeans``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class KMeansResult:
    """Labels ``[N]`` (int64, on the features' device), centres ``[k, D]`` (centred data's frame
    shifted back), inertia, and the Lloyd iterations the returned restart took."""

    labels: torch.Tensor
    centers: torch.Tensor
    inertia: float
    n_iter: int


def _sq_dist(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` squared distances between rows of ``x`` ``[N, D]`` and ``c`` ``[M, D]`` (clamped at 0)."""
    d = x_sq[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return d.clamp_min_(0.0)


def kmeans_plusplus(x: torch.Tensor, x_sq: torch.Tensor, k: int, n_init: int,
                    gen: torch.Generator) -> torch.Tensor:
    """``[n_init, k, D]`` greedy k-means++ centres, one set per restart (see the module docstring)."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (n_init,), generator=gen, device=x.device)
    centers = [x[first]]  # list over j of [n_init, D]
    closest = _sq_dist(x, x_sq, centers[0]).T  # [n_init, N]: D(x)^2 per restart
    rows = torch.arange(n_init, device=x.device)
    for _ in range(1, k):
        pot = closest.sum(1, keepdim=True)  # [n_init, 1]
        # sampling proportional to D^2; a restart whose points all sit on its centres draws uniformly
        w = torch.where(pot > 0, closest, torch.ones_like(closest))
        cand = torch.multinomial(w, trials, replacement=True, generator=gen)  # [n_init, trials]
        d_cand = _sq_dist(x, x_sq, x[cand.reshape(-1)]).T.reshape(n_init, trials, n)
        new_closest = torch.minimum(closest[:, None, :], d_cand)  # [n_init, trials, N]
        best = new_closest.sum(2).argmin(1)  # [n_init]
        centers.append(x[cand[rows, best]])
        closest = new_closest[rows, best]
    return torch.stack(centers, dim=1)


def _assign(x: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels ``[R, N]`` and squared distance to the own centre ``[R, N]`` for ``R`` centre sets ``[R, k, D]``."""
    r, k, d = centers.shape
    dist = _sq_dist(x, x_sq, centers.reshape(r * k, d)).reshape(x.shape[0], r, k)
    best, labels = dist.min(2)
    return labels.T.contiguous(), best.T.contiguous()


def _update(x: torch.Tensor, labels: torch.Tensor, own: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Means of the assigned points ``[R, k, D]``; an empty cluster takes the farthest point."""
    r, k, d = old.shape
    onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)  # [R, N, k]
    counts = onehot.sum(1)  # [R, k]
    sums = torch.einsum("rnk,nd->rkd", onehot, x)
    new = sums / counts.clamp_min(1.0)[..., None]
    empty = counts == 0
    if bool(empty.any()):  # rare: one host sync, then scikit-learn's relocation per restart
        for ri in torch.nonzero(empty.any(1)).flatten().tolist():
            far = torch.argsort(own[ri], descending=True)
            for slot, j in enumerate(torch.nonzero(empty[ri]).flatten().tolist()):
                new[ri, j] = x[far[slot]]
    return new


def kmeans(features: torch.Tensor, k: int, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
           seed: int = 0, dtype: torch.dtype | None = None) -> KMeansResult:
    """Best of ``n_init`` k-means++-seeded Lloyd runs on ``features`` ``[N, ...]`` (flattened to ``[N, D]``).

    Runs on ``features.device``; ``dtype`` defaults to float64 (float32 on devices without it).
    """
    if features.ndim < 2:
        raise ValueError(f"features need shape [N, D], got {tuple(features.shape)}")
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= n_clusters <= samples, got n_clusters={k} for {n} samples")
    if dtype is None:
        dtype = torch.float32 if features.device.type == "mps" else torch.float64
    x = features.reshape(n, -1).to(dtype)
    mean = x.mean(0)
    x = x - mean
    x_sq = (x * x).sum(1)
    threshold = float(x.var(0, unbiased=False).mean()) * tol
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    centers = kmeans_plusplus(x, x_sq, k, n_init, gen)
    labels, own = _assign(x, x_sq, centers)
    active = torch.ones(n_init, dtype=torch.bool, device=x.device)
    iters = torch.zeros(n_init, dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        new = _update(x, labels, own, centers)
        shift = ((new - centers) ** 2).sum((1, 2))
        centers = torch.where(active[:, None, None], new, centers)
        new_labels, new_own = _assign(x, x_sq, centers)
        iters += active.long()
        same = (new_labels == labels).all(1)
        labels = torch.where(active[:, None], new_labels, labels)
        own = torch.where(active[:, None], new_own, own)
        active = active & ~same & (shift > threshold)
        if not bool(active.any()):  # one host sync per iteration
            break
    inertia = own.sum(1)
    best = int(inertia.argmin())
    return KMeansResult(labels[best], centers[best] + mean, float(inertia[best]), int(iters[best]))


def kmeans_labels(features: torch.Tensor, k: int, n_init: int = 10, seed: int = 0) -> torch.Tensor:
    """Labels of :func:`kmeans` (the call :mod:`clusters` makes on a GPU)."""
    return kmeans(features, k, n_init=n_init, seed=seed).labels


__all__ = ["KMeansResult", "kmeans", "kmeans_plusplus", "kmeans_labels"]
