"""Where a training step's host time goes, per method: cProfile of the bench's step loop on a batch small
enough that the host, not the device, bounds the step (bench/README.md section 7, round 14).

Prints, per method, ms per step and the Python functions with the most own time (``--sort cumulative``:
time including callees; ``--only REGEX``: those functions only); torch operators called from Python count
as their Python entry: ``{built-in method ...}`` or ``{method ...}``.

Usage: ``PYTHONPATH=.:bench python bench/checks/host_profile_steps.py [--batch 16] [--methods vanilla_kd loraild_fixed]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_loraild as bl  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--methods", nargs="+", default=["vanilla_kd", "loraild_fixed"])
    ap.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    ap.add_argument("--only", default=None, help="print only functions whose file or name matches this regex "
                                                 "(e.g. paperlib)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t_cfg, s_cfg = bl.model_configs()
    run = bl.step_args(args.batch, args.seq, args.steps)
    teacher, split, cache = bl.cached_teacher(t_cfg, args.batch * (run.warmup + run.steps), args.seq, device)
    for rep in range(2):  # the first pass warms everything up (C++ build, cuBLAS, allocator)
        for name in args.methods:
            prof = cProfile.Profile() if rep else None
            if prof:
                prof.enable()
            row = bl.bench_method(name, "cached", True, teacher, None, t_cfg, s_cfg, split, cache, run, device)
            if prof is None:
                print(f"{name}: {row['step_s'] * 1e3:.2f} ms/step without the profiler (first pass)")
                continue
            prof.disable()
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out)
            stats.sort_stats(args.sort).print_stats(*([args.only] if args.only else []), args.top)
            print(f"=== {name}: {row['step_s'] * 1e3:.2f} ms/step (batch {args.batch} x {args.seq}, "
                  f"{device}, profiler on; own times below are for {run.warmup + run.steps} steps plus setup)")
            text = out.getvalue()
            print(text[text.index("ncalls"):] if "ncalls" in text else text)


if __name__ == "__main__":
    main()
