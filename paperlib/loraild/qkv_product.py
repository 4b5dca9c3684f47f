"""A layer's query, key and value projections, with their LoRA, as one matrix product.

Per layer, with ``x`` ``[N, d]`` the attention input, base weights ``W_m`` ``[d_m, d]`` and biases ``b_m``
for m in (query, key, value), LoRA ``A_m`` ``[r, d]``, ``B_m`` ``[d_m, r]``, ``s = alpha / r`` and, in
training, dropout ``p`` with an independent keep mask per module (the authors' peft LoRA):

    H_m = A_m dropout_m(x)                 the LoRA-A features, eq. 3's record h_x  ([3, N, r] for the three)
    y_m = W_m x + b_m + s B_m H_m          peft's LoRA output

The three outputs are one product of the input widened by the features with a block weight holding the
scaled ``B_m``:

    [y_q  y_k  y_v] = X' W'^T + [b_q  b_k  b_v],   X' = [x  H_q  H_k  H_v]   ([N, d + 3r]),
    W' = [[W_q, sB_q, 0, 0], [W_k, 0, sB_k, 0], [W_v, 0, 0, sB_v]]            ([d_q + d_k + d_v, d + 3r])

and its backward is two products: ``dX' = dY W'`` holds ``dx`` (first ``d`` columns) and ``dH`` (the
rest; the block structure keeps ``dH_m = s dy_m B_m``), ``dW' = dY^T X'`` holds every ``dW_m`` and, on its
diagonal blocks, ``dB_m / s = dy_m^T H_m``.  The features' own backward adds
``dx += sum_m dropout_m^T(dH_m A_m)`` and ``dA_m = dH_m^T dropout_m(x)``, with ``dH_m`` including the ILD
loss's gradient.  ``H`` is returned as a ``[3, N, r]`` view of ``X'``: the features' product writes it there.

So the LoRA's ``B`` side costs no kernels of its own: it rides in the q/k/v product (``3r = 96`` more
columns of ``K = 768`` at the paper's sizes), where peft runs three ``addmm`` forward and six products
plus sums backward per layer; and the layer input is cast once for the three projections, not three
times as autocast does for three ``nn.Linear`` calls (and its gradient summed in the product, not as
three casts and two adds).  The features come from torch (:func:`three_dropouts`: three
``native_dropout`` calls on a contiguous copy of the input, the masks peft's three modules draw, in their
order) or from the Triton op (:mod:`~paperlib.loraild.lora_a_kernel`, masks regenerated in backward).  Without LoRA
(:class:`PlainQkv`) it is just the three base projections as one product.

Arithmetic is in ``dtype`` (autocast's, or the weights'); the input's gradient is returned in the
input's dtype, and every parameter gradient contiguous in its parameter's dtype (fp32 under autocast, the
value autocast's own casts would give), so that autograd stores it without a copy of its own.  ``tests/loraild/test_loraild_qkv_product.py`` checks outputs
and every gradient against fp64 autograd of peft's formula with the same masks (and ``gradcheck``),
against the composite path of :class:`~paperlib.loraild.fused_lora.FusedLoraRecorder` and against
unpatched ``nn.Linear``.

Measured (``bench/README.md`` section 7, rounds 12-14, one H100, 128 x 128 tokens): with the masks drawn by
:func:`three_dropouts` (round 14) the LoRAILD step keeps the device busy 1.07x as long as Vanilla KD's (1.10x
with round 13's one dropout of an expanded view), and takes 1.08x Vanilla KD's time in fp32, where the device
bounds both steps.  In bf16 on busy hosts the steps wait on the host, and the ratio (1.05-1.22x by medians)
is that of their host work; the step then puts 1.06x Vanilla KD's launches on the device (round 15, with the
A weights and biases cast in one copy, :func:`_lora_a_and_bias`), and LoRA's own calls (the three dropouts, their
products and gradients) already cost these hosts about 1.10-1.15x Vanilla KD's host work (round 16).  On GPUs the C++ twin (:mod:`~paperlib.loraild.qkv_native`) runs instead of this
module's Python (round 13: the step took 1.10-1.14x against 1.20-1.24x with the Python product).  Compiled
with CUDA graphs, where dynamo traces it (its settings are plain values; its ``out=`` writes become copies
there), it took 1.13-1.17x in round 13.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from paperlib.loraild import lora_a_kernel

FEATURES = ("torch", "triton")


@dataclass(frozen=True)
class ProductSpec:
    """The non-tensor settings of one call: dropout ``p`` (0: none), LoRA's scale ``s``, the compute
    ``dtype``, how dropped-out features are computed (``features``: one of :data:`FEATURES`) and, for
    the Triton op, its mask ``seed`` and tile ``config``."""

    p: float = 0.0
    scale: float = 1.0
    dtype: torch.dtype = torch.float32
    features: str = "torch"
    seed: int = 0
    config: lora_a_kernel.Config | None = None  # the Triton op's tiles (None: its default)


def _into(out: torch.Tensor, fn, *args) -> torch.Tensor:
    """``fn(*args)`` written into ``out`` (a view, possibly strided, possibly of another dtype): one operation
    with ``out=`` in eager mode; a copy while compiling, where dynamo does not trace a strided ``out=``
    (inductor fuses the copy)."""
    if torch.compiler.is_compiling():
        return out.copy_(fn(*args))
    return fn(*args, out=out)


def _stored(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` contiguous in ``dtype`` (as autograd stores a parameter's gradient without copying it, and as
    torch's vectorised dropout kernel reads its input): ``t`` itself when it already is, else one copy (a
    cast, or the gather of a strided view)."""
    if t.dtype == dtype and t.is_contiguous():
        return t
    return torch.empty(t.shape, dtype=dtype, device=t.device).copy_(t)


