"""Device launches and host calls per training step, per method: the host's work counted rather than timed
(bench/README.md section 7, round 15).

On the shared GPU hosts even a process's CPU time per step moves by a third from one run to the next (other
tenants share the cores' caches), so a few percent of host work cannot be timed there.  It can be counted:
each method's steps run under ``torch.profiler`` as ``bench_loraild.bench_method`` runs them, and the
CUDA runtime and driver calls that launch work on the device (kernels, memsets, copies) are counted per
step, with the ATen operators the host dispatched (top level: the calls made from Python or from a C++
operator such as the q/k/v product, not the ones an operator makes inside itself).

Usage: ``PYTHONPATH=.:bench python bench/checks/launches_per_step.py [--batch 16] [--steps 10]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_loraild as bl  # noqa: E402
from paperlib.loraild import qkv_native  # noqa: E402

#: CUDA runtime and driver calls that put work on the device's queue
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaMemsetAsync",
            "cudaMemcpyAsync", "cudaGraphLaunch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="steps counted (the difference of two runs)")
    ap.add_argument("--methods", nargs="+", default=["vanilla_kd", "loraild_fixed", "loraild_average",
                                                      "loraild_random_step"])
    ap.add_argument("--tiny", action="store_true", help="2-layer models (a smoke test, e.g. on the CPU)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # on the CPU: aten ops only
    if device.type == "cuda":
        qkv_native.available()
    t_cfg, s_cfg = bl.model_configs(args.tiny)
    run = bl.step_args(args.batch, args.seq, 2, warmup=3)
    teacher, split, cache = bl.cached_teacher(t_cfg, args.batch * (run.warmup + 2 + args.steps), args.seq, device)
    print(f"per training step (bf16, batch {args.batch} x {args.seq}, cached teacher, eager; {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; "
          f"the counts of a run of {run.warmup + 2 + args.steps} steps less those of one of {run.warmup + 2}, over "
          f"{args.steps}: building the model and the optimizer's first step are in both)")
    print(f"{'method':22s} {'launches':>9s} {'kernels':>8s} {'aten ops':>9s}  launches by call")

    def count(name: str, steps: int) -> tuple[Counter, int]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            bl.bench_method(name, "cached", True, teacher, None, t_cfg, s_cfg, split, cache,
                            bl.step_args(args.batch, args.seq, steps, warmup=run.warmup), device)
        launches, ops = Counter(), 0
        for e in prof.events():
            if e.name in LAUNCHES:
                launches[e.name] += 1
            elif e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")):
                ops += 1
        return launches, ops

    base = None
    for name in args.methods:
        count(name, 2)  # warm (allocator, cuBLAS, the C++ product)
        (l_short, o_short), (l_long, o_long) = count(name, 2), count(name, 2 + args.steps)
        launches = Counter({k: (l_long[k] - l_short[k]) / args.steps for k in l_long})
        kernels = sum(v for k, v in launches.items() if "Launch" in k and k != "cudaGraphLaunch")
        row = (sum(launches.values()), kernels, (o_long - o_short) / args.steps)
        base = base or row
        print(f"{name:22s} {row[0]:9.1f} {row[1]:8.1f} {row[2]:9.1f}  "
              + ", ".join(f"{k} {v:.1f}" for k, v in launches.most_common() if v)
              + ("" if row is base or not base[2] else f"   ({row[0] / max(base[0], 1e-9):.3f}x {args.methods[0]}'s "
                                                       f"launches, {row[2] / base[2]:.3f}x its aten ops)"), flush=True)


if __name__ == "__main__":
    main()
