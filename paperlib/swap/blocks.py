"""Find the residual blocks of a transformers model and call them one at a time.

Paper A writes each layer as ``L_i(X) = X + l_i(X)`` (eq. 2).  In transformers every such
layer is one module in a ``ModuleList``; this module finds that list by a rule and records, by a
forward pre-hook on every block, the exact extra arguments (attention mask, rotary position
embeddings, position bias, ...) the model passes to each block.  Any block can then be called on
any hidden state ``X`` with its own arguments, which is all that the swap ``L_i(L_{i+1}(X))``
needs.

The rule: a transformers model names the class of its repeated layer in ``_no_split_modules``
(the unit accelerate never splits across devices); the block list is the one ``ModuleList`` whose
members are all of such classes.  Models without that attribute fall back to known attribute
paths (:data:`BLOCK_PATHS`).  Models the analysis cannot serve are refused with one line:
non-text models (no ``input_ids``), encoder-decoder models (two stacks) and models whose blocks
have no attention (state-space / Mamba-style mixers, or hybrids of both).

For post-LN encoders (BERT, RoBERTa, MPNet) the block computes ``LN(X + f(X))``; we still
define ``l_i(X) := L_i(X) - X`` so every quantity of the paper is well defined (the book
notes that the residual form is exact only for pre-LN decoders).

Models dispatched over several devices (accelerate's ``device_map``) are supported: each block is
called with its inputs on its own device (:func:`block_device`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: dotted attribute paths of the block list, tried in order when the model does not name its
#: block class in ``_no_split_modules``; the family name is for messages.
BLOCK_PATHS: dict[str, tuple[str, ...]] = {
    "GPT-2 family (transformer.h)": ("transformer.h", "h"),
    "Llama-style decoders (model.layers)": ("model.layers", "layers"),
    "OPT-style decoders (model.decoder.layers)": ("model.decoder.layers", "decoder.layers"),
    "BERT / RoBERTa / MPNet encoders (encoder.layer)": (
        "bert.encoder.layer",
        "roberta.encoder.layer",
        "mpnet.encoder.layer",
        "encoder.layer",
    ),
}

#: families covered by the tests (tests/swap/test_families.py), for messages
SUPPORTED = ("text transformers with one stack of attention blocks, e.g. GPT-2, Llama, Mistral, Mixtral, "
             "Qwen2, Gemma 2, Phi-3, Falcon, GPT-NeoX, OPT (decoders) and BERT, RoBERTa, MPNet (encoders)")


class UnsupportedModelError(TypeError):
    """Raised when a model has no residual block list that paperlib knows how to call."""


def _get_path(module: nn.Module, path: str) -> Any:
    obj: Any = module
    for part in path.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def _no_split_classes(model: nn.Module) -> set[str]:
    """Class names the model (or any sub-model) lists in ``_no_split_modules``."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    return names