def three_dropouts(xb: torch.Tensor, p: float):
    """``(xs, masks)``, three each: ``dropout_m(xb)`` for m = query, key, value, three independent masks drawn
    one after another by ``native_dropout`` on the contiguous ``xb``, as peft's three dropout modules draw
    theirs.  Torch's vectorised kernel runs on a contiguous input; one dropout of the stride-0 view
    ``xb.expand(3, N, d)`` (rounds 6-13) took twice as long on the device (bench/README.md round 14)."""
    pairs = [torch.native_dropout(xb, p, True) for _ in range(3)]
    return tuple(xs for xs, _ in pairs), tuple(mask for _, mask in pairs)


def _dropped_sum(t: torch.Tensor, masks, p: float) -> torch.Tensor:
    """``sum_m dropout_m^T(t[m])`` for ``t`` ``[3, N, d]``: each term is dropout's backward (``t[m] * mask_m / (1 - p)``),
    summed in ``t``'s dtype in place into the first (three kernels and two adds; no ``[3, N, d]`` copy)."""
    scale = 1.0 / (1.0 - p)
    out = torch.ops.aten.native_dropout_backward(t[0], masks[0], scale)
    for m in (1, 2):
        out.add_(torch.ops.aten.native_dropout_backward(t[m], masks[m], scale))
    return out


def _lora_a_and_bias(lora_a, biases, ws, dtype: torch.dtype):
    """``(A, b)`` in ``dtype``: ``A`` ``[3, r, d]`` the stacked ``lora_a`` (``None`` without LoRA) and ``b`` the
    biases side by side, ``[d_q + d_k + d_v]`` (zeros for a missing one; ``None`` when all are).

    In eager mode they are views of one buffer, written by one multi-tensor copy (``torch._foreach_copy_``:
    one kernel for the six casts, where a stack and a cat into another dtype launch one copy per piece;
    bench/README.md section 7, round 15).  While compiling, and with some biases missing, a stack and a cat."""
    device = ws[0].device
    rows = [w.shape[0] for w in ws]
    some, every = any(b is not None for b in biases), all(b is not None for b in biases)
    if torch.compiler.is_compiling() or (some and not every):
        a = None if lora_a is None else _into(torch.empty(3, *lora_a[0].shape, dtype=dtype, device=device),
                                               torch.stack, lora_a)
        if not some:
            return a, None
        bias = torch.empty(sum(rows), dtype=dtype, device=device)
        return a, _into(bias, torch.cat, [b if b is not None else w.new_zeros(w.shape[0]) for b, w in zip(biases, ws)])
    n_a = 0 if lora_a is None else 3 * lora_a[0].numel()
    buf = torch.empty(n_a + (sum(rows) if some else 0), dtype=dtype, device=device)
    a = None if lora_a is None else buf[:n_a].view(3, *lora_a[0].shape)
    bias = buf[n_a:] if some else None
    dst = (list(a.unbind(0)) if a is not None else []) + (list(bias.split(rows)) if some else [])
    src = (list(lora_a) if a is not None else []) + (list(biases) if some else [])
    if dst:
        torch._foreach_copy_(dst, src)
    return a, bias


