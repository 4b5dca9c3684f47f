"""Eq. 12 read literally: the *unsquared* norm, fitted by iteratively reweighted least squares.

Paper A writes the fit of each layer as

``A_i = argmin_A  E_t || X_{i,t} + Xhat_{i,t} A - X_{i+1,t} ||_2``                 (eq. 12)

with the plain (unsquared) Euclidean norm.  The book's fits (:mod:`paperlib.swap.linear_fit`)
use the usual least-squares reading, the *squared* norm.  This module measures what the literal
objective changes.  With ``Y = X_{i+1} - X_i`` the objective ``sum_t ||y_t - xhat_t A||_2`` is
convex (a sum of norms of affine maps); it is minimised by IRLS (a Weiszfeld-type
majorise-minimise step):

``w_t = 1 / max(||y_t - xhat_t A_k||_2, eps)``,
``A_{k+1} = (Xhat^T W Xhat)^{-1} Xhat^T W Y``,

started at the least-squares map (``w = 1``).  Each step minimises a quadratic that touches the
objective at ``A_k`` and lies above it, so the objective never increases.  ``eps`` (relative to
the median residual) keeps tokens that the map fits exactly from dominating.

The fit needs every token's state at every layer for every iteration, so the states are kept in
memory (``n_layers + 1`` float32 arrays of ``tokens x d``; 8192 tokens of SmolLM2: 0.6 GB) and
the model runs once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from paperlib.data.tokens import TokenBatch
from paperlib.swap.blocks import ResidualStack


@dataclass
class UnsquaredFit:
    """One layer's fit of the literal eq. 12 and its least-squares starting point."""

    A: np.ndarray  # (d, d), row convention: Y ~ Xhat @ A
    A_ls: np.ndarray  # the least-squares map on the same tokens (iteration 0)
    objective: list[float]  # mean_t ||y_t - xhat_t A_k||_2 for k = 0 (least squares), 1, ...
    converged: bool


def fit_unsquared(xhat: torch.Tensor, y: torch.Tensor, iters: int = 30, rel_tol: float = 1e-6,
                  eps: float = 1e-6) -> UnsquaredFit:
    """``argmin_A mean_t ||y_t - xhat_t A||_2`` by IRLS from the least-squares solution.

    ``xhat``, ``y``: (n, d) real tokens.  Stops when the objective improves by less than
    ``rel_tol`` (relative) or after ``iters`` reweighted solves.  Sums are float64.
    """
    if xhat.ndim != 2 or xhat.shape != y.shape:
        raise ValueError(f"xhat and y must be (tokens, d) of one shape, got {tuple(xhat.shape)} and {tuple(y.shape)}")
    n, d = xhat.shape
    if n < d:
        raise ValueError(f"fitting a {d}x{d} map needs at least {d} tokens, got {n}")
    x = xhat.to(torch.float64)
    yy = y.to(torch.float64)

    def solve(w: torch.Tensor) -> torch.Tensor:
        xw = x * w[:, None]
        G, C = xw.T @ x, xw.T @ yy
        try:
            return torch.cholesky_solve(C, torch.linalg.cholesky(G))
        except torch.linalg.LinAlgError:
            return torch.linalg.lstsq(G, C).solution

    A = solve(torch.ones(n, dtype=torch.float64, device=x.device))
    A_ls = A
    res = (yy - x @ A).norm(dim=1)
    objective = [float(res.mean())]
    floor = eps * float(res.median().clamp_min(1e-300))
    converged = False
    for _ in range(iters):
        A_new = solve(1.0 / res.clamp_min(floor))
        res_new = (yy - x @ A_new).norm(dim=1)
        value = float(res_new.mean())
        if value > objective[-1]:  # rounding at the optimum: keep the better map
            converged = True
            break
        A, res = A_new, res_new
        objective.append(value)
        if objective[-2] - value <= rel_tol * objective[-2]:
            converged = True
            break
    return UnsquaredFit(A=A.cpu().numpy(), A_ls=A_ls.cpu().numpy(), objective=objective, converged=converged)


