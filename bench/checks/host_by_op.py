"""Where a method's extra host work goes: the host's calls per training step by name, side by side
(bench/README.md section 7, round 16).

Each method's steps run under ``torch.profiler`` (CPU activity) as ``bench_loraild.bench_method`` runs them;
every profiler event (ATen operators, autograd nodes and their engine calls, CUDA runtime calls) is summed by
name, count and self CPU time, per step, as the difference of a long and a short run (so model building and
the first steps drop out; events whose count does not grow with the steps are left out).  The profiler adds its own cost to every event, so the absolute times are
inflated; the counts are exact, and the rows with the largest difference in self time show where the second
method's extra host work sits.

Usage: ``PYTHONPATH=.:bench python bench/checks/host_by_op.py [--batch 16] [--steps 10] [--top 40]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_loraild as bl  # noqa: E402
from paperlib.loraild import qkv_native  # noqa: E402


def per_name(prof) -> dict[str, tuple[int, float]]:
    """``name -> (count, self CPU µs)`` over a profile's events."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in prof.key_averages():
        out[e.key][0] += e.count
        out[e.key][1] += e.self_cpu_time_total
    return {k: (int(c), t) for k, (c, t) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="steps counted (the difference of two runs)")
    ap.add_argument("--methods", nargs=2, default=["vanilla_kd", "loraild_fixed"])
    ap.add_argument("--top", type=int, default=40, help="rows printed (largest difference in self time first)")
    ap.add_argument("--tiny", action="store_true", help="2-layer models (a smoke test, e.g. on the CPU)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        qkv_native.available()
    t_cfg, s_cfg = bl.model_configs(args.tiny)
    warmup = 3
    teacher, split, cache = bl.cached_teacher(t_cfg, args.batch * (warmup + 2 + args.steps), args.seq, device)

    def run(name: str, steps: int) -> dict[str, tuple[int, float]]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            bl.bench_method(name, "cached", True, teacher, None, t_cfg, s_cfg, split, cache,
                            bl.step_args(args.batch, args.seq, steps, warmup=warmup), device)
        return per_name(prof)

    rows = []
    for name in args.methods:
        run(name, 2)  # warm (allocator, cuBLAS, the C++ product)
        short, long = run(name, 2), run(name, 2 + args.steps)
        per_step = {k: ((c - short.get(k, (0, 0.0))[0]) / args.steps, (t - short.get(k, (0, 0.0))[1]) / args.steps)
                    for k, (c, t) in long.items()}
        # events the steps make (model building's, e.g. the weights' normal_, are in both runs: count 0, time noise)
        rows.append({k: v for k, v in per_step.items() if v[0] > 0})
    a, b = rows
    names = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, (0, 0.0))[1] - a.get(k, (0, 0.0))[1]))
    dev = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"host calls per step by name (bf16, batch {args.batch} x {args.seq}, cached teacher, eager, profiler on; "
          f"{dev}; a run of {warmup + 2 + args.steps} steps less one of {warmup + 2}, over {args.steps})")
    total = [sum(t for _, t in r.values()) for r in rows]
    calls = [sum(c for c, _ in r.values()) for r in rows]
    print(f"all events: {args.methods[0]} {calls[0]:.0f} calls, {total[0] / 1e3:.2f} ms self; "
          f"{args.methods[1]} {calls[1]:.0f} calls, {total[1] / 1e3:.2f} ms self ({total[1] / max(total[0], 1e-9):.3f}x)")
    print(f"{'name':70s} {'calls a':>8s} {'calls b':>8s} {'us a':>9s} {'us b':>9s} {'b - a us':>9s}")
    for k in names[:args.top]:
        (ca, ta), (cb, tb) = a.get(k, (0, 0.0)), b.get(k, (0, 0.0))
        print(f"{k[:70]:70s} {ca:8.1f} {cb:8.1f} {ta:9.1f} {tb:9.1f} {tb - ta:9.1f}")


if __name__ == "__main__":
    main()
