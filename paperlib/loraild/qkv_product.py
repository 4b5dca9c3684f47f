"""A layer's query, key and value projections, with their LoRA, as one matrix product.

Per layer, with ``x`` ``[N, d]`` the attention input, base weights ``W_m`` ``[d_m, d]`` and biases ``b_m``
for m in (query, key, value), LoRA ``A_m`` ``[r, d]``, ``B_m`` ``[d_m, r]``, ``s = alpha / r`` and, in
training, dropout ``p`` with an independent keep mask per module (the authors' peft LoRA):

    H_m = A_m dropout_m(x)                 the LoRA-A features, eq. 3's record h_x  ([3, N, r] for the three)
    y_m = W_m x + b_m + s B_m H_m          peft's LoRA output

The three outputs are one product of the input widened by the scaled features with a block weight:

    [y_q  y_k  y_v] = X' W'^T + [b_q  b_k  b_v],   X' = [x  sH_q  sH_k  sH_v]   ([N, d + 3r]),
    W' = [[W_q, B_q, 0, 0], [W_k, 0, B_k, 0], [W_v, 0, 0, B_v]]                  ([d_q + d_k + d_v, d + 3r])

and its backward is two products: ``dX' = dY W'`` holds ``dx`` (first ``d`` columns) and ``s^-1 dH``
(the rest; the block structure keeps ``dH_m = s dy_m B_m``), ``dW' = dY^T X'`` holds every ``dW_m`` and
``dB_m = s dy_m^T H_m``.  The features' own backward adds ``dx += sum_m dropout_m^T(dH_m A_m)`` and
``dA_m = dH_m^T dropout_m(x)``, with ``dH_m`` including the ILD loss's gradient.

So the LoRA's ``B`` side costs no kernels of its own: it rides in the q/k/v product (``3r = 96`` more
columns of ``K = 768`` at the paper's sizes), where peft runs three ``addmm`` forward and six products
plus sums backward per layer; and the layer input is cast once for the three projections, not three
times as autocast does for three ``nn.Linear`` calls (and its gradient summed in the product, not as
three casts and two adds).  The features come from torch (``native_dropout`` of three expanded copies,
the masks :class:`~paperlib.loraild.fused_lora.FusedLoraRecorder`'s torch path draws) or from the Triton
op (:mod:`~paperlib.loraild.lora_a_kernel`, masks regenerated in backward).  Without LoRA
(:class:`PlainQkv`) it is just the three base projections as one product.

Arithmetic is in ``dtype`` (autocast's, or the weights'); the input's gradient is returned in the
input's dtype, and parameter gradients in ``dtype`` for autograd to cast to each parameter's (fp32 under
autocast), as autocast's own casts would.  ``tests/loraild/test_loraild_qkv_product.py`` checks outputs
and every gradient against fp64 autograd of peft's formula with the same masks (and ``gradcheck``),
against the composite path of :class:`~paperlib.loraild.fused_lora.FusedLoraRecorder` and against
unpatched ``nn.Linear``.

Measured (``bench/README.md`` section 7, round 12, one H100, 128 x 128 tokens): the LoRAILD step keeps
the device busy 1.11x as long as Vanilla KD's (1.29x with the composite path, on an H200), and takes 1.11x its time
in fp32 and 1.20-1.34x in bf16, where both steps wait on the host (1.30-1.54x with the composite path);
compiled with CUDA graphs, where dynamo traces it (it passes its settings as plain values and writes no
strided ``out=``), 1.16x (1.22x with the composite path).
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


def _widened_weight(ws, bls, r: int, dtype: torch.dtype) -> torch.Tensor:
    """``W'`` ``[sum d_m, d + 3r]``: the base weights side by side with the block-diagonal ``B_m``, cast once."""
    w = torch.cat(ws)
    if r:
        w = torch.cat((w, torch.block_diag(*bls)), dim=1)
    return w.to(dtype)


