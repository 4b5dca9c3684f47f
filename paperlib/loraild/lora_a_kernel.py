"""The fused LoRA's A features under dropout as one Triton op: three dropout masks drawn in registers.

Per layer, with ``x`` ``[N, d]``, ``A`` ``[3, r, d]`` (query, key, value), dropout ``p`` and
``s = 1 / (1 - p)``, three independent keep masks ``m_c`` ``[N, d]`` (each element kept with
probability ``1 - p``):

- forward:  ``H[c] = s (m_c * x) A[c]^T``                 ``[3, N, r]``, in ``x``'s dtype;
- backward: ``dx = s sum_c m_c * (dH[c] A[c])``            ``[N, d]``;
            ``dA[c] = s dH[c]^T (m_c * x)``                ``[3, r, d]``, in ``A``'s dtype.

This is the torch path of :class:`~paperlib.loraild.fused_lora.FusedLoraRecorder` (three dropouts of
``x``, one batched product; other masks) without the three masked copies, their
masks and their gradients in memory: the forward kernel reads ``x`` once and the backward kernel
reads ``x`` and ``dH`` once per column block, and both regenerate the masks from a Philox key
(``tl.rand4x``: one draw gives the three masks of an element).  Only ``x``, ``A`` and the seed
are saved for backward.  Products accumulate in fp32 (dropped elements are zeroed, ``s`` scales
the fp32 accumulators once); ``dA`` sums fp32 partials over splits of the ``N`` rows (no atomics:
deterministic).  fp32 products use TF32 exactly when torch's matmuls do
(``torch.get_float32_matmul_precision() != "highest"``).

Masks: element ``(n, k)`` uses Philox counter ``(n mod C) d + k`` under the key
``seed + (n // C) 2**32``, with ``C`` the largest multiple of 1024 rows with ``C d < 2**31``: int32
counters for any ``N`` (:func:`dropout_masks` returns the masks a seed gives).  The seed is drawn
from torch's CPU generator (``torch.randint``) when not given: reproducible under
``torch.manual_seed``, no device synchronisation, but it is a host value, so the op does not
belong inside ``torch.compile`` graphs or CUDA graphs (a captured seed would repeat its masks).

Triton is imported on first use (``paperlib`` imports without it).  On CPU tensors the op runs in
Triton's interpreter when ``TRITON_INTERPRET=1`` was set before its first use (tests only).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from types import ModuleType

import torch

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ROW_ALIGN = 1024  # every BLOCK_N divides it, so no tile straddles two Philox keys


@dataclass(frozen=True)
class Config:
    """Tile sizes (powers of two; ``block_n`` at most 1024) and launch settings of the two kernels."""

    fwd_block_n: int = 64
    fwd_block_k: int = 128
    fwd_warps: int = 4
    fwd_stages: int = 3
    bwd_block_n: int = 64
    bwd_block_k: int = 128
    bwd_warps: int = 8
    bwd_stages: int = 2
    bwd_programs_per_sm: int = 2  # the backward splits N until it has about this many programs per SM


DEFAULT_CONFIG = Config()


@functools.cache
def _kernels() -> ModuleType:
    from paperlib.loraild import _lora_a_triton

    return _lora_a_triton


@functools.cache
def triton_installed() -> bool:
    """Whether triton can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """Whether the kernels were defined in Triton's CPU interpreter (defines them on first call:
    ``TRITON_INTERPRET=1`` must be set then; it is not needed afterwards)."""
    return type(_kernels().forward_kernel).__name__ == "InterpretedFunction"


def unavailable_reason(x: torch.Tensor) -> str | None:
    """Why :func:`dropout_lora_a` cannot run on ``x``'s device and dtype, or ``None`` when it can."""
    if not triton_installed():
        return "triton is not installed"
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} is not one of {DTYPES}"
    if x.device.type == "cuda":
        if interpreted():
            return "the kernels were defined in Triton's interpreter (TRITON_INTERPRET=1): CPU tensors only"
        return None
    if x.device.type == "cpu":
        if interpreted():
            return None
        return "CPU tensors need Triton's interpreter (TRITON_INTERPRET=1 before the op's first use)"
    return f"device {x.device.type} is not supported (CUDA, or CPU in Triton's interpreter)"