def _diagonal_blocks(wide: torch.Tensor, rows: int, d: int, r: int) -> torch.Tensor:
    """The ``[3, rows, r]`` view of the diagonal blocks of ``wide``'s LoRA columns (``wide`` ``[3 rows, d + 3r]``,
    a fresh contiguous tensor, storage offset 0): block ``m`` is rows ``m rows ..`` and columns ``d + m r ..``.
    One call, no copy."""
    k = d + 3 * r
    return wide.as_strided((3, rows, r), (rows * k + r, k, 1), d)


def _lora_blocks(wide: torch.Tensor, rows, d: int, r: int) -> list[torch.Tensor]:
    """The three diagonal blocks of ``wide``'s LoRA columns as views, for projections of different widths
    (``wide`` ``[sum rows, d + 3r]``: block ``m`` is rows ``rows[0] + .. + rows[m-1] ..`` and columns ``d + m r ..``)."""
    offsets = [0, rows[0], rows[0] + rows[1]]
    return [wide[off:off + rows[m], d + m * r:d + (m + 1) * r] for m, off in enumerate(offsets)]


def _widened_weight(ws, bls, d: int, r: int, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """``W'`` ``[sum d_m, d + 3r]`` in ``dtype``: the base weights side by side with the block-diagonal
    ``s B_m`` (three operations: the weights cast into place, the LoRA columns zeroed, the scaled ``B_m``
    written onto their diagonal blocks)."""
    rows = [w.shape[0] for w in ws]
    wc = torch.empty(sum(rows), d + 3 * r, dtype=dtype, device=ws[0].device)
    if not r:
        return _into(wc, torch.cat, ws)
    _into(wc.narrow(1, 0, d), torch.cat, ws)
    wc.narrow(1, d, 3 * r).zero_()
    if rows[0] == rows[1] == rows[2]:
        _into(_diagonal_blocks(wc, rows[0], d, r), torch.mul, torch.stack(bls), scale)
    else:
        for block, b in zip(_lora_blocks(wc, rows, d, r), bls):
            _into(block, torch.mul, b, scale)
    return wc


def _lora_b_grads(dwc: torch.Tensor, rows: tuple[int, ...], d: int, r: int, scale: float, dtype: torch.dtype):
    """``dB_m = s dL/d(s B_m)``: the diagonal blocks of ``dW'``'s LoRA columns (``dwc`` ``[sum d_m, d + 3r]``)
    times ``s``, each contiguous in ``dtype`` (one operation when the three blocks have one shape)."""
    if rows[0] == rows[1] == rows[2]:
        out = torch.empty(3, rows[0], r, dtype=dtype, device=dwc.device)
        return _into(out, torch.mul, _diagonal_blocks(dwc, rows[0], d, r), scale).unbind(0)
    return [_into(torch.empty(block.shape, dtype=dtype, device=dwc.device), torch.mul, block, scale)
            for block in _lora_blocks(dwc, rows, d, r)]


class QkvProduct(torch.autograd.Function):
    """``(y_q, y_k, y_v[, H])`` from ``(x, W_q, b_q, W_k, b_k, W_v, b_v, A_q, A_k, A_v, B_q, B_k, B_v, spec)``
    (module docstring).  ``A``/``B`` all ``None``: no LoRA, three outputs.  Biases may be ``None``.
    ``x`` may have any leading shape; the outputs keep it (views of one ``[N, d_q + d_k + d_v]`` product);
    ``H`` is a ``[3, N, r]`` view of the widened input ``X'``.

    Written for few operations per call (the eager bf16 step is bound by the host dispatching them):
    operands cast straight into place with ``out=``; LoRA's scale kept in ``W'`` (``X' = [x | H]``,
    ``W'`` holding ``s B_m``), so the features are written into ``X'`` by their own product; and every
    parameter gradient returned contiguous in its parameter's dtype (``dW`` one cast of ``dW'``'s first
    ``d`` columns, ``dB`` one scaled copy of its diagonal blocks, ``db`` one sum, ``dA`` one cast), which
    autograd then stores without a cast or copy of its own.
    """

    @staticmethod
    def forward(ctx, x, w_q, b_q, w_k, b_k, w_v, b_v, a_q, a_k, a_v, bl_q, bl_k, bl_v, spec: ProductSpec):
        lead, d = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, d)
        n = x2.shape[0]
        ws = (w_q, w_k, w_v)
        lora = a_q is not None
        r = a_q.shape[0] if lora else 0
        dtype = spec.dtype
        k = d + 3 * r
        xc = torch.empty(n, k, dtype=dtype, device=x.device)  # X' = [x | H]
        xd = xc.narrow(1, 0, d) if lora else xc
        a = h = None
        xs = mask = (None,) * 3
        drop = lora and spec.p > 0
        torch_drop = drop and spec.features == "torch"
        # the one cast of the layer input; the torch features drop out a contiguous copy (xd is strided)
        xb = _stored(x2, dtype) if torch_drop else x2
        xd.copy_(xb)
        biases = (b_q, b_k, b_v)
        rows = tuple(w.shape[0] for w in ws)
        a, bias = _lora_a_and_bias((a_q, a_k, a_v) if lora else None, biases, ws, dtype)
        if lora:
            h = xc.as_strided((3, n, r), (r, k, 1), d)  # X''s H columns as [3, N, r], written in place below
            if drop and spec.features == "triton":
                h.copy_(lora_a_kernel.forward_features(xd, a, spec.p, spec.seed,
                                                       spec.config or lora_a_kernel.DEFAULT_CONFIG))
            elif drop:
                xs, mask = three_dropouts(xb, spec.p)
                for m in range(3):
                    _into(h[m], torch.mm, xs[m], a[m].T)
            else:
                _into(xc.narrow(1, d, 3 * r), torch.mm, xd, a.view(3 * r, d).T)
        wc = _widened_weight(ws, (bl_q, bl_k, bl_v), d, r, spec.scale, dtype)
        y = torch.mm(xc, wc.T) if bias is None else torch.addmm(bias, xc, wc.T)
        outs = y.view(*lead, y.shape[1]).split(rows, dim=-1)
        ctx.save_for_backward(xc, wc, a, *xs, *mask)
        dtypes = (w_q.dtype, next((b.dtype for b in biases if b is not None), None),
                  a_q.dtype if lora else None, bl_q.dtype if lora else None)
        ctx.meta = (lead, d, r, rows, x.dtype, drop, spec, tuple(b is not None for b in biases), dtypes)
        ctx.set_materialize_grads(False)
        return (*outs, h) if lora else outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        xc, wc, a, *saved = ctx.saved_tensors
        xs, mask = saved[:3], saved[3:]
        lead, d, r, rows, x_dtype, drop, spec, has_bias, (w_dtype, b_dtype, a_dtype, bl_dtype) = ctx.meta
        need = ctx.needs_input_grad
        n = xc.shape[0]
        dtype = spec.dtype
        dh_ild = grads[3] if r else None
        if all(dy is not None for dy in grads[:3]):
            g = torch.cat(grads[:3], dim=-1).view(n, sum(rows))  # dY [N, d_q + d_k + d_v]
        else:
            g = torch.cat([dy.reshape(n, rows[m]) if dy is not None else xc.new_zeros(n, rows[m])
                           for m, dy in enumerate(grads[:3])], dim=1)
        if g.dtype != dtype:
            g = g.to(dtype)
        need_a = r > 0 and any(need[7:10])
        dxc = torch.mm(g, wc) if (need[0] or need_a) else None  # [N, d + 3r]: dx and dL/dH
        d_w, d_b, d_a, d_bl = [None] * 3, [None] * 3, [None] * 3, [None] * 3
        need_w, need_bl = any(need[i] for i in (1, 3, 5)), r > 0 and any(need[10:13])
        if need_w or need_bl:
            dwc = torch.mm(g.T, xc)  # [D, d + 3r]: every dW and dL/d(s B)
            if need_w:
                dw = _stored(dwc.narrow(1, 0, d), w_dtype).split(rows)
                d_w = [dw[m] if need[1 + 2 * m] else None for m in range(3)]
            if need_bl:
                dbl = _lora_b_grads(dwc, rows, d, r, spec.scale, bl_dtype)
                d_bl = [dbl[m] if need[10 + m] else None for m in range(3)]
        if any(need[2 + 2 * m] and has_bias[m] for m in range(3)):
            db = torch.sum(g, 0, dtype=b_dtype).split(rows)
            d_b = [db[m] if need[2 + 2 * m] and has_bias[m] else None for m in range(3)]
        dx_a = da = None
        if r and (need[0] or need_a):
            xd = xc.narrow(1, 0, d)
            dh = dxc.as_strided((3, n, r), (r, d + 3 * r, 1), d)  # dL/dH from the product, [3, N, r]
            if dh_ild is not None:
                dh = torch.add(dh, dh_ild if dh_ild.dtype == dtype else dh_ild.to(dtype))
            if drop and spec.features == "triton":
                dx_a, da = lora_a_kernel.backward_features(xd, a, dh, spec.p, spec.seed,
                                                           spec.config or lora_a_kernel.DEFAULT_CONFIG, need[0], need_a)
            elif drop:
                if need[0]:
                    dx_a = _dropped_sum(torch.bmm(dh, a), mask, spec.p)
                if need_a:
                    da = torch.empty(3, r, d, dtype=dtype, device=xc.device)
                    for m in range(3):
                        _into(da[m], torch.mm, dh[m].T, xs[m])
            else:
                dh_flat = dh.transpose(0, 1).reshape(n, 3 * r)
                if need[0]:
                    dx_a = dh_flat @ a.view(3 * r, d)
                if need_a:
                    da = (dh_flat.T @ xd).view(3, r, d)
            if da is not None:
                da = _stored(da, a_dtype).unbind(0)
                d_a = [da[m] if need[7 + m] else None for m in range(3)]
        dx = None
        if need[0]:
            dxd = dxc.narrow(1, 0, d)
            if dx_a is not None:
                dx = torch.add(dxd, dx_a, out=torch.empty(n, d, dtype=x_dtype, device=xc.device))
            else:
                dx = dxd.to(x_dtype)
            dx = dx.view(*lead, d)
        return (dx, d_w[0], d_b[0], d_w[1], d_b[1], d_w[2], d_b[2], *d_a, *d_bl, None)


