"""Aten operations per stage-2 training step, by phase: the host-dispatch cost of each method.

At the paper's sizes in bf16 the cached-teacher LoRAILD step is bound by the host launching kernels
(``bench/README.md``), so the number of operations a step dispatches is the cost that matters and,
unlike a CPU timing, it does not depend on the machine's load.  Every aten call that reaches the
dispatcher below autograd and autocast is counted (``TorchDispatchMode``), split into the phases

- ``lookup``: the cached teacher outputs of the batch (:meth:`TeacherCache.lookup`);
- ``forward``: ``DistillModel.forward`` (student, eq. 4 with the ILD loss, the layer draw);
- ``backward``: ``loss.backward()``;
- ``optimizer``: the fused AdamW step and ``zero_grad``.

Views (``view``, ``t``, ``transpose``, ...) launch no kernel but still cost host time; they are
counted separately (``views``).  On a GPU, each non-view operation is one kernel launch or more.

Usage: ``PYTHONPATH=. python bench/count_loraild_ops.py [--full] [--dtype bf16|fp32] [--json out.json]``
(tiny 4 -> 2 layer models by default; ``--full`` uses the paper's configs, slow on a CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench_loraild import (BENCH_METHODS, TASK, build_student, build_teacher, make_split, model_configs,
                           teacher_parts)
from paperlib.loraild import qkv_native, teacher_cache as tc
from paperlib.loraild.alignment import LayerAligner
from paperlib.loraild.config import METHODS
from paperlib.loraild.curriculum import method_weights
from paperlib.loraild.distill import DistillModel
from paperlib.loraild.encoding import Collator, EpochPermutation, make_loader
from paperlib.loraild.train import adamw


class OpCounter(TorchDispatchMode):
    """Counts aten overloads dispatched inside the block, under the phase set in ``phase``."""

    def __init__(self):
        super().__init__()
        self.phase = "other"
        self.counts: dict[str, Counter] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts.setdefault(self.phase, Counter())[name] += 1
        return func(*args, **(kwargs or {}))


def is_view(name: str) -> bool:
    op = getattr(torch.ops.aten, name, None)
    try:
        return bool(op is not None and any(
            getattr(op, o)._schema.returns and getattr(op, o)._schema.returns[0].alias_info is not None
            and not getattr(op, o)._schema.returns[0].alias_info.is_write for o in op.overloads()))
    except Exception:  # noqa: BLE001 - an op without a schema is counted as a kernel
        return False


def count_method(name: str, bf16: bool, t_cfg, s_cfg, split, cache, rank: int, batch: int, seq: int,
                 steps: int, fused: bool = True, product: bool = True, native: str = "auto") -> dict:
    """Mean aten calls per step (after one warm-up step), per phase, for method ``name`` (``native``: the
    recorder's setting; ``"on"`` counts the C++ product, which GPUs run, on the CPU)."""
    method = METHODS[name]
    torch.manual_seed(0)
    student = build_student(s_cfg, rank if method.student_lora else None, "cpu")
    model = DistillModel(student, method, TASK, t_cfg.num_hidden_layers, t_cfg.hidden_size, fused_lora=fused)
    if model.recorder is not None and fused:
        model.recorder.product = product  # False: round 11's composite fused path
        model.recorder.native = native
    model.train()
    opt = adamw([p for p in model.parameters() if p.requires_grad], 2e-5, 0.01)
    aligner = LayerAligner(method.alignment, t_cfg.num_hidden_layers, s_cfg.num_hidden_layers, 0) \
        if method.alignment else None
    weights = method_weights(method, 1, 1, 2)
    loader = make_loader(split, batch, Collator(1, seq, pad_to_max=True), EpochPermutation(len(split), 0))
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    counter = OpCounter()
    batches = iter(loader)
    try:
        for i in range(steps + 1):
            b = next(batches)
            with counter if i else contextlib.nullcontext():
                with amp:
                    counter.phase = "lookup"
                    tb = cache.lookup(b["idx"], b["input_ids"].shape[1], "cpu") if method.kd else None
                    counter.phase = "forward"
                    groups = aligner.groups() if aligner is not None else None
                    loss, _, _ = model(b, tb, weights, groups, None)
                counter.phase = "backward"
                loss.backward()
                counter.phase = "optimizer"
                opt.step()
                opt.zero_grad(set_to_none=True)
    finally:
        if model.recorder is not None:
            model.recorder.remove()
    path = ("fused-native" if native == "on" else "fused") if product else "composite"
    row: dict = {"method": name, "dtype": "bf16" if bf16 else "fp32",
                 "lora_path": (path if fused else "hooks") if method.student_lora else "-"}
    total_ops = total_views = 0
    for phase in ("lookup", "forward", "backward", "optimizer"):
        c = counter.counts.get(phase, Counter())
        views = sum(v for k, v in c.items() if is_view(k))
        ops = sum(c.values()) - views
        row[phase] = ops / steps
        total_ops += ops
        total_views += views
        row[f"{phase}_top"] = {k: v / steps for k, v in c.most_common(12)}
        row[f"{phase}_all"] = {k: v / steps for k, v in c.items()}
    row["ops"], row["views"] = total_ops / steps, total_views / steps
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="the paper's model configs (slow on a CPU)")
    ap.add_argument("--methods", nargs="+", default=[m for m in BENCH_METHODS if m != "rail_kd_c"])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--lora-paths", nargs="+", default=["fused"], choices=["fused", "fused-native", "composite", "hooks"],
                    help="fused: one q/k/v product per layer (the default; in Python on the CPU); fused-native: its "
                         "C++ twin, which GPUs run (built here if need be); composite: round 11's fused path")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--detail", action="store_true", help="print the most frequent operations per phase")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if "fused-native" in args.lora_paths:
        try:
            qkv_native.load()
        except RuntimeError as e:
            raise SystemExit(f"count_loraild_ops: --lora-paths fused-native: {e}; or count the Python product "
                             "with --lora-paths fused") from None
    t_cfg, s_cfg = model_configs(not args.full)
    teacher = build_teacher(t_cfg, args.rank, "cpu")
    split = make_split(args.batch * (args.steps + 1), args.seq, t_cfg.vocab_size)
    bf16 = args.dtype == "bf16"
    cache = tc.TeacherCache(teacher_parts(teacher, split, args.seq, "cpu", bf16))
    rows = []
    print(f"aten operations per step ({args.dtype}, teacher {t_cfg.num_hidden_layers} -> student "
          f"{s_cfg.num_hidden_layers} layers, cached teacher; views counted apart)")
    print(f"{'method':22s} {'LoRA':9s} {'lookup':>7s} {'forward':>8s} {'backward':>9s} {'optim':>6s} "
          f"{'total':>6s} {'views':>6s}")
    for name in args.methods:
        for path in (args.lora_paths if METHODS[name].student_lora else ["fused"]):
            r = count_method(name, bf16, t_cfg, s_cfg, split, cache, args.rank, args.batch, args.seq,
                             args.steps, fused=path != "hooks", product=path.startswith("fused"),
                             native="on" if path == "fused-native" else "auto")
            rows.append(r)
            print(f"{name:22s} {r['lora_path']:9s} {r['lookup']:7.0f} {r['forward']:8.0f} {r['backward']:9.0f} "
                  f"{r['optimizer']:6.0f} {r['ops']:6.0f} {r['views']:6.0f}")
            if args.detail:
                for phase in ("lookup", "forward", "backward"):
                    print(f"    {phase}: {r[f'{phase}_top']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
