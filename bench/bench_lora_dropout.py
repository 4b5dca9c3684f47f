"""Device time of the fused LoRA's dropped-out A features, forward and backward, for ways of drawing the
three masks (bench/README.md section 7, round 14).

Per layer (``x`` ``[N, d]``, ``A`` ``[3, r, d]``, dropout ``p``): ``H[m] = dropout_m(x) A[m]^T`` and, backward,
``dx = sum_m dropout_m^T(dH[m] A[m])``, ``dA[m] = dH[m]^T dropout_m(x)``.  Variants:

- ``expand``: one ``native_dropout`` of the stride-0 view ``x.expand(3, N, d)`` (rounds 12-13);
- ``contiguous``: the same of a contiguous ``[3, N, d]`` copy of ``x`` (torch's vectorised dropout kernel);
- ``three``: three ``native_dropout`` calls on ``x`` itself, three products into ``H``'s slices;
- ``triton``: :mod:`paperlib.loraild.lora_a_kernel` (masks in registers), where triton runs.

Prints one JSON line per variant: median device milliseconds per forward+backward over ``--iters``, the
forward alone, and the ratio to ``expand`` measured in this run.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics

import torch
from timing import cuda_ms


def _one_dropout(x, a, p, dh, contiguous: bool = False):
    """One ``native_dropout`` of the three copies ``x.expand(3, N, d)`` (made contiguous first when asked)."""
    copies = x.expand(3, *x.shape)
    xs, mask = torch.native_dropout(copies.contiguous() if contiguous else copies, p, True)
    h = torch.bmm(xs, a.transpose(1, 2))
    if dh is None:
        return h
    dx = torch.ops.aten.native_dropout_backward(torch.bmm(dh, a), mask, 1.0 / (1.0 - p)).sum(0)
    da = torch.bmm(dh.transpose(1, 2), xs)
    return dx, da


def _three(x, a, p, dh):
    n, r = x.shape[0], a.shape[1]
    pairs = [torch.native_dropout(x, p, True) for _ in range(3)]
    h = torch.empty(3, n, r, dtype=x.dtype, device=x.device)
    for m, (xs, _) in enumerate(pairs):
        torch.mm(xs, a[m].T, out=h[m])
    if dh is None:
        return h
    s = 1.0 / (1.0 - p)
    dx = torch.ops.aten.native_dropout_backward(dh[0] @ a[0], pairs[0][1], s)
    for m in (1, 2):
        dx += torch.ops.aten.native_dropout_backward(dh[m] @ a[m], pairs[m][1], s)
    da = torch.stack([dh[m].T @ pairs[m][0] for m in range(3)])
    return dx, da


def _triton(x, a, p, dh):
    from paperlib.loraild import lora_a_kernel

    cfg = lora_a_kernel.DEFAULT_CONFIG
    h = lora_a_kernel.forward_features(x, a, p, 1234, cfg)
    if dh is None:
        return h
    return lora_a_kernel.backward_features(x, a, dh, p, 1234, cfg, True, True)


def _parts(x, a, p, dh, iters):
    """Median device milliseconds of each kernel the variants are made of."""
    n, d = x.shape
    s = 1.0 / (1.0 - p)
    xe = x.expand(3, n, d).contiguous()
    xs, mask = torch.native_dropout(xe, p, True)
    three = [torch.native_dropout(x, p, True) for _ in range(3)]
    h = torch.empty(3, n, a.shape[1], dtype=x.dtype, device=x.device)
    t = torch.bmm(dh, a)
    at = a.transpose(1, 2)
    wide = torch.empty(n, d + 3 * a.shape[1], dtype=x.dtype, device=x.device)
    x32 = x.float()
    dx32 = torch.empty(n, d, dtype=torch.float32, device=x.device)
    da = torch.empty(3, a.shape[1], d, dtype=x.dtype, device=x.device)
    parts = {
        "dropout_expand": lambda: torch.native_dropout(x.expand(3, n, d), p, True),
        "dropout_contiguous": lambda: torch.native_dropout(xe, p, True),
        "dropout_three": lambda: [torch.native_dropout(x, p, True) for _ in range(3)],
        "bernoulli_bool": lambda: torch.empty(3, n, d, dtype=torch.bool, device=x.device).bernoulli_(1 - p),
        "copy_expand": lambda: x.expand(3, n, d).contiguous(),
        "dropout_three_strided": lambda: [torch.native_dropout(wide.narrow(1, 0, d), p, True) for _ in range(3)],
        "cast_fp32_to_bf16": lambda: x32.to(x.dtype),
        "copy_fp32_into_strided": lambda: wide.narrow(1, 0, d).copy_(x32),
        "copy_bf16_into_strided": lambda: wide.narrow(1, 0, d).copy_(x),
        "dropout_backward_three": lambda: [torch.ops.aten.native_dropout_backward(t[m], three[m][1], s)
                                           for m in range(3)],
        "add_chain_inplace": lambda: t[0].clone().add_(t[1]).add_(t[2]),
        "add_into_fp32": lambda: torch.add(wide.narrow(1, 0, d), t[0], out=dx32),
        "mm3_da_out": lambda: [torch.mm(dh[m].T, three[m][0], out=da[m]) for m in range(3)],
        "cat3": lambda: torch.cat([x, x, x]),
        "dropout_cat3": lambda: torch.native_dropout(torch.cat([x, x, x]).view(3, n, d), p, True),
        "mul_bool_mask": lambda: torch.mul(x, mask),
        "sum0_fp32": lambda: torch.sum(t, 0, dtype=torch.float32),
        "add_chain": lambda: torch.add(t[0], t[1]).add_(t[2]),
        "bmm_h": lambda: torch.bmm(xs, at),
        "bmm_h_contiguous_a": lambda: torch.bmm(xs, at.contiguous()),
        "mm3_h": lambda: [torch.mm(three[m][0], a[m].T, out=h[m]) for m in range(3)],
        "bmm_dh_a": lambda: torch.bmm(dh, a),
        "dropout_backward": lambda: torch.ops.aten.native_dropout_backward(t, mask, s),
        "dropout_backward_three_inplace": lambda: [torch.ops.aten.native_dropout_backward.out(
            t[m], three[m][1], s, out=t[m]) for m in range(3)],
        "sum0": lambda: t.sum(0),
        "bmm_da": lambda: torch.bmm(dh.transpose(1, 2), xs),
        "mm3_da": lambda: [dh[m].T @ three[m][0] for m in range(3)],
    }
    return {name: round(_time(fn, iters), 4) for name, fn in parts.items()}


VARIANTS = {"expand": _one_dropout, "contiguous": functools.partial(_one_dropout, contiguous=True), "three": _three, "triton": _triton}


def _time(fn, iters: int, reps: int = 10) -> float:
    """Median device milliseconds of one ``fn()``: ``iters`` samples of :func:`timing.cuda_ms`, each ``reps``
    calls queued back to back between two CUDA events (so the device never waits on the host launching them)."""
    return statistics.median(cuda_ms(fn, reps, warmup=0) for _ in range(iters))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=128 * 128)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--r", type=int, default=32)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--parts", action="store_true", help="also time each kernel the variants are made of")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_lora_dropout: needs a CUDA device")
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    x = torch.randn(args.tokens, args.d, device=dev, dtype=dt)
    a = torch.randn(3, args.r, args.d, device=dev, dtype=dt) / args.d ** 0.5
    dh = torch.randn(3, args.tokens, args.r, device=dev, dtype=dt)
    base = None
    for name in args.variants:
        fn = VARIANTS[name]
        try:
            for _ in range(3):
                fn(x, a, args.p, dh)
            both = _time(lambda: fn(x, a, args.p, dh), args.iters)
            fwd = _time(lambda: fn(x, a, args.p, None), args.iters)
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run here is reported, not fatal
            print(json.dumps({"variant": name, "error": f"{type(exc).__name__}: {exc}"[:200]}))
            continue
        base = both if name == "expand" else base
        print(json.dumps({"variant": name, "tokens": args.tokens, "d": args.d, "r": args.r, "p": args.p,
                          "fwd_bwd_ms": round(both, 4), "fwd_ms": round(fwd, 4),
                          "ratio_to_expand": round(both / base, 3) if base else None,
                          "card": torch.cuda.get_device_name()}))
    if args.parts:
        print(json.dumps({"parts_ms": _parts(x, a, args.p, dh, args.iters), "tokens": args.tokens}))


if __name__ == "__main__":
    main()
