"""GPU micro-benchmark: the fused LoRA's A features under dropout, torch path vs the Triton op.

One layer's ``H[c] = dropout_c(x) A[c]^T`` (``x`` ``[N, d]``, ``A`` ``[3, r, d]``, three independent
masks), forward + backward (gradients of ``x`` and ``A``), timed two ways:

- ``torch``: ``FusedLoraRecorder``'s torch path (:func:`~paperlib.loraild.fused_lora.dropout_lora_a_torch`);
- ``triton``: :func:`paperlib.loraild.lora_a_kernel.dropout_lora_a` (masks in registers).

Each is timed with CUDA events (warm-up, then the median of ``--repeats`` means of ``--iters``
steps).  The Triton result is checked against a torch reference built with the op's own masks
(:func:`~paperlib.loraild.lora_a_kernel.dropout_masks`): max abs error of ``H``, ``dx``, ``dA``.

Usage: ``PYTHONPATH=. python bench/checks/lora_a_kernel.py [--json PATH]`` on a GPU
(N = 4096 and 16384, d = 768, r = 32, p = 0.05, bf16 and fp32).
``TRITON_INTERPRET=1 PYTHONPATH=. python bench/checks/lora_a_kernel.py --tiny`` runs a small size on the
CPU in Triton's interpreter: a smoke test of the script and the check; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from paperlib.loraild import lora_a_kernel as K
from paperlib.loraild.fused_lora import dropout_lora_a_torch as torch_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared timing helpers
from timing import cuda_ms  # noqa: E402


def triton_path(x: torch.Tensor, a: torch.Tensor, p: float, config: K.Config = K.DEFAULT_CONFIG) -> torch.Tensor:
    return K.dropout_lora_a(x, a, p, config=config)


SWEEP = [K.Config(fwd_block_n=bn, fwd_block_k=bk, fwd_warps=w) for bn in (32, 64, 128) for bk in (64, 128, 256)
         for w in (4, 8)] + \
        [K.Config(bwd_block_n=bn, bwd_block_k=bk, bwd_warps=w, bwd_stages=s) for bn in (32, 64, 128) for bk in (64, 128)
         for w in (4, 8) for s in (2, 3)] + \
        [K.Config(bwd_programs_per_sm=k) for k in (1, 4, 8)]


def time_ms(fn, device: torch.device, iters: int, repeats: int, warmup: int) -> float:
    """Median over ``repeats`` of the mean ms of ``fn()`` over ``iters`` calls (CUDA events; wall clock on CPU)."""
    for _ in range(warmup):
        fn()
    means = []
    for _ in range(repeats):
        if device.type == "cuda":
            means.append(cuda_ms(fn, iters=iters, warmup=0))
        else:
            t = time.perf_counter()
            for _ in range(iters):
                fn()
            means.append((time.perf_counter() - t) * 1e3 / iters)
    return statistics.median(means)


def max_errors(x: torch.Tensor, a: torch.Tensor, g: torch.Tensor, p: float, seed: int = 12345) -> dict[str, float]:
    """Max abs error of the op's ``H``, ``dx``, ``dA`` against fp32 torch with the op's masks (same inputs)."""
    xk, ak = x.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    h = K.dropout_lora_a(xk, ak, p, seed=seed)
    h.backward(g)
    m = K.dropout_masks(seed, x.shape[0], x.shape[1], p, x.device)
    xr, ar = x.detach().float().requires_grad_(), a.detach().float().requires_grad_()
    hr = torch.bmm(xr * m / (1 - p), ar.transpose(1, 2))
    hr.backward(g.float())
    return {"h": (h.float() - hr).abs().max().item(), "dx": (xk.grad.float() - xr.grad).abs().max().item(),
            "dA": (ak.grad.float() - ar.grad).abs().max().item(), "h_max": hr.abs().max().item(),
            "dx_max": xr.grad.abs().max().item(), "dA_max": ar.grad.abs().max().item()}


def bench_one(n: int, d: int, r: int, dtype: torch.dtype, p: float, device: torch.device,
              iters: int, repeats: int, warmup: int) -> dict:
    x = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
    a = (torch.randn(3, r, d, device=device, dtype=dtype) / d**0.5).requires_grad_()
    g = torch.randn(3, n, r, device=device, dtype=dtype)
    row = {"n": n, "d": d, "r": r, "p": p, "dtype": str(dtype).removeprefix("torch.")}
    for name, fn in (("torch", torch_path), ("triton", triton_path)):
        def step(fn=fn):
            fn(x, a, p).backward(g)
        row[f"{name}_ms"] = time_ms(step, device, iters, repeats, warmup)
    row["ratio"] = row["torch_ms"] / row["triton_ms"]
    row["max_abs_err"] = max_errors(x, a, g, p)
    return row


def sweep(n: int, d: int, r: int, dtype: torch.dtype, p: float, device: torch.device,
          iters: int, repeats: int) -> list[dict]:
    """Forward + backward ms of the Triton op under each of :data:`SWEEP`'s configs (defaults elsewhere)."""
    x = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
    a = (torch.randn(3, r, d, device=device, dtype=dtype) / d**0.5).requires_grad_()
    g = torch.randn(3, n, r, device=device, dtype=dtype)
    rows = []
    for cfg in SWEEP:
        changed = {k: v for k, v in dataclasses.asdict(cfg).items() if getattr(K.DEFAULT_CONFIG, k) != v}
        try:
            ms = time_ms(lambda: triton_path(x, a, p, cfg).backward(g), device, iters, repeats, 3)
        except Exception as err:  # e.g. triton's OutOfResources: the tiles need more shared memory than an SM has
            rows.append({"config": dataclasses.asdict(cfg), "ms": None, "error": type(err).__name__})
            print(f"  skipped ({type(err).__name__})  {changed}", flush=True)
            continue
        rows.append({"config": dataclasses.asdict(cfg), "ms": ms})
        print(f"  {ms:.4f} ms  {changed or 'default'}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--tiny", action="store_true",
                    help="one small size (CPU: Triton's interpreter; timings meaningless)")
    ap.add_argument("--p", type=float, default=0.05, help="LoRA dropout (the paper's runs: 0.05)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sweep", action="store_true", help="also time the op's tile configs (bf16, N = 16384)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny and device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    probe = torch.empty(0, device=device)
    if not K.available(probe):
        sys.exit(f"the Triton op cannot run here: {K.unavailable_reason(probe)}")
    if args.tiny:
        sizes, dtypes, iters, repeats, warmup = [(96, 80, 8)], [torch.float32, torch.bfloat16], 1, 1, 1
    else:
        if device.type != "cuda":
            sys.exit("the benchmark needs CUDA (use --tiny for the CPU smoke test)")
        sizes = [(4096, 768, 32), (16384, 768, 32)]
        dtypes, iters, repeats, warmup = [torch.bfloat16, torch.float32], args.iters, args.repeats, 5
    head = torch.cuda.get_device_name() if device.type == "cuda" else "CPU, Triton interpreter: timings meaningless"
    import triton

    print(f"{head}; torch {torch.__version__}, triton {triton.__version__}; fp32 matmul precision "
          f"{torch.get_float32_matmul_precision()}")
    rows = []
    for dtype in dtypes:
        for n, d, r in sizes:
            row = bench_one(n, d, r, dtype, args.p, device, iters, repeats, warmup)
            rows.append(row)
            e = row["max_abs_err"]
            print(f"{row['dtype']:9s} N={n:6d} d={d} r={r}: torch {row['torch_ms']:.3f} ms"
                  f"  triton {row['triton_ms']:.3f} ms"
                  f"  ratio {row['ratio']:.2f}x   max abs err H {e['h']:.2e} (of {e['h_max']:.2f})"
                  f" dx {e['dx']:.2e} (of {e['dx_max']:.2f}) dA {e['dA']:.2e} (of {e['dA_max']:.2f})"
                  f"   (one layer, forward + backward)")
    swept = []
    if args.sweep:
        n, d, r = sizes[-1]
        print(f"sweep: bf16 N={n} d={d} r={r}, the Triton op forward + backward")
        swept = sweep(n, d, r, torch.bfloat16, args.p, device, iters, repeats)
    if args.json:
        meta = {"device": head, "torch": torch.__version__, "triton": triton.__version__, "tiny": args.tiny}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "sweep": swept}, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
