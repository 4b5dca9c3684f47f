"""A/B of two versions of the q/k/v product (:mod:`paperlib.loraild.qkv_product`) on one GPU, in one process.

``--old`` names another version's ``qkv_product.py`` (e.g. ``git show cacaf3d:paperlib/loraild/qkv_product.py
> /tmp/qkv_old.py``); the working tree's is "new".  Prints, from one run:

- how far the two agree at the paper's sizes in bf16 without dropout (outputs and every gradient);
- host-bound micro-benchmark: one layer's q/k/v forward and backward at tiny sizes (16 x 64, r = 4), where
  the time is the host's: three ``nn.Linear`` under autocast, each version without LoRA and with LoRA and
  dropout (microseconds per forward + backward, median of interleaved repeats);
- the stage-2 step of Vanilla KD and of LoRAILD Fixed with each version's ``QkvProduct`` (the same
  :class:`~paperlib.loraild.fused_lora.FusedLoraRecorder`), bf16, cached teacher, 128 x 128, interleaved
  repeats: medians, the median of each repeat against the Vanilla KD row timed just before it, and the
  fastest repeats.

Usage: ``PYTHONPATH=. python bench/ab_qkv_product.py --old /tmp/qkv_old.py [--repeats 15] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time

import torch
from torch import nn

import bench_loraild as B
from paperlib.loraild import fused_lora, qkv_product as new


def load_old(path: str):
    spec = importlib.util.spec_from_file_location("qkv_product_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["qkv_product_old"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def layer(d: int, r: int, dev):
    lins = tuple(nn.Linear(d, d, device=dev) for _ in range(3))
    a = tuple(nn.Parameter(torch.randn(r, d, device=dev) * 0.05) for _ in range(3))
    b = tuple(nn.Parameter(torch.randn(d, r, device=dev) * 0.05) for _ in range(3))
    return lins, a, b


def agree(old, dev) -> float:
    """Largest difference of the two versions' outputs and gradients, relative to each tensor's largest entry."""
    torch.manual_seed(0)
    lins, a, b = layer(768, 32, dev)
    x = torch.randn(4096, 768, requires_grad=True, device=dev)
    params = [x] + [p for lin in lins for p in lin.parameters()] + list(a) + list(b)
    got = {}
    for name, mod in (("old", old), ("new", new)):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            *ys, h = mod.qkv_product(x, lins, mod.ProductSpec(p=0.0, scale=2.0, dtype=torch.bfloat16), (a, b))
        loss = sum((y.float() ** 2).sum() for y in ys) + (h.float() ** 2).sum()
        got[name] = [y.detach().float() for y in ys] + list(torch.autograd.grad(loss, params))
    return max(float((u - v).abs().max() / v.abs().max().clamp_min(1e-30)) for u, v in zip(got["old"], got["new"]))


def micro(old, dev, n: int = 16, d: int = 64, r: int = 4, iters: int = 200, repeats: int = 7) -> dict[str, float]:
    lins, a, b = layer(d, r, dev)
    x0 = torch.randn(n, d, requires_grad=True, device=dev)
    params = [x0] + [p for lin in lins for p in lin.parameters()] + list(a) + list(b)

    def run(mod, kind):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            x = x0 * 1.0
            if kind == "linear":
                outs = [lin(x) for lin in lins]
            elif kind == "plain":
                outs = list(mod.qkv_product(x, lins, mod.ProductSpec(dtype=torch.bfloat16)))
            else:
                outs = list(mod.qkv_product(x, lins, mod.ProductSpec(p=0.1, scale=2.0, dtype=torch.bfloat16), (a, b)))
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        for p in params:
            p.grad = None

    rows = [("three nn.Linear", None, "linear"), ("old, no LoRA", old, "plain"), ("new, no LoRA", new, "plain"),
            ("old, LoRA + dropout", old, "lora"), ("new, LoRA + dropout", new, "lora")]
    res: dict[str, list[float]] = {}
    for _ in range(repeats):
        for label, mod, kind in rows:
            for _ in range(10):
                run(mod, kind)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(iters):
                run(mod, kind)
            torch.cuda.synchronize()
            res.setdefault(label, []).append(1e6 * (time.perf_counter() - t) / iters)
    return {k: statistics.median(v) for k, v in res.items()}


def steps(old, dev, repeats: int) -> dict:
    args = B.step_args(128, 128, 20)
    t_cfg, s_cfg = B.model_configs()
    teacher, split, cache = B.cached_teacher(t_cfg, args.batch * (args.steps + args.warmup), args.seq, dev)
    del teacher
    torch.cuda.empty_cache()
    rows = [("Vanilla KD", "vanilla_kd", "linear", None), ("LoRAILD, new product", "loraild_fixed", "fused", new),
            ("LoRAILD, old product", "loraild_fixed", "fused", old)]
    res: dict[str, list[float]] = {}
    try:
        for rep in range(repeats):
            for label, method, path, mod in rows:
                if mod is not None:
                    fused_lora.QkvProduct = mod.QkvProduct
                r = B.bench_method(method, "cached", True, None, None, t_cfg, s_cfg, split, cache, args, dev, path)
                res.setdefault(label, []).append(1e3 * r["step_s_median_interval"])
                print(f"{label:24s} {1e3 * r['step_s_median_interval']:6.2f} ms (median interval; repeat {rep + 1})",
                      flush=True)
    finally:
        fused_lora.QkvProduct = new.QkvProduct
    base = res["Vanilla KD"]
    return {k: {"median_ms": statistics.median(v), "repeats_ms": v,
                "ratio": statistics.median(v) / statistics.median(base),
                "ratio_paired_median": statistics.median([x / y for x, y in zip(v, base)]),
                "ratio_fastest": min(v) / min(base)} for k, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="another version's qkv_product.py")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved repeats of the step table (0: none)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("ab_qkv_product.py needs a CUDA GPU")
    dev = torch.device("cuda")
    old = load_old(args.old)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "old": args.old}
    out["agree_max_relative"] = agree(old, dev)
    print(f"old vs new, bf16, no dropout: outputs and gradients differ by at most {out['agree_max_relative']:.2e} "
          "of each tensor's largest entry", flush=True)
    out["host_bound_us"] = micro(old, dev)
    for k, v in out["host_bound_us"].items():
        print(f"host-bound layer (16 x 64, r 4), {k:22s} {v:7.1f} us per forward + backward", flush=True)
    if args.repeats:
        out["steps"] = steps(old, dev, args.repeats)
        for k, v in out["steps"].items():
            print(f"{k:24s} median {v['median_ms']:6.2f} ms  against Vanilla KD: {v['ratio']:.3f} (medians), "
                  f"{v['ratio_paired_median']:.3f} (paired repeats), {v['ratio_fastest']:.3f} (fastest repeats)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
