"""Command line of paper B: ``python -m paperlib loraild ...`` (one run) and ``... sweep ...``.

Every :class:`~paperlib.loraild.config.RunConfig` field is an option (``--max-train 300``,
``--no-ild-mask-padding``, ...); unset options come from the task's profile.  Examples::

    python -m paperlib loraild --task rotten_tomatoes --method loraild_fixed --seed 0
    python -m paperlib loraild --task rte --method loraild_fixed --seed 0 --glue-dir ~/glue
    python -m paperlib sweep --tasks rotten_tomatoes --seeds 0 1 2 --epochs 3
    accelerate launch --num_processes 4 -m paperlib sweep --tasks cola mrpc qnli rte sst2 stsb
    python -m paperlib sweep --tasks rte --backend ray --address auto   # one Ray task (1 GPU) per run
    python -m paperlib sweep --tasks rte --shard $SLURM_ARRAY_TASK_ID/8  # one shard of a job array

On a machine with N GPUs, ``sweep`` trains N runs at once, one per GPU (``--workers`` to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from paperlib.loraild.config import (ALL_TASKS, COMPILE_AUTO_MIN_STEPS, COMPILE_AUTO_MIN_STEPS_LONGEST, COMPILE_MODES,
                                     METHOD_NAMES, RunConfig)

SKIP = {"filled"}
SWEEP_SKIP = SKIP | {"task", "method", "seed"}


def _add_config_options(parser: argparse.ArgumentParser, skip: set[str]) -> None:
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        opt = "--" + f.name.replace("_", "-")
        ann = str(f.type)
        default = f.default
        if ann.startswith("bool"):
            parser.add_argument(opt, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default {default})")
        elif ann.startswith("tuple"):
            parser.add_argument(opt, nargs="*", default=None, help=f"(default {' '.join(default)})")
        else:
            typ = int if ann.startswith("int") else float if ann.startswith("float") else str
            kw = {"choices": ALL_TASKS} if f.name == "task" else {"choices": METHOD_NAMES} if f.name == "method" else {}
            shown = "from the task's profile" if default is None else default
            if f.name == "results_dir":
                shown = "$PAPERLIB_RESULTS, else ./results/loraild"
            help_text = f"(default: {shown})"
            if f.name == "compile":
                kw = {"choices": [m for m in COMPILE_MODES if m]}
                help_text = (f"the student's torch.compile mode (default: auto, i.e. CUDA graphs for a one-process bf16 run "
                             f"on a GPU of at least {COMPILE_AUTO_MIN_STEPS} steps with batches padded to max_length, "
                             f"{COMPILE_AUTO_MIN_STEPS_LONGEST} padded to their longest item; eager otherwise; "
                             f"off: always eager)")
            parser.add_argument(opt, type=typ, default=None, help=help_text, **kw)


def config_from_args(args: argparse.Namespace, skip: set[str] = SKIP) -> RunConfig:
    """A :class:`RunConfig` with every option that was given."""
    changes = {}
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        v = getattr(args, f.name, None)
        if v is not None:
            changes[f.name] = tuple(v) if str(f.type).startswith("tuple") else v
    return RunConfig(**changes)


def _friendly(func):
    """Turn the expected errors (a bad setting, missing or bad data, a model that cannot be loaded,
    a tokenizer mismatch, an absent device, an unwritable results folder) into one line and exit 2."""
    def wrapped(args: argparse.Namespace) -> int:
        from paperlib.data.glue import DataUnavailableError
        from paperlib.locks import LockTimeout

        try:
            return func(args)
        except (ValueError, OSError, DataUnavailableError, LockTimeout) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return wrapped


@_friendly
def cmd_loraild(args: argparse.Namespace) -> int:
    from paperlib.loraild.train import result_path, run

    cfg = config_from_args(args)
    result = run(cfg)
    summary = {k: result[k] for k in ("task", "method", "seed", "metric", "best_epoch", "best_valid", "best_test")}
    summary["result"] = str(result_path(cfg))
    print(json.dumps(summary, indent=1))
    return 0


@_friendly
def cmd_sweep(args: argparse.Namespace) -> int:
    from paperlib.loraild import dispatch

    if args.backend == "local":  # the other lanes' workers import while this process does
        dispatch.prestart(args.device, args.workers)
    try:
        return _sweep(args)
    finally:
        dispatch.discard_prestarted()


def _sweep(args: argparse.Namespace) -> int:
    from paperlib.loraild.dispatch import parse_shard
    from paperlib.loraild.sweep import run_sweep
    from paperlib.loraild.tables import results_frame, table1

    base = config_from_args(args, SWEEP_SKIP)
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        res = run_sweep(base, args.tasks, args.methods, args.seeds, progress=base.progress is not False,
                        workers=args.workers, backend=args.backend, address=args.address, shard=shard,
                        teachers_only=args.teachers_only)
    except RuntimeError as err:
        if "needs Ray" not in str(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.teachers_only:
        print(f"teachers ready for {', '.join(res.teachers) or 'no task (no KD method)'}")
        return 0
    print(f"ran {len(res.ran)} run(s), {len(res.skipped)} already finished")
    if res.lanes:  # where the sweep's time went (several lanes): busy share, first starts, idle ends
        print(res.lanes)
    print(table1(results_frame(res.results)).to_markdown())
    return 0


def register(subparsers) -> None:
    """Add the ``loraild`` and ``sweep`` sub-commands to ``python -m paperlib``."""
    p = subparsers.add_parser("loraild", help="paper B: one LoRAILD / baseline run (stage 1 teacher if needed)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_options(p, SKIP)
    p.set_defaults(func=cmd_loraild)

    s = subparsers.add_parser("sweep", help="paper B: tasks x methods x seeds (skips finished runs, resumes)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--tasks", nargs="+", default=["rotten_tomatoes"], choices=ALL_TASKS)
    s.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    s.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    s.add_argument("--workers", type=int, default=None,
                   help="runs trained at a time, each in its own process (default: one per GPU on a GPU "
                        "machine, pinned to it; 1 on a CPU, where 2 suits a 2-core machine)")
    s.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local processes, or one Ray task per run (pip install 'paperlib[ray]')")
    s.add_argument("--address", default=None,
                   help="Ray cluster address ('auto': the running cluster; default: a local Ray instance)")
    s.add_argument("--shard", default=None, metavar="K/N",
                   help="only runs K, K+N, K+2N, ... of the grid (0 <= K < N), e.g. $SLURM_ARRAY_TASK_ID/N")
    s.add_argument("--teachers-only", action="store_true",
                   help="train the stage-1 teachers and cache their outputs, then stop (before a job array)")
    _add_config_options(s, SWEEP_SKIP)
    s.set_defaults(func=cmd_sweep)


__all__ = ["register", "config_from_args", "cmd_loraild", "cmd_sweep"]
