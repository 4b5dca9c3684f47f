"""Rewirings of a residual stack: swap, delete, parallel, repeat (chapter 05).

A model is ``X_{k+1} = L_k(X_k)``, ``k = 0 .. n-1`` (paper A, eq. 2; 0-based here, 1-based in
every table and in the constructors below).  A rewiring replaces the original blocks
``start .. end-1`` by a short program of *steps* that runs on ``X_start`` and hands its result to
the unchanged blocks ``end .. n-1``:

- ``swap(i, j)``, ``i < j``: ``L_j, L_{i+1}, ..., L_{j-1}, L_i`` (adjacent: ``L_{i+1}, L_i``);
- ``delete(i)`` / ``delete(i, j)``: no step for the span ``i .. j`` (ShortGPT, Gromov et al.);
- ``parallel(i, j)``: one step in which ``L_i .. L_j`` all read the same ``X`` and their updates
  are added, ``X + sum_k (L_k(X) - X)``; ``mean=True`` is Sun et al.'s variant that averages the
  outputs, ``mean_k L_k(X)`` ("Transformer layers as painters");
- ``repeat(i)``: ``L_i, L_i``.

A step is a block index (run it) or a :class:`Parallel` group.  :func:`run_steps` applies the
steps with the real blocks through :class:`paperlib.swap.blocks.BlockCall` (no copy of the
model, no recomputation of the prefix), and :mod:`paperlib.rewire.predictors` applies the same
steps to the linear maps ``L'_k(X) = X + X A_k`` (eq. 15).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from paperlib.swap.blocks import BlockCall

#: operation families that ``expand`` knows, with what each one generates
KINDS: dict[str, str] = {
    "swap": "swap(i, i+1) for every adjacent pair (paper A's swap)",
    "swap_all": "swap(i, j) for every pair i < j",
    "delete": "delete(i) for every layer",
    "delete_span": "delete(i, j) for every contiguous span of 2 .. max_span layers",
    "parallel": "parallel(i, i+1), updates added, for every adjacent pair",
    "parallel_mean": "parallel(i, i+1), outputs averaged (Sun et al.), for every adjacent pair",
    "repeat": "repeat(i) for every layer",
}

#: operation names as they appear in the ``op`` column
OPS = ("swap", "delete", "parallel", "parallel_mean", "repeat")


class RewiringError(ValueError):
    """An operation that does not fit the model (layer out of range, i = j, unknown kind)."""


@dataclass(frozen=True)
class Parallel:
    """Blocks (0-based) that read the same input; their updates are added, or their outputs
    averaged when ``mean``."""

    layers: tuple[int, ...]
    mean: bool = False


Step = int | Parallel


@dataclass(frozen=True)
class Rewiring:
    """One operation: ``op`` with its layers ``i`` (and ``j``) numbered from 1, and what it does
    to the 0-based blocks: ``steps`` replace blocks ``start .. end-1``."""

    op: str
    i: int
    j: int | None
    start: int
    end: int
    steps: tuple[Step, ...]

    @property
    def label(self) -> str:
        return f"{self.op}({self.i})" if self.j is None else f"{self.op}({self.i}, {self.j})"

    @property
    def original(self) -> tuple[int, ...]:
        """The blocks the steps replace, in the model's order."""
        return tuple(range(self.start, self.end))


def _check_layer(name: str, value: int, n_layers: int) -> None:
    if not isinstance(value, (int,)) or isinstance(value, bool) or not 1 <= value <= n_layers:
        raise RewiringError(f"{name}: layer {value!r} is out of range; layers are numbered 1 .. {n_layers}")


def _check_pair(name: str, i: int, j: int, n_layers: int) -> None:
    _check_layer(name, i, n_layers)
    _check_layer(name, j, n_layers)
    if i >= j:
        raise RewiringError(f"{name}(i, j) needs i < j (layers numbered 1 .. {n_layers}); got i={i}, j={j}")


def swap(i: int, j: int, n_layers: int) -> Rewiring:
    """Exchange layers ``i < j`` (1-based); the layers between keep their places."""
    _check_pair("swap", i, j, n_layers)
    s, e = i - 1, j - 1
    return Rewiring("swap", i, j, s, e + 1, (e, *range(s + 1, e), s))


