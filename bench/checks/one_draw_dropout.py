"""The LoRA-A features of one layer with three dropout masks drawn in one call, against three calls
(bench/README.md section 7, round 16).

The q/k/v product draws its three masks as peft's three modules do, one ``native_dropout`` each, and then
needs one product per module, forward (``H_m = dropout_m(x) A_m^T``) and backward (``dA_m = dH_m^T
dropout_m(x)``), plus three dropout backwards and two adds for ``dx``.  Drawn at once into one ``[3, N,
d]`` mask (``bernoulli_``, then ``x * mask / (1 - p)`` as one broadcast ``native_dropout_backward``), the
features are one batched product each way and ``dx``'s part one dropout backward and one sum.  Masks drawn
so are as independent (Bernoulli(1 - p) per module and element), not the same numbers.

Prints, per variant, the host's CPU time per call (``--tokens`` tokens: the device never holds it back) and
the device time per call (CUDA events over ``--device-tokens`` tokens), forward alone and forward plus
backward, with the features and gradients of the two variants checked against each other for the same masks.

Usage: ``PYTHONPATH=. python bench/checks/one_draw_dropout.py [--tokens 2048] [--device-tokens 16384]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from host_ops import per_call_us  # bench/checks, this script's folder: process CPU time per call

D, R, P = 768, 32, 0.05


def make(n: int, device, dtype=torch.bfloat16):
    k = D + 3 * R
    g = torch.Generator(device=device).manual_seed(0)
    xb = torch.randn(n, D, device=device, generator=g).to(dtype)
    a = (torch.randn(3, R, D, device=device, generator=g) * 0.02).to(dtype)
    xc = torch.empty(n, k, device=device, dtype=dtype)
    dxc = torch.randn(n, k, device=device, generator=g).to(dtype)
    h = xc.as_strided((3, n, R), (R, k, 1), D)
    dh = dxc.as_strided((3, n, R), (R, k, 1), D)
    return xb, a, h, dh


def three(xb, a, h, dh, backward: bool, masks=None):
    """The product's features today: three ``native_dropout`` calls, three products each way."""
    scale = 1.0 / (1.0 - P)
    if masks is None:
        pairs = [torch.native_dropout(xb, P, True) for _ in range(3)]
        xs, masks = [x for x, _ in pairs], [m for _, m in pairs]
    else:
        xs = [torch.ops.aten.native_dropout_backward(xb, m, scale) for m in masks]
    at = a.transpose(1, 2)
    for m in range(3):
        torch.mm(xs[m], at[m], out=h[m])
    if not backward:
        return None
    t = torch.bmm(dh, a)
    dx = torch.ops.aten.native_dropout_backward(t[0], masks[0], scale)
    for m in (1, 2):
        dx.add_(torch.ops.aten.native_dropout_backward(t[m], masks[m], scale))
    da = torch.empty(3, R, D, dtype=a.dtype, device=a.device)
    for m in range(3):
        torch.mm(dh[m].T, xs[m], out=da[m])
    return dx, da


def one(xb, a, h, dh, backward: bool, mask=None):
    """Three masks drawn at once: ``bernoulli_`` into ``[3, N, d]``, one broadcast scale, one product each way."""
    scale = 1.0 / (1.0 - P)
    n = xb.shape[0]
    if mask is None:
        mask = torch.empty(3, n, D, dtype=torch.bool, device=xb.device).bernoulli_(1.0 - P)
    xs = torch.ops.aten.native_dropout_backward(xb.expand(3, n, D), mask, scale)
    torch.bmm(xs, a.transpose(1, 2), out=h)
    if not backward:
        return None
    t = torch.bmm(dh, a)
    dx = torch.ops.aten.native_dropout_backward(t, mask, scale).sum(0)
    da = torch.bmm(dh.transpose(1, 2), xs)
    return dx, da


def device_us(fn, calls: int, samples: int) -> float:
    for _ in range(5):
        fn()
    out = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) / calls * 1e3)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--device-tokens", type=int, default=16384)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--samples", type=int, default=7)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    # the same masks through both: the same features and gradients (to rounding: one sum against two adds)
    xb, a, h, dh = make(64, device, dtype)
    mask = torch.empty(3, 64, D, dtype=torch.bool, device=device).bernoulli_(1.0 - P)
    dx1, da1 = one(xb, a, h, dh, True, mask)
    h1 = h.clone()
    dx3, da3 = three(xb, a, h, dh, True, list(mask.unbind(0)))
    print(f"same masks: features equal {torch.equal(h1, h)}, dA equal {torch.equal(da1, da3)}, "
          f"dx max difference {(dx1.float() - dx3.float()).abs().max().item():.2e} (|dx| {dx3.float().abs().max().item():.2e})")

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"per call, {dtype}, d {D}, r {R}, p {P}; {name}")
    print(f"{'variant':10s} {'host fwd':>9s} {'host f+b':>9s} {'dev fwd':>9s} {'dev f+b':>9s}  (us)")
    small = make(args.tokens, device, dtype)
    big = make(args.device_tokens, device, dtype) if device.type == "cuda" else None
    for label, fn in (("three", three), ("one", one)):
        row = [per_call_us(lambda: fn(*small, b), args.calls, args.samples, sync) for b in (False, True)]
        if big is not None:
            row += [device_us(lambda: fn(*big, b), 50, args.samples) for b in (False, True)]
        print(f"{label:10s} " + " ".join(f"{v:9.1f}" for v in row), flush=True)


if __name__ == "__main__":
    main()