def qkv_product(x: torch.Tensor, linears: tuple[nn.Linear, nn.Linear, nn.Linear], spec: ProductSpec,
                lora: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None):
    """``(y_q, y_k, y_v)``, plus ``H`` ``[3, N, r]`` with ``lora = ((A_q, A_k, A_v), (B_q, B_k, B_v))``."""
    wb = [t for lin in linears for t in (lin.weight, lin.bias)]
    a, bl = lora if lora is not None else ((None,) * 3, (None,) * 3)
    return QkvProduct.apply(x, *wb, *a, *bl, spec)


class PlainQkv:
    """The query/key/value ``nn.Linear`` of every layer of a model without LoRA as one product per layer
    (:class:`QkvProduct` with no LoRA); the query call computes all three, key and value return theirs.

    The comparison a LoRA student's :class:`QkvProduct` deserves: Vanilla KD's student with the same
    one-product projections (``bench/bench_loraild.py --vanilla-qkv product``).  Patches the modules'
    ``forward`` (instance attributes, removed by :meth:`remove`).  Under ``torch.compile`` the modules
    run as they were.
    """

    def __init__(self, layers: nn.ModuleList, names: tuple[str, str, str] = ("query", "key", "value")):
        self.layers = []
        for layer in layers:
            found = {name.rsplit(".", 1)[-1]: mod for name, mod in layer.named_modules()
                     if name.rsplit(".", 1)[-1] in names}
            if set(found) != set(names) or not all(type(found[k]) is nn.Linear for k in names):
                raise ValueError(f"PlainQkv needs plain nn.Linear {names} in every layer (a LoRA model: use "
                                 "FusedLoraRecorder's product)")
            self.layers.append([found[k] for k in names])
        self._inputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._outs: list[tuple[torch.Tensor, ...] | None] = [None] * len(self.layers)
        for li, mods in enumerate(self.layers):
            for mi, m in enumerate(mods):
                m.forward = self._forward(li, mi, m)

    def _forward(self, li: int, mi: int, m: nn.Linear):
        original = type(m).forward.__get__(m)

        def forward(x: torch.Tensor) -> torch.Tensor:
            if torch.compiler.is_compiling():
                return original(x)
            if mi > 0 and self._outs[li] is not None and self._inputs[li] is x:
                return self._outs[li][mi]
            mods = self.layers[li]
            dtype = (torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type)
                     else m.weight.dtype)
            if dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                return original(x)
            self._inputs[li] = x
            self._outs[li] = qkv_product(x, tuple(mods), ProductSpec(dtype=dtype))
            return self._outs[li][mi]

        return forward

    def clear(self) -> None:
        self._inputs = [None] * len(self.layers)
        self._outs = [None] * len(self.layers)

    def remove(self) -> None:
        for mods in self.layers:
            for m in mods:
                m.__dict__.pop("forward", None)
        self.clear()


__all__ = ["FEATURES", "ProductSpec", "QkvProduct", "qkv_product", "three_dropouts", "PlainQkv"]
