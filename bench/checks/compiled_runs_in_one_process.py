"""GPU check: compiled runs one after another in one process, as a sweep lane trains them.

``compile="auto"`` compiles long bf16 runs (``RunConfig.compile_mode``), and a sweep lane trains
run after run in one process.  After each compiled run ``train.run`` calls
``models.release_compiled`` (``torch._dynamo.reset``).  Without it, every run's CUDA graphs would
keep their memory pool and, through their static inputs, the old student's parameters, and every
new student would count as a recompile of the same forward against dynamo's limit of 8.

This trains ``--runs`` LoRAILD runs (seeds 0, 1, ...) in this process and prints, after each: what
it compiled, its seconds per epoch (the first includes compiling), and the GPU memory still
allocated and reserved.  ``--keep-compiled`` turns the release off, to compare in a second call.

Usage: ``PYTHONPATH=. python bench/checks/compiled_runs_in_one_process.py --out /tmp/lane [--keep-compiled]``
(bf16 mixed precision, batches padded to 128 tokens, stage 1 and the teacher's outputs prepared by the
first call and reused by later ones with the same ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="work folder (models, data, results; reused by a later call)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--method", default="loraild_fixed")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--words", type=int, default=24)
    ap.add_argument("--extra-examples", type=int, default=0,
                    help="training examples beyond whole batches: each epoch ends with a shorter batch (run eager)")
    ap.add_argument("--compile", default="reduce-overhead", help="the runs' compile mode (off: eager)")
    ap.add_argument("--keep-compiled", action="store_true", help="skip the release after each run")
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU (smoke test)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("ACCELERATE_MIXED_PRECISION", "no" if args.tiny else "bf16")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from bench_loraild_ddp import models_in, write_sst2

    from paperlib.loraild import train as train_mod
    from paperlib.loraild.config import RunConfig

    if args.keep_compiled:
        train_mod.release_compiled = lambda: None
    work = Path(args.out)
    seq = 32 if args.tiny else 128
    n_train = args.batch * args.steps_per_epoch + args.extra_examples
    models = models_in(work / "models", tiny=args.tiny)
    glue = work / "glue"
    if not (glue / "SST-2").exists():
        write_sst2(glue, n_train=int(n_train / 0.9) + 20, n_dev=256, words=min(args.words, seq - 2))
    base = RunConfig(task="sst2", method=args.method, glue_dir=str(glue), teacher=models["teacher"],
                     student=models["student"], epochs=args.epochs, teacher_epochs=1, rank=4 if args.tiny else 32,
                     max_length=seq, pad_to_max_length=True, ild_start=0, group_by_length=False, progress=False,
                     batch_size=args.batch, max_train=n_train, max_test=256, cluster_methods=(),
                     teacher_cache_max_gb=16, results_dir=str(work / "results"), compile=args.compile,
                     device="cpu" if args.tiny else None)
    cuda = torch.cuda.is_available() and not args.tiny
    print(f"{args.runs} runs of {args.method} in one process: {args.epochs} x {args.steps_per_epoch} steps of "
          f"{args.batch} x {seq}{f' and one of {args.extra_examples}' if args.extra_examples else ''}, "
          f"compile {args.compile}, mixed precision {os.environ['ACCELERATE_MIXED_PRECISION']}, "
          f"release after each run: {not args.keep_compiled}", flush=True)
    rows = []
    for seed in range(args.runs):
        # a fresh result each call (the compile mode is not part of a result's key)
        cfg = base.replace(seed=100 + seed + (1000 if args.keep_compiled else 0) + (2000 if args.compile == "off" else 0))
        t0 = time.perf_counter()
        result = train_mod.run(cfg)
        row = {"seed": cfg.seed, "wall_s": time.perf_counter() - t0, "compile": result["compile"],
               "steps_s": [h.get("steps_s") for h in result["history"]],
               "train_loss": [h["train"]["loss"] for h in result["history"]]}
        if cuda:
            row |= {"allocated_gib": torch.cuda.memory_allocated() / 2**30,
                    "reserved_gib": torch.cuda.memory_reserved() / 2**30}
        rows.append(row)
        mem = f", allocated {row['allocated_gib']:.2f} GiB, reserved {row['reserved_gib']:.2f} GiB" if cuda else ""
        print(f"  run {seed}: compiled {row['compile']}, {row['wall_s']:.1f} s, steps per epoch "
              f"{[round(s, 2) for s in row['steps_s']]} s{mem}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