def _lists_by_rule(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Every non-empty ``ModuleList`` whose members are all of a class in ``_no_split_modules``."""
    classes = _no_split_classes(model)
    if not classes:
        return []
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.ModuleList) and len(m) > 0 and all(type(b).__name__ in classes for b in m)]


def _lists_by_path(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    for paths in BLOCK_PATHS.values():
        for path in paths:
            blocks = _get_path(model, path)
            if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
                return [(path, blocks)]
    return []


def _has_attention(block: nn.Module) -> bool:
    """Whether a block contains an attention module (by attribute or class name)."""
    for name, m in block.named_modules():
        leaf = name.rsplit(".", 1)[-1].lower()
        if "attn" in leaf or "attention" in leaf or "Attention" in type(m).__name__:
            return True
    return False


def _refuse_unsupported_kind(model: nn.Module) -> None:
    """One-line refusals for models the analysis does not apply to (before looking for blocks)."""
    name = type(model).__name__
    config = getattr(model, "config", None)
    main_input = getattr(model, "main_input_name", "input_ids")
    if config is not None and main_input != "input_ids":
        raise UnsupportedModelError(
            f"{name} is not a text model (it takes {main_input}, not input_ids): the swap analysis "
            f"runs token sequences through the residual stream. Supported: {SUPPORTED}."
        )
    if config is not None and getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{name} is an encoder-decoder model (two residual stacks joined by cross-attention): "
            f"the swap analysis needs one stack. Supported: {SUPPORTED}."
        )


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """Return the model's list of residual blocks ``[L_1, ..., L_n]``.

    Rule first (the ``ModuleList`` of the classes in ``_no_split_modules``), then the known paths
    of :data:`BLOCK_PATHS`.  Raises :class:`UnsupportedModelError` (one line naming what is
    wrong and what is supported) for non-text, encoder-decoder and attention-free models and for
    models where no block list, or more than one, is found.
    """
    name = type(model).__name__
    _refuse_unsupported_kind(model)
    found = _lists_by_rule(model) or _lists_by_path(model)
    if not found:
        raise UnsupportedModelError(
            f"{name} has no residual block list paperlib can call (no ModuleList of the classes in "
            f"_no_split_modules, none at {', '.join(p for ps in BLOCK_PATHS.values() for p in ps)}). "
            f"Supported: {SUPPORTED}."
        )
    if len(found) > 1:
        raise UnsupportedModelError(
            f"{name} has {len(found)} block lists ({', '.join(p for p, _ in found)}): the swap analysis "
            f"needs one residual stack; pass the sub-model that holds the stack to analyse. "
            f"Supported: {SUPPORTED}."
        )
    path, blocks = found[0]
    if getattr(model, "config", None) is not None:
        plain = sorted({type(b).__name__ for b in blocks if not _has_attention(b)})
        if plain:
            raise UnsupportedModelError(
                f"{name}'s blocks at {path} include {', '.join(plain)} without attention (a state-space / "
                f"Mamba-style mixer): paper A's analysis of adjacent attention blocks is not supported for "
                f"them. Supported: {SUPPORTED}."
            )
    return blocks


def block_device(block: nn.Module) -> torch.device:
    """The device a block computes on: accelerate's execution device when the model was
    dispatched with a ``device_map``, else the device of its first parameter or buffer."""
    hook = getattr(block, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    for t in block.parameters():
        return t.device
    for t in block.buffers():
        return t.device
    return torch.device("cpu")


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (nested tuples, lists, dicts) on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device == device else obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


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
    """The arguments the model passed to a block for one batch, minus the hidden state.

    ``device``, when set, is where the block computes: the hidden state and the arguments are
    moved there first (a no-op on one device), so a block of a model split over GPUs can be
    called on a state that lives on another card.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    hidden_in_kwargs: bool = False
    device: torch.device | None = None

    def __call__(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``L(x)`` for this batch's mask / positions."""
        args, kwargs = self.args, self.kwargs
        if self.device is not None:
            x = to_device(x, self.device)
            args, kwargs = to_device(args, self.device), to_device(kwargs, self.device)
        if self.hidden_in_kwargs:
            out = block(*args, **{**kwargs, "hidden_states": x})
        else:
            out = block(x, *args, **kwargs)
        return block_output(out)


@dataclass
class StackTrace:
    """Everything one forward pass reveals: ``X_0 .. X_n`` and how to call blocks again.

    ``calls[i]`` holds the arguments the model gave block ``i`` (families such as Gemma 2 give
    alternate layers different masks); ``call`` is block 0's, kept for older callers.
    ``hidden[i]`` lives where the model left it (with a device map: the device of block ``i-1``).
    """

    hidden: list[torch.Tensor]  # n + 1 tensors (batch, seq, d); hidden[i] is the input of block i
    call: BlockCall
    calls: list[BlockCall] = field(default_factory=list)

    def block(self, stack: "ResidualStack", i: int, x: torch.Tensor) -> torch.Tensor:
        """``L_i(x)`` with block ``i``'s own arguments, computed on block ``i``'s device."""
        return (self.calls[i] if self.calls else self.call)(stack.blocks[i], x)


class ResidualStack:
    """A model seen as ``X_{i+1} = L_i(X_i)``, ``i = 0 .. n-1`` (0-based here, 1-based in tables)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.blocks = find_blocks(model)
        self.devices = [block_device(b) for b in self.blocks]

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def input_device(self) -> torch.device:
        """Where the token ids go: the device of the input embeddings (first parameter otherwise)."""
        get = getattr(self.model, "get_input_embeddings", None)
        try:
            emb = get() if callable(get) else None
        except (NotImplementedError, AttributeError):
            emb = None
        if isinstance(emb, nn.Module):
            return block_device(emb)
        return self.devices[0]

    @torch.no_grad()
    def trace(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> StackTrace:
        """Run the model once and capture the input of every block and the last output."""
        hidden: list[torch.Tensor | None] = [None] * (self.n_layers + 1)
        calls = [BlockCall(device=d) for d in self.devices]
        handles = []

        def pre_hook(idx: int):
            def hook(module, args, kwargs):
                call = calls[idx]
                if "hidden_states" in kwargs:
                    x = kwargs["hidden_states"]
                    call.args = tuple(args)
                    call.kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                    call.hidden_in_kwargs = True
                else:
                    x = args[0]
                    call.args = tuple(args[1:])
                    call.kwargs = dict(kwargs)
                if "use_cache" in call.kwargs:
                    call.kwargs["use_cache"] = False
                hidden[idx] = x.detach()

            return hook

        def last_hook(module, args, kwargs, out):
            hidden[self.n_layers] = block_output(out).detach()

        for i, blk in enumerate(self.blocks):
            handles.append(blk.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(self.blocks[-1].register_forward_hook(last_hook, with_kwargs=True))
        dev = self.input_device
        try:
            self.model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        missing = [i for i, h in enumerate(hidden) if h is None]
        if missing:
            raise RuntimeError(f"blocks {missing} were not called during the forward pass")
        return StackTrace(hidden=hidden, call=calls[0], calls=calls)  # type: ignore[arg-type]
