"""Find the residual blocks of a transformers model and call them one at a time.

Paper A writes each layer as ``L_i(X) = X + l_i(X)`` (eq. 2).  In transformers every such
layer is one module in a ``ModuleList``; this module finds that list for the supported
families and records, by a forward pre-hook on the first block, the exact extra arguments
(attention mask, rotary position embeddings, position bias, ...) the model passes to its
blocks.  Any block can then be called on any hidden state ``X`` with the same arguments,
which is all that the swap ``L_i(L_{i+1}(X))`` needs.

For post-LN encoders (BERT, RoBERTa, MPNet) the block computes ``LN(X + f(X))``; we still
define ``l_i(X) := L_i(X) - X`` so every quantity of the paper is well defined (the book
notes that the residual form is exact only for pre-LN decoders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: dotted attribute paths of the block list, tried in order; the family name is for messages.
BLOCK_PATHS: dict[str, tuple[str, ...]] = {
    "GPT-2 family (transformer.h)": ("transformer.h", "h"),
    "Llama-style decoders (model.layers)": ("model.layers", "layers"),
    "BERT / RoBERTa / MPNet encoders (encoder.layer)": (
        "bert.encoder.layer",
        "roberta.encoder.layer",
        "mpnet.encoder.layer",
        "encoder.layer",
    ),
}


class UnsupportedModelError(TypeError):
    """Raised when a model has no residual block list that paperlib knows how to call."""


def _get_path(module: nn.Module, path: str) -> Any:
    obj: Any = module
    for part in path.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """Return the model's list of residual blocks ``[L_1, ..., L_n]``.

    Raises :class:`UnsupportedModelError` naming the supported families otherwise.
    """
    for paths in BLOCK_PATHS.values():
        for path in paths:
            blocks = _get_path(model, path)
            if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
                return blocks
    supported = "; ".join(f"{fam}" for fam in BLOCK_PATHS)
    raise UnsupportedModelError(
        f"{type(model).__name__} has no residual block list paperlib can call. "
        f"Supported: {supported}."
    )


def block_output(out: Any) -> torch.Tensor:
    """The hidden state a block returns (blocks return a tensor or a tuple led by it)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "hidden_states"):
        return out.hidden_states
    raise TypeError(f"cannot read a hidden state from a block output of type {type(out)}")


@dataclass
class BlockCall:
    """The arguments the model passed to its blocks for one batch, minus the hidden state."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    hidden_in_kwargs: bool = False

    def __call__(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``L(x)`` for this batch's mask / positions."""
        if self.hidden_in_kwargs:
            out = block(*self.args, **{**self.kwargs, "hidden_states": x})
        else:
            out = block(x, *self.args, **self.kwargs)
        return block_output(out)


@dataclass
class StackTrace:
    """Everything one forward pass reveals: ``X_0 .. X_n`` and how to call blocks again."""

    hidden: list[torch.Tensor]  # n + 1 tensors (batch, seq, d); hidden[i] is the input of block i
    call: BlockCall


class ResidualStack:
    """A model seen as ``X_{i+1} = L_i(X_i)``, ``i = 0 .. n-1`` (0-based here, 1-based in tables)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.blocks = find_blocks(model)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @torch.no_grad()
    def trace(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> StackTrace:
        """Run the model once and capture the input of every block and the last output."""
        hidden: list[torch.Tensor | None] = [None] * (self.n_layers + 1)
        call = BlockCall()
        handles = []

        def pre_hook(idx: int):
            def hook(module, args, kwargs):
                if "hidden_states" in kwargs:
                    x = kwargs["hidden_states"]
                    if idx == 0:
                        call.args = tuple(args)
                        call.kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                        call.hidden_in_kwargs = True
                else:
                    x = args[0]
                    if idx == 0:
                        call.args = tuple(args[1:])
                        call.kwargs = dict(kwargs)
                hidden[idx] = x.detach()

            return hook

        def last_hook(module, args, kwargs, out):
            hidden[self.n_layers] = block_output(out).detach()

        for i, blk in enumerate(self.blocks):
            handles.append(blk.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(self.blocks[-1].register_forward_hook(last_hook, with_kwargs=True))
        try:
            self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        if "use_cache" in call.kwargs:
            call.kwargs["use_cache"] = False
        missing = [i for i, h in enumerate(hidden) if h is None]
        if missing:
            raise RuntimeError(f"blocks {missing} were not called during the forward pass")
        return StackTrace(hidden=hidden, call=call)  # type: ignore[arg-type]