def delete(i: int, n_layers: int, j: int | None = None) -> Rewiring:
    """Remove layer ``i``, or the contiguous span ``i .. j`` (1-based, inclusive)."""
    if j is None:
        _check_layer("delete", i, n_layers)
        return Rewiring("delete", i, None, i - 1, i, ())
    _check_pair("delete", i, j, n_layers)
    return Rewiring("delete", i, j, i - 1, j, ())


def parallel(i: int, n_layers: int, j: int | None = None, mean: bool = False) -> Rewiring:
    """Run layers ``i .. j`` (1-based; default ``j = i + 1``) on the same input; add their updates
    (``mean=False``) or average their outputs (``mean=True``, Sun et al.)."""
    j = i + 1 if j is None else j
    name = "parallel_mean" if mean else "parallel"
    _check_pair(name, i, j, n_layers)
    return Rewiring(name, i, j, i - 1, j, (Parallel(tuple(range(i - 1, j)), mean),))


def repeat(i: int, n_layers: int) -> Rewiring:
    """Run layer ``i`` (1-based) twice in a row."""
    _check_layer("repeat", i, n_layers)
    return Rewiring("repeat", i, None, i - 1, i, (i - 1, i - 1))


def expand(kinds: Iterable[str], n_layers: int, max_span: int = 3) -> list[Rewiring]:
    """Every operation of the families ``kinds`` (see :data:`KINDS`), each once, sorted by the
    first block they change (so a batch's cached prefix serves them in order)."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise RewiringError(f"unknown operation {', '.join(map(repr, unknown))}; choose from {', '.join(KINDS)}")
    if not kinds:
        raise RewiringError(f"no operations asked for; choose from {', '.join(KINDS)}")
    if n_layers < 2:
        raise RewiringError(f"rewiring needs at least 2 layers, the model has {n_layers}")
    if max_span < 2:
        raise RewiringError(f"max_span must be at least 2 (a span of one layer is delete(i)), got {max_span}")
    n = n_layers
    ops: dict[tuple, Rewiring] = {}
    for kind in kinds:
        if kind == "swap":
            new = [swap(i, i + 1, n) for i in range(1, n)]
        elif kind == "swap_all":
            new = [swap(i, j, n) for i in range(1, n) for j in range(i + 1, n + 1)]
        elif kind == "delete":
            new = [delete(i, n) for i in range(1, n + 1)]
        elif kind == "delete_span":
            new = [delete(i, n, i + k - 1) for k in range(2, max_span + 1) for i in range(1, n - k + 2)]
        elif kind in ("parallel", "parallel_mean"):
            new = [parallel(i, n, mean=kind == "parallel_mean") for i in range(1, n)]
        else:  # repeat
            new = [repeat(i, n) for i in range(1, n + 1)]
        for op in new:
            ops.setdefault((op.op, op.i, op.j), op)
    return sorted(ops.values(), key=lambda o: (o.start, o.end, OPS.index(o.op)))


def family_mask(kind: str, op, i, j):
    """Which rows of a table (columns ``op, i, j``, pandas Series) belong to family ``kind``."""
    has_j = j.notna()
    if kind == "swap":
        return (op == "swap") & (j == i + 1)
    if kind == "swap_all":
        return op == "swap"
    if kind == "delete":
        return (op == "delete") & ~has_j
    if kind == "delete_span":
        return (op == "delete") & has_j
    if kind in ("parallel", "parallel_mean", "repeat"):
        return op == kind
    raise RewiringError(f"unknown operation {kind!r}; choose from {', '.join(KINDS)}")


def run_steps(steps: Sequence[Step], x: torch.Tensor, call: BlockCall, blocks: nn.ModuleList) -> torch.Tensor:
    """Apply ``steps`` to ``x`` with the real blocks (the batch's captured arguments in ``call``)."""
    for step in steps:
        if isinstance(step, Parallel):
            outs = [call(blocks[k], x) for k in step.layers]
            if step.mean:
                x = torch.stack(outs).mean(0)
            else:
                x = x + sum(o - x for o in outs)
        else:
            x = call(blocks[step], x)
    return x


def run_suffix(x: torch.Tensor, start: int, call: BlockCall, blocks: nn.ModuleList) -> torch.Tensor:
    """The unchanged blocks ``start .. n-1`` on ``x``."""
    for k in range(start, len(blocks)):
        x = call(blocks[k], x)
    return x
