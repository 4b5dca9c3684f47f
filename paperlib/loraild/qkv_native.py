"""The q/k/v product (:class:`~paperlib.loraild.qkv_product.QkvProduct`) as a C++ autograd function.

``csrc/qkv_product.cpp`` makes the same tensor calls as the Python forward and backward (torch features,
with dropout or without), so the two give the same values from the same random state (tests compare them
bit for bit).  Only the host work differs.  The eager bf16 LoRAILD step is bound by the host, and the
product's ~40 Python tensor calls per layer were most of LoRAILD's extra host time: one layer's q/k/v with
LoRA and dropout took the host 1.96 ms against 1.29 ms for three ``nn.Linear`` (``bench/README.md``,
round 13).

It is built on first use with :func:`torch.utils.cpp_extension.load`. That needs a C++ compiler and ninja,
takes about 40 s, and is then cached by torch per machine and source.  Where it cannot be built,
:func:`available` is ``False`` and :class:`~paperlib.loraild.fused_lora.FusedLoraRecorder` keeps the
Python product.

Measured (``bench/README.md`` section 7, round 13 (c), one H100, 128 x 128, bf16, cached teacher): the
LoRAILD step took 1.10-1.14x Vanilla KD's with this op on a busy host, against 1.20-1.24x with the Python
product in the same call.  On a host that kept up it took 1.10-1.11x, the device-time ratio, for every
alignment; round 14's three dropouts (:func:`~paperlib.loraild.qkv_product.three_dropouts`) brought the
device-time ratio to 1.07x.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from paperlib.loraild.qkv_product import ProductSpec

SOURCE = Path(__file__).with_name("csrc") / "qkv_product.cpp"
NAME = "paperlib_qkv_product"
DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}

_ext = None
_error: str | None = None


def load():
    """The built extension (building it the first time on this machine); a one-line ``RuntimeError`` where
    it cannot be built."""
    global _ext, _error
    if _ext is not None:
        return _ext
    if _error is not None:
        raise RuntimeError(_error)
    try:
        from torch.utils import cpp_extension

        if not _built(cpp_extension):
            print("paperlib: building the C++ q/k/v product (once per machine, about a minute)", file=sys.stderr,
                  flush=True)
        _ext = cpp_extension.load(name=NAME, sources=[str(SOURCE)], extra_cflags=["-O2"], verbose=False)
    except Exception as e:  # a missing compiler, ninja or header: the Python product stays
        first = (str(e).strip().splitlines() or [""])[0][:200]
        _error = (f"the C++ q/k/v product could not be built ({type(e).__name__}: {first}); it needs a C++ compiler "
                  "and ninja (pip install ninja). The Python product gives the same results")
        print(f"paperlib: {_error}; using the Python product", file=sys.stderr, flush=True)  # said once per process
        raise RuntimeError(_error) from None
    return _ext


def _built(cpp_extension) -> bool:
    """Whether a build of the extension is already in torch's extensions folder (only to say that a build starts)."""
    try:
        folder = Path(cpp_extension._get_build_directory(NAME, verbose=False))
    except Exception:
        return True
    return any(folder.glob("*.so"))


def available() -> bool:
    """Whether the extension is built or can be built here."""
    try:
        load()
    except RuntimeError:
        return False
    return True


def applies(x: torch.Tensor, linears, spec: ProductSpec) -> bool:
    """Whether the C++ product computes this call: torch features, every base layer with a bias, a dtype it
    knows (the rest keeps the Python product)."""
    return (spec.features == "torch" and spec.dtype in DTYPES and all(lin.bias is not None for lin in linears)
            and not torch.compiler.is_compiling())


def qkv_lora(x: torch.Tensor, linears: tuple[nn.Module, nn.Module, nn.Module], lora_a: tuple[torch.Tensor, ...],
             lora_b: tuple[torch.Tensor, ...], spec: ProductSpec) -> list[torch.Tensor]:
    """``[y_q, y_k, y_v, H]`` as :class:`~paperlib.loraild.qkv_product.QkvProduct` computes them (``H``
    ``[3, N, r]``), with its gradients; ``linears`` are the three base ``nn.Linear``."""
    lq, lk, lv = linears
    return load().qkv_lora(x, lq.weight, lq.bias, lk.weight, lk.bias, lv.weight, lv.bias, *lora_a, *lora_b,
                           float(spec.p), float(spec.scale), DTYPES[spec.dtype])


__all__ = ["SOURCE", "load", "available", "applies", "qkv_lora"]
