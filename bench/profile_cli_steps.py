"""``python -m paperlib ...`` with stage 2's optimizer steps ``--profile-from`` .. ``+ --profile-steps``
of the first epoch under the torch profiler (every process writes its own table).

Used by ``bench_loraild_ddp.py --profile-steps N`` to see where a data-parallel step spends the time
that a lone step of the same per-process batch does not: it wraps the ``fit`` that
``paperlib.loraild.train`` calls (stage 2 only; stage 1 is prepared before) and leaves the package
untouched.  Usage (what the bench runs)::

    [accelerate launch ... | python] bench/profile_cli_steps.py --profile-out DIR \
        --profile-from 20 --profile-steps 20 loraild --task sst2 ...
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def wrap_fit(out: Path, first: int, count: int, trace: bool = False):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from paperlib.loraild import train

    inner_fit = train.fit

    def fit(acc, *, step_fn, **kw):
        state = {"n": 0, "prof": None}
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])

        def profiled_step(batch, epoch):
            n = state["n"]
            if n == first:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                state["prof"] = profile(activities=acts)
                state["prof"].__enter__()
            elif n == first + count and state["prof"] is not None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                prof, state["prof"] = state["prof"], None
                prof.__exit__(None, None, None)
                write_table(prof, out, acc.process_index, acc.num_processes, count)
                if trace:  # the timeline: where the device waits between kernels (chrome://tracing, Perfetto)
                    prof.export_chrome_trace(str(out / f"trace_{acc.num_processes}proc_rank{acc.process_index}.json"))
            state["n"] = n + 1
            return step_fn(batch, epoch)

        return inner_fit(acc, step_fn=profiled_step, **kw)

    train.fit = fit


def write_table(prof, out: Path, rank: int, world: int, steps: int) -> None:
    from timing import profile_ms_per_step

    averages = prof.key_averages()
    gpu, cpu = profile_ms_per_step(averages, steps)
    head = (f"# process {rank} of {world}, {steps} stage-2 steps profiled\n"
            f"# per step: device busy {gpu:.1f} ms, host operator time {cpu:.1f} ms (with profiler overhead)\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"profile_{world}proc_rank{rank}.txt").write_text(
        head + averages.table(sort_by="cuda_time_total" if gpu else "cpu_time_total", row_limit=40))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile-out", required=True)
    ap.add_argument("--profile-from", type=int, default=20)
    ap.add_argument("--profile-steps", type=int, default=20, help="0: no profile (only the DDP settings below)")
    ap.add_argument("--trace", action="store_true",
                    help="also write each process's timeline (trace_*.json; keep --profile-steps small: MBs per step)")
    ap.add_argument("--ddp-static-graph", choices=["on", "off"], default=None,
                    help="force DDP's static_graph (default: the package's choice)")
    ap.add_argument("--ddp-bucket-mb", type=float, default=None, help="DDP's bucket_cap_mb instead of 25")
    args, rest = ap.parse_known_args()
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.profile_steps:
        wrap_fit(Path(args.profile_out), args.profile_from, args.profile_steps, args.trace)
    if args.ddp_static_graph or args.ddp_bucket_mb:
        from paperlib.loraild import runtime

        package = runtime.search_unused_parameters

        def search_unused_parameters(acc, search):
            package(acc, search)
            if acc.ddp_handler is not None:
                if args.ddp_static_graph:
                    acc.ddp_handler.static_graph = args.ddp_static_graph == "on"
                if args.ddp_bucket_mb:
                    acc.ddp_handler.bucket_cap_mb = args.ddp_bucket_mb

        runtime.search_unused_parameters = search_unused_parameters
        from paperlib.loraild import teacher, train

        train.search_unused_parameters = teacher.search_unused_parameters = search_unused_parameters
    from paperlib.__main__ import main as cli

    return cli(rest)


if __name__ == "__main__":
    sys.exit(main())
