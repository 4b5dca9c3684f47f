"""A layer's whole q/k/v LoRA branch under dropout as one autograd node (the Triton features inside).

Per layer, with ``x`` ``[N, d]`` the attention input, the base outputs ``y0_m = W_m x + b_m`` (the
peft modules' ``base_layer``, computed as in any student), ``A = [A_q; A_k; A_v]`` ``[3, r, d]``,
``B_m`` ``[d_m, r]``, dropout ``p`` with keep masks ``m_c`` and LoRA's scale ``s = alpha / r``:

- forward:  ``H[c] = (m_c * x) A[c]^T / (1 - p)``  (:func:`~paperlib.loraild.lora_a_kernel.forward_features`,
  the record ``h_x`` of eq. 3) and ``y_m = y0_m + s H[m] B_m^T`` (``addmm``, ``alpha = s``);
- backward, from ``dy_m`` and the ILD loss's ``dH_ild``:
  ``dy0_m = dy_m``;  ``dB_m = s dy_m^T H[m]``;  ``dH[m] = s dy_m B_m + dH_ild[m]``;
  ``dx, dA`` from ``dH`` (:func:`~paperlib.loraild.lora_a_kernel.backward_features`, masks drawn again).

This is the arithmetic of :class:`~paperlib.loraild.fused_lora.FusedLoraRecorder`'s composite path
(stack and casts of the weights, the Triton op, scaling, unbind, three ``addmm``, views: about 20
autograd nodes per layer and as many again in backward) in one node whose backward is about 15 plain
tensor calls.  The weights are cast to the compute dtype inside (autocast's value) and their gradients
are returned in fp32 straight from the kernels' fp32 sums.  The masks are the op's for the same seed,
so a run is the same as with the composite path to rounding (``tests/loraild/test_loraild_lora_branch.py``).
Measured on an H100 (bf16, 128 x 128, ``bench/README.md`` section 7, round 9), the step was not
measurably faster than with the composite path (34.2 against 34.8 ms, medians of five repeats).
"""

from __future__ import annotations

import torch

from paperlib.loraild import lora_a_kernel


class LoraBranch(torch.autograd.Function):
    """``(y_q, y_k, y_v, H)`` from ``(x, y0_q, y0_k, y0_v, A_q, A_k, A_v, B_q, B_k, B_v)`` (module docstring).

    ``x`` and the ``y0_m`` may have any leading shape (``[B, T, d]``); the outputs keep the ``y0_m``'s.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y0_q: torch.Tensor, y0_k: torch.Tensor, y0_v: torch.Tensor,
                a_q: torch.Tensor, a_k: torch.Tensor, a_v: torch.Tensor,
                b_q: torch.Tensor, b_k: torch.Tensor, b_v: torch.Tensor,
                p: float, seed: int, scale: float, dtype: torch.dtype, cfg: lora_a_kernel.Config):
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)
        a = torch.stack((a_q, a_k, a_v)).to(dtype)
        bs = (b_q.to(dtype), b_k.to(dtype), b_v.to(dtype))
        h = lora_a_kernel.forward_features(x2, a, p, seed, cfg)  # [3, N, r]
        outs = []
        for m, (y0, b) in enumerate(zip((y0_q, y0_k, y0_v), bs)):
            y = torch.addmm(y0.reshape(-1, y0.shape[-1]).to(dtype), h[m], b.T, alpha=scale)
            outs.append(y.view(y0.shape))
        ctx.save_for_backward(x2, a, h, *bs)
        ctx.p, ctx.seed, ctx.scale, ctx.cfg = p, seed, scale, cfg
        ctx.x_meta = (x.shape, x.dtype)
        ctx.y0_dtypes = (y0_q.dtype, y0_k.dtype, y0_v.dtype)
        ctx.param_dtypes = (a_q.dtype, b_q.dtype)
        ctx.set_materialize_grads(False)
        return (*outs, h)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy_q, dy_k, dy_v, dh_ild):
        x2, a, h, *bs = ctx.saved_tensors
        s = ctx.scale
        need = ctx.needs_input_grad
        dys = (dy_q, dy_k, dy_v)
        dh = torch.zeros_like(h) if any(g is None for g in dys) else torch.empty_like(h)
        dbs: list[torch.Tensor | None] = [None, None, None]
        for m, (g, b) in enumerate(zip(dys, bs)):
            if g is None:
                continue
            g2 = g.reshape(-1, g.shape[-1]).to(h.dtype)
            torch.mm(g2, b, out=dh[m])  # dy_m B_m (scaled below, once for the three)
            if need[7 + m]:
                db = torch.mm(g2.T, h[m]).to(ctx.param_dtypes[1])
                dbs[m] = db.mul_(s)
        dh = dh.mul_(s) if dh_ild is None else torch.add(dh_ild.to(h.dtype), dh, alpha=s)
        need_da = any(need[4:7])
        dx, da = lora_a_kernel.backward_features(x2, a, dh, ctx.p, ctx.seed, ctx.cfg, need[0], need_da,
                                                 da_dtype=ctx.param_dtypes[0])
        x_shape, x_dtype = ctx.x_meta
        if dx is not None:
            dx = dx.view(x_shape).to(x_dtype)
        das = da.unbind(0) if da is not None else (None, None, None)
        dy0 = tuple(None if (g is None or not need[1 + m]) else g.to(ctx.y0_dtypes[m])
                    for m, g in enumerate(dys))
        return (dx, *dy0, *(das[m] if need[4 + m] else None for m in range(3)), *dbs, None, None, None, None, None)


def lora_branch(x: torch.Tensor, y0: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                a: tuple[torch.Tensor, torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                p: float, scale: float, dtype: torch.dtype, *, seed: int | None = None,
                config: lora_a_kernel.Config = lora_a_kernel.DEFAULT_CONFIG):
    """``(y_q, y_k, y_v, H)``: the layer's LoRA outputs and its ``[3, N, r]`` features, one autograd node.

    ``dtype`` is the compute dtype (autocast's, or ``x``'s); ``seed`` picks the masks
    (:func:`~paperlib.loraild.lora_a_kernel.draw_seed` when ``None``, as the op itself draws it).
    """
    if x.shape[-1] != a[0].shape[-1] or len({t.shape for t in a}) != 1:
        raise ValueError(f"expected x [..., d] and three A [r, d], got {tuple(x.shape)} and {[tuple(t.shape) for t in a]}")
    if dtype not in lora_a_kernel.DTYPES:
        raise ValueError(f"dtype {dtype} is not one of {lora_a_kernel.DTYPES}")
    lora_a_kernel.check_op(x, p)
    seed = lora_a_kernel.resolve_seed(seed)
    return LoraBranch.apply(x, *y0, *a, *b, float(p), seed, float(scale), dtype, config)


__all__ = ["LoraBranch", "lora_branch"]
