"""Triton kernels of :mod:`paperlib.loraild.lora_a_kernel` (imported only through it, lazily).

A module of its own because ``triton.jit`` chooses between the compiler and the CPU interpreter
(``TRITON_INTERPRET=1``) when a kernel is *defined*: importing this file on first use lets the
tests switch the interpreter on after the package was imported.

Notation: ``x`` ``[N, D]``, ``A`` ``[3, R, D]``, ``H`` and ``dH`` ``[3, N, R]``, keep masks ``m_c``
``[N, D]``, ``s = 1 / (1 - p)``.  Products take tiles of ``x`` with the dropped elements zeroed
(``x * m_c``, ``m_c`` in {0, 1}: exact in any dtype) and apply ``s`` once to the fp32 accumulators.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mask_offsets(seed, row0, rows, cols, D, chunk_rows):
    """Philox key and int32 counters of the elements ``(rows, cols)`` of a tile starting at row ``row0``.

    Element ``(n, k)`` gets counter ``(n mod chunk_rows) * D + k`` (< 2**31) under the key
    ``seed + (n // chunk_rows) * 2**32``: a tile never straddles a chunk (``chunk_rows`` is a
    multiple of every ``BLOCK_N``), so the key is one scalar per tile and any ``N * D`` is safe.
    """
    chunk = row0 // chunk_rows
    key = seed.to(tl.int64) + chunk.to(tl.int64) * 4294967296
    local = rows - chunk * chunk_rows
    return key, local[:, None] * D + cols[None, :]


@triton.jit
def _keep3(key, offs, p):
    """The three keep masks, 1.0 where ``u > p`` (probability ``1 - p`` each) and 0.0 elsewhere, from
    one Philox draw per element.

    As floats, never booleans: Triton 3.6 hoists the masking into the product's operand layout, and a
    boolean tensor in that layout fails to compile on an H100 (``applyLinearLayout`` assertion,
    bench/README.md section 7).  ``ceil(u - p)`` is 1 for ``u > p`` and 0 (or -0) otherwise: ``u - p``
    is exact for the ``u`` near ``p`` (Sterbenz), so the comparison is exact."""
    u0, u1, u2, _u3 = tl.rand4x(key, offs)
    return tl.math.ceil(u0 - p), tl.math.ceil(u1 - p), tl.math.ceil(u2 - p)


@triton.jit
def _masked(x, m):
    """``x`` with the dropped elements zeroed: ``x * m`` in fp32 (exact, ``m`` in {0, 1}), back in
    ``x``'s dtype (the interpreter multiplies bf16 as raw integers)."""
    return (x.to(tl.float32) * m).to(x.dtype)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """``a @ b`` accumulated in fp32; ``DOT_F32`` upcasts the operands first (the interpreter's
    ``tl.dot`` multiplies bf16 as raw integers; bf16 products are exact in fp32, so only the
    summation order differs from the tensor-core product)."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit(do_not_specialize=["seed"])
def masks_kernel(m_ptr, seed, p, N, D, chunk_rows, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Debugging: write the keep masks ``m`` ``[3, N, D]`` (int8) that the op draws for ``seed``."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    row0 = pid_n * BLOCK_N
    rows = row0 + tl.arange(0, BLOCK_N)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    inb = (rows < N)[:, None] & (cols < D)[None, :]
    key, offs = _mask_offsets(seed, row0, rows, cols, D, chunk_rows)
    k0, k1, k2 = _keep3(key, offs, p)
    rows64 = rows.to(tl.int64)
    tl.store(m_ptr + rows64[:, None] * D + cols[None, :], (k0 != 0).to(tl.int8), mask=inb)
    tl.store(m_ptr + (rows64 + N)[:, None] * D + cols[None, :], (k1 != 0).to(tl.int8), mask=inb)
    tl.store(m_ptr + (rows64 + 2 * N)[:, None] * D + cols[None, :], (k2 != 0).to(tl.int8), mask=inb)


@triton.jit(do_not_specialize=["seed"])
def forward_kernel(x_ptr, a_ptr, h_ptr, seed, p, scale, N, D, R, chunk_rows,
                   sxn, sxk, sac, sar, sak, shc, shn, shr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, R_PAD: tl.constexpr,
                   DROP: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """``H[c] = s (m_c * x) A[c]^T`` for a block of ``BLOCK_N`` rows, looping over ``D``."""
    row0 = tl.program_id(0) * BLOCK_N
    rows = row0 + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    rr = tl.arange(0, R_PAD)
    rrmask = rr < R
    acc0 = tl.zeros((BLOCK_N, R_PAD), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_N, R_PAD), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, R_PAD), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        cmask = cols < D
        x = tl.load(x_ptr + rows64[:, None] * sxn + cols[None, :] * sxk,
                    mask=rmask[:, None] & cmask[None, :], other=0.0)
        # A[c]^T tiles [BLOCK_K, R_PAD]
        a_off = rr[None, :] * sar + cols[:, None] * sak
        a_msk = rrmask[None, :] & cmask[:, None]
        at0 = tl.load(a_ptr + a_off, mask=a_msk, other=0.0)
        at1 = tl.load(a_ptr + sac + a_off, mask=a_msk, other=0.0)
        at2 = tl.load(a_ptr + 2 * sac + a_off, mask=a_msk, other=0.0)
        if DROP:
            key, offs = _mask_offsets(seed, row0, rows, cols, D, chunk_rows)
            m0, m1, m2 = _keep3(key, offs, p)
            acc0 += _dot(_masked(x, m0), at0, PRECISION, DOT_F32)
            acc1 += _dot(_masked(x, m1), at1, PRECISION, DOT_F32)
            acc2 += _dot(_masked(x, m2), at2, PRECISION, DOT_F32)
        else:
            acc0 += _dot(x, at0, PRECISION, DOT_F32)
            acc1 += _dot(x, at1, PRECISION, DOT_F32)
            acc2 += _dot(x, at2, PRECISION, DOT_F32)
    h_off = rows64[:, None] * shn + rr[None, :] * shr
    h_msk = rmask[:, None] & rrmask[None, :]
    out = h_ptr.dtype.element_ty
    tl.store(h_ptr + h_off, (acc0 * scale).to(out), mask=h_msk)
    tl.store(h_ptr + shc + h_off, (acc1 * scale).to(out), mask=h_msk)
    tl.store(h_ptr + 2 * shc + h_off, (acc2 * scale).to(out), mask=h_msk)


@triton.jit(do_not_specialize=["seed"])
def backward_kernel(x_ptr, a_ptr, g_ptr, dx_ptr, pa_ptr, seed, p, scale, N, D, R, chunk_rows, tiles_per_split,
                    sxn, sxk, sac, sar, sak, sgc, sgn, sgr, sdn, sdk,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, R_PAD: tl.constexpr,
                    DROP: tl.constexpr, NEED_DX: tl.constexpr, NEED_DA: tl.constexpr, PRECISION: tl.constexpr,
                    DOT_F32: tl.constexpr):
    """Columns ``BLOCK_K`` of ``D`` times one split of the rows (``tiles_per_split`` tiles of ``BLOCK_N``):

    ``dx = s sum_c m_c * (dH[c] A[c])`` on its tile, and its fp32 partial of ``dA[c] = s dH[c]^T (m_c * x)``
    written to ``pa[split, c]`` (``[S, 3, R_PAD, D]``; the caller sums over the splits).
    """
    pid_k = tl.program_id(0)
    pid_s = tl.program_id(1)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    cmask = cols < D
    rr = tl.arange(0, R_PAD)
    rrmask = rr < R
    # A[c] tiles [R_PAD, BLOCK_K], read once
    a_off = rr[:, None] * sar + cols[None, :] * sak
    a_msk = rrmask[:, None] & cmask[None, :]
    a0 = tl.load(a_ptr + a_off, mask=a_msk, other=0.0)
    a1 = tl.load(a_ptr + sac + a_off, mask=a_msk, other=0.0)
    a2 = tl.load(a_ptr + 2 * sac + a_off, mask=a_msk, other=0.0)
    da0 = tl.zeros((R_PAD, BLOCK_K), dtype=tl.float32)
    da1 = tl.zeros((R_PAD, BLOCK_K), dtype=tl.float32)
    da2 = tl.zeros((R_PAD, BLOCK_K), dtype=tl.float32)
    t0 = pid_s * tiles_per_split
    for t in range(t0, t0 + tiles_per_split):
        row0 = t * BLOCK_N
        rows = row0 + tl.arange(0, BLOCK_N)
        rmask = rows < N
        rows64 = rows.to(tl.int64)
        g_off = rows64[:, None] * sgn + rr[None, :] * sgr
        g_msk = rmask[:, None] & rrmask[None, :]
        g0 = tl.load(g_ptr + g_off, mask=g_msk, other=0.0)
        g1 = tl.load(g_ptr + sgc + g_off, mask=g_msk, other=0.0)
        g2 = tl.load(g_ptr + 2 * sgc + g_off, mask=g_msk, other=0.0)
        x_msk = rmask[:, None] & cmask[None, :]
        if DROP:
            key, offs = _mask_offsets(seed, row0, rows, cols, D, chunk_rows)
            m0, m1, m2 = _keep3(key, offs, p)
        if NEED_DX:
            d0 = _dot(g0, a0, PRECISION, DOT_F32)
            d1 = _dot(g1, a1, PRECISION, DOT_F32)
            d2 = _dot(g2, a2, PRECISION, DOT_F32)
            if DROP:
                dx = d0 * m0 + d1 * m1 + d2 * m2
            else:
                dx = d0 + d1 + d2
            tl.store(dx_ptr + rows64[:, None] * sdn + cols[None, :] * sdk,
                     (dx * scale).to(dx_ptr.dtype.element_ty), mask=x_msk)
        if NEED_DA:
            x = tl.load(x_ptr + rows64[:, None] * sxn + cols[None, :] * sxk, mask=x_msk, other=0.0)
            if DROP:
                da0 += _dot(tl.trans(g0), _masked(x, m0), PRECISION, DOT_F32)
                da1 += _dot(tl.trans(g1), _masked(x, m1), PRECISION, DOT_F32)
                da2 += _dot(tl.trans(g2), _masked(x, m2), PRECISION, DOT_F32)
            else:
                da0 += _dot(tl.trans(g0), x, PRECISION, DOT_F32)
                da1 += _dot(tl.trans(g1), x, PRECISION, DOT_F32)
                da2 += _dot(tl.trans(g2), x, PRECISION, DOT_F32)
    if NEED_DA:
        plane = R_PAD * D
        pa_off = pid_s.to(tl.int64) * 3 * plane + rr[:, None] * D + cols[None, :]
        pa_msk = cmask[None, :] & (rr[:, None] < R_PAD)
        tl.store(pa_ptr + pa_off, da0 * scale, mask=pa_msk)
        tl.store(pa_ptr + plane + pa_off, da1 * scale, mask=pa_msk)
        tl.store(pa_ptr + 2 * plane + pa_off, da2 * scale, mask=pa_msk)
