"""The host's own work per training step, split by the functions that make it (bench/README.md section 7,
round 15).

Each function listed in ``PARTS`` is wrapped so that the process's CPU time inside it is summed
(``time.process_time``: time the host spends descheduled by other load is not in it), then every method's
steps run as ``bench_loraild.bench_method`` runs them, on a batch small enough that the device never holds
the host back.  Prints, per method and repeat, ms per step in each part (nested parts are included in their
callers: ``student forward`` holds ``self-attention``, which holds the q/k/v work), then the median over
repeats side by side.  ``loss.backward`` holds the work of autograd's device thread, which runs the backward
pass for CUDA tensors while the calling thread waits.

Usage: ``PYTHONPATH=.:bench python bench/checks/host_parts.py [--batch 16] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers.models.roberta import modeling_roberta

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_loraild as bl  # noqa: E402
from paperlib.loraild import distill, fused_lora, qkv_native  # noqa: E402
from paperlib.loraild import teacher_cache as tc  # noqa: E402

#: (label, owner, attribute): the functions timed
PARTS = (
    ("teacher lookup", tc.TeacherCache, "lookup"),
    ("student forward", distill.DistillModel, "student_forward"),
    ("self-attention", modeling_roberta.RobertaSelfAttention, "forward"),
    ("nn.Linear", torch.nn.Linear, "forward"),
    ("product (Python side)", fused_lora.FusedLoraRecorder, "_run_product"),
    ("product (C++ call)", qkv_native, "qkv_lora"),
    ("product settings", fused_lora.FusedLoraRecorder, "_product_spec"),
    ("ce loss", distill, "ce_loss"),
    ("kd loss", distill, "kd_loss"),
    ("ild loss", distill, "ild_loss_layers"),
    ("features stacked", fused_lora.FusedLoraRecorder, "stacked"),
    ("teacher aligned", distill, "align_teacher"),
    ("recorder clear", fused_lora.FusedLoraRecorder, "clear"),
    ("loss.backward", torch.Tensor, "backward"),
)


def wrap(totals: dict[str, float]) -> None:
    """Replace every part's function with one that adds the process's CPU time inside it to ``totals[label]``."""
    for label, owner, attr in PARTS:
        fn = getattr(owner, attr)

        def timed(*args, __fn=fn, __label=label, **kwargs):
            t0 = time.process_time()
            try:
                return __fn(*args, **kwargs)
            finally:
                totals[__label] = totals.get(__label, 0.0) + time.process_time() - t0

        setattr(owner, attr, functools.wraps(fn)(timed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=["vanilla_kd", "loraild_fixed"])
    ap.add_argument("--tiny", action="store_true", help="2-layer models (a smoke test on the CPU)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t_cfg, s_cfg = bl.model_configs(args.tiny)
    run = bl.step_args(args.batch, args.seq, args.steps)
    teacher, split, cache = bl.cached_teacher(t_cfg, args.batch * (run.warmup + run.steps), args.seq, device)
    if device.type == "cuda":
        qkv_native.available()  # built before any row
    totals: dict[str, float] = {}
    wrap(totals)
    per: dict[str, list[dict[str, float]]] = {m: [] for m in args.methods}
    for rep in range(args.repeats):
        for name in args.methods:
            totals.clear()
            row = bl.bench_method(name, "cached", True, teacher, None, t_cfg, s_cfg, split, cache, run, device)
            steps = run.warmup + run.steps
            parts = {k: v * 1e3 / steps for k, v in totals.items()}
            parts["step (host CPU, bench)"] = row["host_ms"]
            per[name].append(parts)
            print(f"{name} repeat {rep + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(parts.items())),
                  flush=True)
    labels = [p[0] for p in PARTS] + ["step (host CPU, bench)"]
    print(f"\nms per step, median of {args.repeats} repeats (batch {args.batch} x {args.seq}, bf16, "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'})")
    print(f"{'part':32s}" + "".join(f"{m:>22s}" for m in args.methods))
    for label in labels:
        vals = [statistics.median(r.get(label, 0.0) for r in per[m]) for m in args.methods]
        print(f"{label:32s}" + "".join(f"{v:22.3f}" for v in vals))


if __name__ == "__main__":
    main()