def flat_window_mean(h: torch.Tensor, position: torch.Tensor, window: int = 4) -> torch.Tensor:
    """``Xhat_t`` for real-token rows stored one sequence after another.

    ``h``: (n, d) rows in sequence order; ``position``: (n,) index of each row in its sequence.
    Row ``t`` averages rows ``t - k`` for ``k < window`` that lie in the same sequence
    (``k <= position[t]``), as :func:`paperlib.swap.linear_fit.window_mean` does on padded batches.
    """
    out = h.clone()
    count = torch.ones(h.shape[0], dtype=h.dtype, device=h.device)
    for k in range(1, window):
        ok = (position[k:] >= k).to(h.dtype)
        out[k:] += h[:-k] * ok[:, None]
        count[k:] += ok
    return out / count[:, None]


@torch.no_grad()
def collect_states(stack: ResidualStack, batches: list[TokenBatch], progress: bool = True
                   ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The residual stream ``X_0 .. X_n`` at every real token (float32 rows, sequence order) and
    each row's position in its sequence."""
    device = next(stack.model.parameters()).device
    states: list[list[torch.Tensor]] | None = None
    positions = []
    for batch in tqdm(batches, desc="states for the literal eq. 12", disable=not progress):
        mask = batch.attention_mask.to(device).bool()
        tr = stack.trace(batch.input_ids.to(device), mask.long())
        if states is None:
            states = [[] for _ in tr.hidden]
        for s, h in zip(states, tr.hidden):
            s.append(h.float()[mask].cpu())
        positions.append((mask.long().cumsum(1) - 1)[mask].cpu())
    if states is None:
        raise ValueError("no batches to collect")
    return [torch.cat(s) for s in states], torch.cat(positions)


def fit_layers_unsquared(states: list[torch.Tensor], position: torch.Tensor, window: int = 4,
                         iters: int = 30, progress: bool = True) -> list[UnsquaredFit]:
    """:func:`fit_unsquared` for every layer ``X_i -> X_{i+1}`` of ``states``."""
    fits = []
    for i in tqdm(range(len(states) - 1), desc="literal eq. 12 (IRLS)", disable=not progress):
        xhat = flat_window_mean(states[i], position, window)
        fits.append(fit_unsquared(xhat, states[i + 1] - states[i], iters=iters))
    return fits


def save_fits(path: Path, fits: list[UnsquaredFit]) -> None:
    """Both maps of every layer and the objective paths, written atomically (npz + os.replace)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, A=np.stack([f.A for f in fits]), A_ls=np.stack([f.A_ls for f in fits]),
             objective=json.dumps([f.objective for f in fits]),
             converged=np.array([f.converged for f in fits]))
    tmp.replace(path)


def load_fits(path: Path) -> list[UnsquaredFit]:
    z = np.load(path)
    paths = json.loads(str(z["objective"]))
    return [UnsquaredFit(A=z["A"][k], A_ls=z["A_ls"][k], objective=paths[k], converged=bool(z["converged"][k]))
            for k in range(len(paths))]


def run_literal_fit(config, n_tokens: int, iters: int = 30, cache_dir: str | Path | None = "default",
                    progress: bool = True, model=None, tokenizer=None) -> list[UnsquaredFit]:
    """Fit every layer of ``config``'s model by the literal eq. 12 on the first ``n_tokens`` metric
    tokens (the same tokens that open pass 1); read back from the analysis cache when present."""
    from paperlib.data.models import load_model
    from paperlib.data.text import load_text
    from paperlib.data.tokens import batches, sequences
    from paperlib.swap.pipeline import default_cache_dir

    if cache_dir == "default":
        cache_dir = default_cache_dir()
    path = None
    if cache_dir is not None:
        folder = Path(cache_dir) / config.key()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"literal_eq12_{n_tokens}_{iters}.npz"
        if path.exists():
            return load_fits(path)
    if model is None:
        model, tokenizer = load_model(config.model, config.device, config.dtype)
    text = load_text(config.text)
    seqs = sequences(tokenizer, text.metric, n_tokens, config.seq_len)
    states, position = collect_states(ResidualStack(model), batches(seqs, config.batch_size, tokenizer.pad_token_id),
                                      progress)
    fits = fit_layers_unsquared(states, position, config.window, iters, progress)
    if path is not None:
        save_fits(path, fits)
        (path.with_suffix(".json")).write_text(json.dumps({"config": asdict(config), "n_tokens": n_tokens,
                                                           "iters": iters}, indent=1))
    return fits