class QkvProduct(torch.autograd.Function):
    """``(y_q, y_k, y_v[, H])`` from ``(x, W_q, b_q, W_k, b_k, W_v, b_v, A_q, A_k, A_v, B_q, B_k, B_v, spec)``
    (module docstring).  ``A``/``B`` all ``None``: no LoRA, three outputs.  Biases may be ``None``.
    ``x`` may have any leading shape; the outputs keep it (views of one ``[N, d_q + d_k + d_v]`` product).

    Written for few operations per call (the eager bf16 step is bound by the host dispatching them):
    splits rather than slices, and parameter gradients returned in the compute dtype, which autograd
    casts to each parameter's dtype as autocast's own casts would.
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
        xc = torch.empty(n, d + 3 * r, dtype=dtype, device=x.device)  # X' = [x | s H]
        xd, xh = xc.split((d, 3 * r), dim=1) if lora else (xc, None)
        xd.copy_(x2)  # the one cast of the layer input
        a = xs = mask = h = None
        drop = lora and spec.p > 0
        if lora:
            a = torch.stack((a_q, a_k, a_v)).to(dtype)  # [3, r, d]
            if drop and spec.features == "triton":
                h = lora_a_kernel.forward_features(xd, a, spec.p, spec.seed, spec.config or lora_a_kernel.DEFAULT_CONFIG)
            elif drop:
                # three independent masks: the ones F.dropout(x.expand(3, N, d)) draws
                xs, mask = torch.native_dropout(xd.expand(3, n, d), spec.p, True)
                h = torch.bmm(a, xs.transpose(1, 2)).transpose(1, 2)
            else:
                h = (xd @ a.view(3 * r, d).T).view(n, 3, r).transpose(0, 1)
            xh.view(n, 3, r).copy_(h.transpose(0, 1) * spec.scale)
        wc = _widened_weight(ws, (bl_q, bl_k, bl_v), r, dtype)
        biases = (b_q, b_k, b_v)
        if all(b is None for b in biases):
            y = xc @ wc.T
        else:
            bias = torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for b, w in zip(biases, ws)]).to(dtype)
            y = torch.addmm(bias, xc, wc.T)
        rows = tuple(w.shape[0] for w in ws)
        outs = tuple(piece.view(*lead, piece.shape[1]) for piece in y.split(rows, dim=1))
        ctx.save_for_backward(xc, wc, a, xs, mask)
        ctx.meta = (lead, d, r, rows, x.dtype, drop, spec, tuple(b is not None for b in biases))
        ctx.set_materialize_grads(False)
        return (*outs, h) if lora else outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        xc, wc, a, xs, mask = ctx.saved_tensors
        lead, d, r, rows, x_dtype, drop, spec, has_bias = ctx.meta
        need = ctx.needs_input_grad
        n = xc.shape[0]
        dtype = spec.dtype
        dh_ild = grads[3] if r else None
        g = torch.cat([dy.reshape(n, rows[m]) if dy is not None else xc.new_zeros(n, rows[m])
                       for m, dy in enumerate(grads[:3])], dim=1)  # dY [N, d_q + d_k + d_v]
        if g.dtype != dtype:
            g = g.to(dtype)
        need_a = r > 0 and any(need[7:10])
        dxc = g @ wc if (need[0] or need_a) else None  # [N, d + 3r]: dx and s^-1 dH
        dwc = g.T @ xc if any(need[i] for i in (1, 3, 5, 10, 11, 12)) else None  # [D, d + 3r]
        db = g.sum(0).split(rows) if any(need[i] for i in (2, 4, 6)) else (None,) * 3
        dxd, dxh = dxc.split((d, 3 * r), dim=1) if (dxc is not None and r) else (dxc, None)
        dx_a = da = None
        xd = xc.narrow(1, 0, d)
        if r and (need[0] or need_a):
            dh = dxh.view(n, 3, r).transpose(0, 1)
            dh = torch.add(dh_ild.to(dtype), dh, alpha=spec.scale) if dh_ild is not None else dh * spec.scale
            if drop and spec.features == "triton":
                dx_a, da = lora_a_kernel.backward_features(xd, a, dh, spec.p, spec.seed,
                                                           spec.config or lora_a_kernel.DEFAULT_CONFIG, need[0], need_a)
            elif drop:
                if need[0]:
                    dx_a = torch.ops.aten.native_dropout_backward(torch.bmm(dh, a), mask, 1.0 / (1.0 - spec.p)).sum(0)
                if need_a:
                    da = torch.bmm(dh.transpose(1, 2), xs)
            else:
                dh_flat = dh.transpose(0, 1).reshape(n, 3 * r)
                if need[0]:
                    dx_a = dh_flat @ a.view(3 * r, d)
                if need_a:
                    da = (dh_flat.T @ xd).view(3, r, d)
        dx = None
        if need[0]:
            dx = torch.empty(n, d, dtype=x_dtype, device=xc.device)
            if dx_a is not None:
                torch.add(dxd, dx_a, out=dx)  # summed in the compute dtype's opmath, stored in x's dtype
            else:
                dx.copy_(dxd)
            dx = dx.view(*lead, d)
        d_w, d_bl = [None] * 3, [None] * 3
        if dwc is not None:
            for m, piece in enumerate(dwc.split(rows)):
                cols = piece.split((d, r, r, r), dim=1) if r else (piece,)
                d_w[m] = cols[0] if need[1 + 2 * m] else None
                d_bl[m] = cols[1 + m] if r and need[10 + m] else None
        d_b = [db[m] if need[2 + 2 * m] and has_bias[m] else None for m in range(3)]
        d_a = list(da.unbind(0)) if da is not None else [None] * 3
        d_a = [d_a[m] if need[7 + m] else None for m in range(3)]
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


__all__ = ["FEATURES", "ProductSpec", "QkvProduct", "qkv_product", "PlainQkv"]