def available(x: torch.Tensor) -> bool:
    """Whether :func:`dropout_lora_a` runs on ``x``: triton importable, a supported dtype, and a CUDA
    tensor (or a CPU tensor with Triton's interpreter on)."""
    return unavailable_reason(x) is None


def draw_seed() -> int:
    """A mask seed from torch's CPU default generator (reproducible under ``torch.manual_seed``)."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


def _chunk_rows(d: int) -> int:
    rows = (2**31 - 1) // d // _ROW_ALIGN * _ROW_ALIGN
    if rows == 0:
        raise ValueError(f"feature size {d} too large for int32 mask counters (at most {(2**31 - 1) // _ROW_ALIGN})")
    return rows


def _r_pad(r: int) -> int:
    return max(16, 1 << (r - 1).bit_length())  # tl.dot needs every dimension >= 16


def _precision(dtype: torch.dtype) -> str | None:
    if dtype != torch.float32:
        return None
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _dot_f32(dtype: torch.dtype) -> bool:
    # the interpreter's tl.dot multiplies bf16 (stored as uint16) as integers: upcast there
    return dtype == torch.bfloat16 and interpreted()


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def forward_features(x2: torch.Tensor, a: torch.Tensor, p: float, seed: int, cfg: Config = DEFAULT_CONFIG) -> torch.Tensor:
    """The forward kernel without autograd: ``H`` ``[3, N, r]`` in ``x2``'s dtype (inputs checked by the caller)."""
    n, d = x2.shape
    r = a.shape[1]
    h = torch.empty(3, n, r, dtype=x2.dtype, device=x2.device)
    if n == 0:
        return h
    _kernels().forward_kernel[(_cdiv(n, cfg.fwd_block_n),)](
        x2, a, h, seed, p, 1.0 / (1.0 - p), n, d, r, _chunk_rows(d),
        *x2.stride(), *a.stride(), *h.stride(),
        BLOCK_N=cfg.fwd_block_n, BLOCK_K=cfg.fwd_block_k, R_PAD=_r_pad(r), DROP=p > 0,
        PRECISION=_precision(x2.dtype), DOT_F32=_dot_f32(x2.dtype), num_warps=cfg.fwd_warps, num_stages=cfg.fwd_stages)
    return h


