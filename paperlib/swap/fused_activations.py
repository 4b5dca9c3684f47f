"""One fused kernel for the tanh-approximated GELU while the swap analysis runs.

GPT-2 (the paper's model), GPT-J, CodeGen, Phi-1/2 and others compute their MLP activation

``gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``

as eight separate element-wise operations (transformers' ``NewGELUActivation`` / ``gelu_new`` and
``FastGELUActivation`` / ``gelu_fast``), each reading and writing the ``4 d``-wide MLP state.  On a
GPU that is memory traffic, not arithmetic: on an H100 these kernels took 0.5 s of a 2.2 s
GPT-2 Large swap analysis (65,536 + 65,536 tokens, bf16), more than all of the fits' products.
``torch.nn.functional.gelu(x, approximate="tanh")`` is the same function in one kernel (what
transformers calls ``gelu_pytorch_tanh``).  It is not bit-identical: the composed version rounds
every intermediate to the model's dtype (bf16 rounds eight times), the fused one computes in
float32 and rounds once, so hidden states move at the level of the dtype's rounding
(``bench/README.md`` section 5 shows the effect on r, delta and delta').

:func:`fused_activations` swaps those modules for ``torch.nn.GELU(approximate="tanh")`` inside a
``with`` block and puts the model's own modules back when it ends (also on errors).  Other
activations (exact GELU, SiLU, ReLU) already run as one kernel and are left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

#: the values of ``SwapConfig.activations``
ACTIVATIONS = ("auto", "fused", "model")

#: transformers' composed tanh-GELU classes (by name: they are defined in every release since 4.0)
_TANH_GELU_COMPOSED = ("NewGELUActivation", "FastGELUActivation")


def check_activations(value: str) -> str:
    if value not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {', '.join(ACTIVATIONS)} (default auto: fused on GPUs), "
                         f"got {value!r}")
    return value


def composed_tanh_gelus(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(parent, attribute)`` of every composed tanh-GELU module in ``model``."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child).__name__ in _TANH_GELU_COMPOSED:
                found.append((parent, name))
    return found


@contextlib.contextmanager
def fused_activations(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Inside the block, every composed tanh-GELU of ``model`` is one fused kernel; yields how
    many modules were swapped (0 when ``enabled`` is false or the model has none)."""
    swapped = composed_tanh_gelus(model) if enabled else []
    originals = [getattr(parent, name) for parent, name in swapped]
    fused = nn.GELU(approximate="tanh")
    try:
        for parent, name in swapped:
            setattr(parent, name, fused)
        yield len(swapped)
    finally:
        for (parent, name), module in zip(swapped, originals):
            setattr(parent, name, module)
