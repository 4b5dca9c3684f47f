"""Where a swap analysis puts the model and its fit statistics on one or several GPUs.

Pass 1 keeps, for every layer, the float64 normal equations ``[G | C]`` of eq. 12: ``2 d^2``
numbers of 8 bytes (:meth:`NormalEquations.bytes_per_layer`; 1 GiB at d = 8192).  By default they
live on the layer's own device, so a device map must leave room for them beside the weights:
:func:`swap_max_memory` gives accelerate a ``max_memory`` per card that reserves it.

:func:`memory_plan` states what a model needs, e.g. a Llama-3-70B shape (80 layers, d = 8192,
bf16, base model without LM head): about 139 GB of weights and 86 GB of pass-1 statistics (pass 2
instead holds the float32 maps ``[A_i | K_i]``, 43 GB), 225 GB before activations -- four 80 GB
cards with everything on the cards, or two cards for the weights with statistics and maps in
pinned host memory (``stats_device="cpu"``: about 130 GB of host memory, and a host transfer of
each layer's statistics per batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paperlib.swap.linear_fit import NormalEquations

GiB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes a swap analysis of one model needs (weights in the model's dtype)."""

    n_layers: int
    d: int
    layer_weight_bytes: int  # one block's parameters
    other_weight_bytes: int  # embeddings, final norm, ...
    stats_bytes_per_layer: int  # float64 [G | C] of eq. 12

    @property
    def weights(self) -> int:
        return self.n_layers * self.layer_weight_bytes + self.other_weight_bytes

    @property
    def stats(self) -> int:
        return self.n_layers * self.stats_bytes_per_layer

    def summary(self) -> str:
        return (f"{self.n_layers} layers, d = {self.d}: weights {self.weights / 1e9:.1f} GB, fit statistics "
                f"{self.stats / 1e9:.1f} GB ({self.stats_bytes_per_layer / 1e9:.2f} GB per layer), "
                f"{(self.weights + self.stats) / 1e9:.1f} GB before activations")


def memory_plan(config, dtype: torch.dtype = torch.bfloat16) -> MemoryPlan:
    """The :class:`MemoryPlan` of a transformers ``config``, counted on a weightless (meta) copy."""
    from accelerate import init_empty_weights
    from transformers import AutoModel

    from paperlib.swap.blocks import find_blocks

    with init_empty_weights():
        model = AutoModel.from_config(config)
    blocks = find_blocks(model)
    size = torch.finfo(dtype).bits // 8
    per_layer = sum(p.numel() for p in blocks[0].parameters()) * size
    total = sum(p.numel() for p in model.parameters()) * size
    d = int(config.hidden_size)
    return MemoryPlan(len(blocks), d, per_layer, total - len(blocks) * per_layer, NormalEquations.bytes_per_layer(d))


def swap_max_memory(plan: MemoryPlan, headroom_bytes: int = 6 * GiB, stats_on_gpu: bool = True,
                    devices: list[int] | None = None) -> dict:
    """``max_memory`` for ``from_pretrained(device_map="auto", max_memory=...)`` or accelerate's
    ``infer_auto_device_map``: each card's free memory less ``headroom_bytes`` (activations, the
    solve's temporaries), times the weights' share ``w / (w + s)`` of a layer when its statistics
    ``s`` stay on the card, so the layers placed there leave room for their statistics."""
    devices = list(range(torch.cuda.device_count())) if devices is None else devices
    share = 1.0
    if stats_on_gpu:
        share = plan.layer_weight_bytes / (plan.layer_weight_bytes + plan.stats_bytes_per_layer)
    out: dict = {}
    for i in devices:
        free, _ = torch.cuda.mem_get_info(i)
        out[i] = max(0, int((free - headroom_bytes) * share))
    out["cpu"] = 0  # never offload weights to the host: the analysis calls blocks many times
    return out