def backward_features(x2: torch.Tensor, a: torch.Tensor, dh: torch.Tensor, p: float, seed: int, cfg: Config,
                      need_dx: bool, need_da: bool, da_dtype: torch.dtype | None = None
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The backward kernel without autograd: ``dx`` ``[N, d]`` in ``x2``'s dtype and ``dA`` ``[3, r, d]`` in
    ``da_dtype`` (``a``'s by default; summed over the row splits in fp32, so an fp32 ``da_dtype`` is never
    rounded to ``a``'s 16 bits)."""
    n, d = x2.shape
    r = a.shape[1]
    if n == 0 or not (need_dx or need_da):
        return (torch.zeros_like(x2) if need_dx else None), (torch.zeros_like(a) if need_da else None)
    dh = dh.to(x2.dtype)
    r_pad = _r_pad(r)
    col_blocks = _cdiv(d, cfg.bwd_block_k)
    tiles = _cdiv(n, cfg.bwd_block_n)
    target = _sm_count(x2.device.index or 0) * cfg.bwd_programs_per_sm if x2.is_cuda else 4
    splits = max(1, min(tiles, _cdiv(target, col_blocks)))
    per_split = _cdiv(tiles, splits)
    splits = _cdiv(tiles, per_split)
    dx = torch.empty(n, d, dtype=x2.dtype, device=x2.device) if need_dx else x2
    partial = torch.empty(splits, 3, r_pad, d, dtype=torch.float32, device=x2.device) if need_da else x2
    _kernels().backward_kernel[(col_blocks, splits)](
        x2, a, dh, dx, partial, seed, p, 1.0 / (1.0 - p), n, d, r, _chunk_rows(d), per_split,
        *x2.stride(), *a.stride(), *dh.stride(), *dx.stride(),
        BLOCK_N=cfg.bwd_block_n, BLOCK_K=cfg.bwd_block_k, R_PAD=r_pad, DROP=p > 0,
        NEED_DX=need_dx, NEED_DA=need_da, PRECISION=_precision(x2.dtype), DOT_F32=_dot_f32(x2.dtype),
        num_warps=cfg.bwd_warps, num_stages=cfg.bwd_stages)
    da = partial.sum(0)[:, :r].to(da_dtype or a.dtype) if need_da else None
    return (dx if need_dx else None), da


class DropoutLoraA(torch.autograd.Function):
    """``H[c] = s (m_c * x) A[c]^T`` with masks regenerated from ``seed`` in backward (module docstring)."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, a: torch.Tensor, p: float, seed: int, cfg: Config) -> torch.Tensor:
        ctx.save_for_backward(x2, a)
        ctx.p, ctx.seed, ctx.cfg = p, seed, cfg
        return forward_features(x2, a, p, seed, cfg)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh: torch.Tensor):
        x2, a = ctx.saved_tensors
        dx, da = backward_features(x2, a, dh, ctx.p, ctx.seed, ctx.cfg, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return dx, da, None, None, None


def check_op(x: torch.Tensor, p: float) -> None:
    """Raise a one-line ``ValueError`` unless dropout ``p`` is in ``[0, 1)`` and the op runs on ``x``'s
    device and dtype (shared by :func:`dropout_lora_a` and :func:`~paperlib.loraild.lora_branch.lora_branch`)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), got {p}")
    reason = unavailable_reason(x)
    if reason is not None:
        raise ValueError(f"the Triton LoRA-A op is unavailable: {reason}")


def resolve_seed(seed: int | None) -> int:
    """``seed`` checked to be in ``[0, 2**31)``, or one drawn by :func:`draw_seed` when ``None``."""
    if seed is None:
        return draw_seed()
    if not 0 <= seed < 2**31:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    return int(seed)


def _check(x2: torch.Tensor, a: torch.Tensor, p: float) -> None:
    if x2.dim() != 2 or a.dim() != 3 or a.shape[0] != 3 or a.shape[2] != x2.shape[1]:
        raise ValueError(f"expected x [N, d] and A [3, r, d], got {tuple(x2.shape)} and {tuple(a.shape)}")
    if x2.dtype != a.dtype:
        raise ValueError(f"x and A must share a dtype (cast first), got {x2.dtype} and {a.dtype}")
    if x2.device != a.device:
        raise ValueError(f"x and A must be on one device, got {x2.device} and {a.device}")
    check_op(x2, p)


def dropout_lora_a(x2: torch.Tensor, a: torch.Tensor, p: float, *, seed: int | None = None,
                   config: Config = DEFAULT_CONFIG) -> torch.Tensor:
    """``[3, N, r]``: ``H[c] = dropout_c(x2) @ a[c]^T`` with three independent masks (differentiable in
    ``x2`` and ``a``).  ``seed`` (``0 <= seed < 2**31``) picks the masks; drawn by :func:`draw_seed` if ``None``."""
    _check(x2, a, p)
    return DropoutLoraA.apply(x2, a, float(p), resolve_seed(seed), config)


def dropout_masks(seed: int, n: int, d: int, p: float, device: torch.device | str = "cuda") -> torch.Tensor:
    """The keep masks ``[3, n, d]`` (bool) that :func:`dropout_lora_a` draws for ``seed`` on ``[n, d]`` inputs
    (the same mask code, in a kernel that writes them out; for tests and checks)."""
    probe = torch.empty(0, device=device)
    reason = unavailable_reason(probe)
    if reason is not None:
        raise ValueError(f"the Triton LoRA-A op is unavailable: {reason}")
    m = torch.empty(3, n, d, dtype=torch.int8, device=device)
    if n and d:
        bn, bk = 64, 64
        _kernels().masks_kernel[(_cdiv(n, bn), _cdiv(d, bk))](
            m, seed, float(p), n, d, _chunk_rows(d), BLOCK_N=bn, BLOCK_K=bk)
    return m.bool()


__all__ = ["Config", "DEFAULT_CONFIG", "DTYPES", "DropoutLoraA", "available", "backward_features", "check_op",
           "draw_seed", "dropout_lora_a", "dropout_masks", "forward_features", "interpreted", "resolve_seed", "triton_installed",
           "unavailable_reason"]
