"""LoRA-A features ``h_x`` (eq. 3): the outputs ``A dropout(x)`` of the first LoRA factor.

Forward hooks on ``...attention.self.{query,key,value}.lora_A.default`` capture, for every layer
and module, the ``r``-dimensional vector per token.  In training the student's features are taken
after LoRA dropout (as in the authors' code); the teacher runs in eval mode (no dropout).

Shapes: :meth:`LoraFeatureRecorder.stacked` returns ``[batch, tokens, layers, 3, r]`` (modules
in the order query, key, value).  :func:`align_teacher` maps teacher layers onto student layers
(mean over each group of :mod:`paperlib.loraild.alignment`), and :func:`concat_tokens` flattens
``layers x 3 x r`` into the per-token vector that eq. 3 normalises (576 dims for 6 layers at r = 32);
:func:`token_normalised` divides each token's features by the L2 norm of that whole vector (the
vectors eq. 3 compares, and what the authors' analyser clusters), and :func:`lora_dropout_active`
switches the LoRA dropout of a model in eval mode back on (the state of the authors' analyser).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from paperlib.loraild.models import LORA_TARGETS, encoder_layers, lora_targets


def lora_a_modules(model: nn.Module, adapter: str = "default") -> list[dict[str, nn.Module]]:
    """Per layer, the ``lora_A`` linear maps of the query / key / value projections, keyed by role
    (``query``, ``key``, ``value``) whatever the architecture names them (MPNet: ``q``, ``k``, ``v``)."""
    names = lora_targets(model)
    role = dict(zip(names, LORA_TARGETS))
    out = []
    for i, layer in enumerate(encoder_layers(model)):
        found: dict[str, nn.Module] = {}
        for name, module in layer.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in role and hasattr(module, "lora_A") and adapter in module.lora_A:
                found[role[leaf]] = module.lora_A[adapter]
        if set(found) != set(LORA_TARGETS):
            raise ValueError(f"layer {i} has LoRA on {sorted(found)}, expected {names}")
        out.append({m: found[m] for m in LORA_TARGETS})
    return out


class LoraFeatureRecorder:
    """Records the LoRA-A outputs of every layer during a forward pass."""

    def __init__(self, model: nn.Module, adapter: str = "default"):
        self.modules = lora_a_modules(model, adapter)
        self.n_layers = len(self.modules)
        self._store: list[list[torch.Tensor | None]] = [[None] * len(LORA_TARGETS) for _ in self.modules]
        self._handles = []
        for li, mods in enumerate(self.modules):
            for mi, name in enumerate(LORA_TARGETS):
                self._handles.append(mods[name].register_forward_hook(self._hook(li, mi)))

    def _hook(self, layer: int, module: int):
        def hook(_mod, _inputs, output):
            self._store[layer][module] = output
        return hook

    def clear(self) -> None:
        for row in self._store:
            for j in range(len(row)):
                row[j] = None

    def get(self, layer: int, module: str) -> torch.Tensor:
        out = self._store[layer][LORA_TARGETS.index(module)]
        if out is None:
            raise RuntimeError("no features recorded; run a forward pass first")
        return out

    def stacked(self) -> torch.Tensor:
        """``[batch, tokens, layers, 3, r]`` of the last forward pass."""
        rows = []
        for li in range(self.n_layers):
            rows.append(torch.stack([self.get(li, m) for m in LORA_TARGETS], dim=2))
        return torch.stack(rows, dim=2)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "LoraFeatureRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def align_teacher(teacher_feats: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """``[B, T, n_t, 3, r] -> [B, T, n_s, 3, r]``: mean of the teacher layers in each group.

    Groups of consecutive layers (every alignment of :mod:`alignment`) are taken as slices, so no
    index tensor has to be copied to the device at every step (a host-device sync on a GPU).  Two
    regular patterns cost no per-group operation: single layers at a constant stride (*Fixed*, e.g.
    3, 7, ..., 23) are one strided view, and equal runs of consecutive layers (*Average*) one mean
    over a reshaped view; the result may then be a non-contiguous view of ``teacher_feats``.
    """
    n = len(groups)
    first, size = groups[0][0], len(groups[0])
    if all(len(g) == 1 for g in groups) and n > 1:
        step = groups[1][0] - first
        if step > 0 and all(g[0] == first + i * step for i, g in enumerate(groups)):
            return teacher_feats[:, :, first:first + (n - 1) * step + 1:step]
    if size > 1 and all(list(g) == list(range(first + i * size, first + (i + 1) * size)) for i, g in enumerate(groups)):
        block = teacher_feats[:, :, first:first + n * size]
        return block.unflatten(2, (n, size)).mean(dim=3)
    cols = []
    for g in groups:
        if len(g) == 1:
            cols.append(teacher_feats[:, :, g[0]])
        elif list(g) == list(range(g[0], g[0] + len(g))):
            cols.append(teacher_feats[:, :, g[0]:g[0] + len(g)].mean(dim=2))
        else:
            cols.append(teacher_feats[:, :, list(g)].mean(dim=2))
    return torch.stack(cols, dim=2)


def concat_tokens(feats: torch.Tensor) -> torch.Tensor:
    """``[B, T, L, 3, r] -> [B, T, L * 3 * r]``: the per-token vector of eq. 3."""
    return feats.flatten(start_dim=2)


def token_normalised(feats: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``[B, T, L, 3, r]`` divided per token by ``|h_x|_2``, the norm of its whole ``L * 3 * r`` vector (eq. 3).

    Each (layer, module) slice of the result is that slice of ``h_x / |h_x|_2``, as in the authors'
    analyser (which slices the normalised vector of their loss into per-module, per-layer rows).
    """
    norm = feats.flatten(start_dim=2).norm(dim=-1).clamp_min(eps)
    return feats / norm[:, :, None, None, None]


@contextlib.contextmanager
def lora_dropout_active(model: nn.Module) -> Iterator[int]:
    """Inside the block the LoRA dropout modules of ``model`` are in training mode (the rest as it was).

    The authors' analyser builds the student with ``get_peft_model`` (new dropout modules start in
    training mode) and never calls ``eval()``, so its LoRA-A features are taken after a random
    dropout while every other dropout of the pretrained model is off.  Yields the number of modules.
    """
    drops = [m for name, mod in model.named_modules() if name.rsplit(".", 1)[-1] == "lora_dropout"
             for m in (mod.values() if isinstance(mod, nn.ModuleDict) else [mod])]
    before = [d.training for d in drops]
    for d in drops:
        d.train()
    try:
        yield len(drops)
    finally:
        for d, was in zip(drops, before):
            d.train(was)


__all__ = ["LoraFeatureRecorder", "lora_a_modules", "align_teacher", "concat_tokens", "token_normalised",
           "lora_dropout_active"]
