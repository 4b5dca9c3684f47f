"""Benchmark of LoRAILD stage-2 training at the paper's sizes (random weights have the true cost).

Teacher: RoBERTa-large config (24 layers, d = 1024) with LoRA r = 32 on q/k/v, frozen.
Student: DistilRoBERTa-base config (6 layers, d = 768); with LoRA r = 32 for the LoRAILD rows.
Batches of 32 x 128 tokens (every position a real token), two labels.

Prints, from one run on one device:

- the device's bf16 matmul rate (8192^3 products), the yardstick;
- per method (w/o KD, Vanilla KD, RAIL-KD_c, LoRAILD Fixed / Average / Random step) and
  precision (fp32, bf16 autocast), samples/s of a training step as ``paperlib.loraild.train``
  runs it (teacher outputs, ``DistillModel`` forward with eq. 4, backward, fused AdamW step),
  with the frozen teacher's outputs either *recomputed* every step ("live") or *reused* from
  :mod:`paperlib.loraild.teacher_cache` ("cached");
- per row, the host's own work per step: the process's CPU time (its threads' together, so autograd's
  device thread is in it), median over the steps, split into the phases of ``HOST_PHASES``;
- the ratios the issue asks for: LoRAILD / Vanilla KD time per step (and host CPU time), live / cached epoch time,
  model FLOP rate / bf16 matmul rate; and peak memory;
- optionally a torch.profiler table of one configuration.

Usage: ``PYTHONPATH=. python bench/bench_loraild.py [--steps 40] [--json out.json] [--profile p.txt]``.
``--tiny`` runs 2-layer models on the CPU (a smoke test of the script itself).
``--lora-paths fused hooks`` times the LoRAILD rows with the fused q/k/v LoRA (paperlib's default)
and with peft's per-module LoRA plus feature hooks (the earlier path); ``fused-torch`` /
``fused-triton`` force the features' kernel (``fused`` is ``kernel="auto"``, the torch path since round 9);
``fused-composite`` is the Triton features without the one-node branch (``one_node=False``); on a GPU ``fused`` runs
the product's C++ twin (:mod:`paperlib.loraild.qkv_native`), ``fused-python`` the Python one.  ``--section compile | run |
kmeans``: eager vs compiled losses, per-phase times of one CLI run, device k-means vs scikit-learn
(:mod:`loraild_sections`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, RobertaConfig

from paperlib.loraild import qkv_native, teacher_cache as tc
from paperlib.loraild.alignment import LayerAligner, rail_layers
from paperlib.loraild.config import METHODS, TaskSpec
from paperlib.loraild.curriculum import method_weights
from paperlib.loraild.distill import DistillModel
from paperlib.loraild.encoding import Collator, EncodedSplit, EpochPermutation, batch_to, make_loader
from paperlib.loraild.features import LoraFeatureRecorder
from paperlib.loraild.models import encoder_layers, freeze, student_lora, teacher_lora
from paperlib.loraild.qkv_product import PlainQkv
from paperlib.loraild.train import adamw
from loraild_sections import compare_compile, compare_kmeans, run_phases
from timing import matmul_rate, profile_ms_per_step, sync

ROBERTA_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
DISTILROBERTA_BASE = dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072)
TINY_TEACHER = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128)
TINY_STUDENT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
COMMON = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
              bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, num_labels=2)
BENCH_METHODS = ("wo_kd", "vanilla_kd", "rail_kd_c", "loraild_fixed", "loraild_average", "loraild_random_step")
TASK = TaskSpec("bench", 2, "accuracy", ("accuracy",), False, 1)


def roberta(sizes: dict) -> RobertaConfig:
    return RobertaConfig(**COMMON, **sizes)


def model_configs(tiny: bool = False) -> tuple[RobertaConfig, RobertaConfig]:
    """``(teacher, student)`` configs: the paper's (RoBERTa-large, DistilRoBERTa-base), or the 4- and
    2-layer pair of ``--tiny`` smoke tests."""
    if tiny:
        return roberta(TINY_TEACHER), roberta(TINY_STUDENT)
    return roberta(ROBERTA_LARGE), roberta(DISTILROBERTA_BASE)


def step_args(batch: int, seq: int, steps: int, warmup: int = 8, rank: int = 32) -> argparse.Namespace:
    """The settings :func:`bench_method` reads (eager, LoRA rank ``rank``), for the checks that run its rows."""
    return argparse.Namespace(batch=batch, seq=seq, rank=rank, warmup=warmup, steps=steps, compile=None)


def forward_flops(cfg: RobertaConfig, seq: int, rank: int | None) -> float:
    """Forward FLOPs per token: 2 x (matmul weights of the blocks) + attention (4 L T d) + LoRA."""
    L, d, ff = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
    f = 2 * L * (4 * d * d + 2 * d * ff) + 4 * L * seq * d
    if rank:
        f += 2 * L * 3 * 2 * d * rank
    return f


def make_split(n: int, seq: int, vocab: int, seed: int = 0) -> EncodedSplit:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, seq), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    labels = torch.randint(0, 2, (n,), generator=g).numpy()
    return EncodedSplit(ids.tolist(), None, labels)


#: --lora-paths: the LoRAILD student's LoRA -> (FusedLoraRecorder's kernel, one_node, product, native), None for
#: "hooks".  "fused" is paperlib's default (one q/k/v product per layer, torch features, compiled students included,
#: its C++ twin paperlib.loraild.qkv_native on a GPU where it builds); "fused-python" the same product kept in
#: Python; "composite" round 11's default (the composite fused path, torch features); "branch" the Triton features
#: in the one-node branch (round 9)
LORA_PATHS: dict[str, tuple[str, bool, bool, str] | tuple[None, None, None, None]] = {
    "fused": ("auto", True, True, "auto"), "fused-torch": ("torch", True, True, "auto"),
    "fused-triton": ("triton", True, True, "auto"), "composite": ("auto", True, False, "auto"),
    "branch": ("triton", True, False, "auto"), "fused-composite": ("triton", False, False, "auto"),
    "hooks": (None, None, None, None), "fused-python": ("auto", True, True, "off")}
#: the phases of a step whose host CPU time bench_method reports (``host_phase_ms``); "teacher" is the batch's
#: transfer and the teacher's outputs (cached or computed)
HOST_PHASES = ("teacher", "forward", "backward", "optimizer")
#: --vanilla-qkv: the students without LoRA: HF's three nn.Linear, or one product per layer (PlainQkv)
PLAIN_QKV = ("linear", "product")


def build_teacher(cfg: RobertaConfig, rank: int, device) -> torch.nn.Module:
    """The stage-2 teacher as paperlib builds it, from a config (random weights)."""
    return freeze(teacher_lora(AutoModelForSequenceClassification.from_config(cfg), rank)).to(device)


def build_student(cfg: RobertaConfig, rank: int | None, device) -> torch.nn.Module:
    """The student as paperlib builds it, from a config (random weights)."""
    return student_lora(AutoModelForSequenceClassification.from_config(cfg), rank).to(device)


def teacher_parts(teacher, split: EncodedSplit, seq: int, device, bf16: bool = True) -> dict:
    """Every cacheable part (``teacher_cache.PARTS``) of ``teacher`` over ``split``, padded to ``seq`` tokens,
    under bf16 autocast when ``bf16``: what the bench rows read through a ``TeacherCache``."""
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with amp:
        return tc.compute_parts(teacher, make_loader(split, 64, Collator(1, seq, pad_to_max=True)), tc.PARTS, True,
                                device)


def cached_teacher(t_cfg: RobertaConfig, examples: int, seq: int, device) -> tuple:
    """``(teacher, split, cache)``: the teacher (rank 32), a random split of ``examples`` sequences of ``seq``
    tokens and its bf16 teacher cache on ``device``, as the host checks (``bench/checks/host_*.py``,
    ``launches_per_step.py``) run the bench's rows."""
    teacher = build_teacher(t_cfg, 32, device)
    split = make_split(examples, seq, t_cfg.vocab_size)
    return teacher, split, tc.TeacherCache(teacher_parts(teacher, split, seq, device)).to(device)


def bench_method(name: str, mode: str, bf16: bool, teacher, t_recorder, t_cfg, s_cfg, split, cache, args, device,
                 path: str = "fused", timed=contextlib.nullcontext) -> dict:
    """Time ``args.steps`` training steps (after ``args.warmup``) of one method (``path``: one of
    :data:`LORA_PATHS`, the student's LoRA for the LoRAILD methods).  ``timed()`` is entered around the timed
    steps alone (e.g. a profiler: model building and the warm-up steps stay out of it)."""
    method = METHODS[name]
    plain = None
    fused = path != "hooks"  # path: one of LORA_PATHS for a LoRA student, of PLAIN_QKV for the others
    kernel, one_node, product, native = LORA_PATHS[path] if method.student_lora else ("auto", True, True, "auto")
    torch.manual_seed(0)
    student = build_student(s_cfg, args.rank if method.student_lora else None, device)
    model = DistillModel(student, method, TASK, t_cfg.num_hidden_layers, t_cfg.hidden_size,
                         fused_lora=fused, lora_kernel=kernel or "auto").to(device)
    if fused and model.recorder is not None:
        model.recorder.one_node = one_node
        model.recorder.product = product
        model.recorder.native = native
    if not method.student_lora and path == "product":
        plain = PlainQkv(encoder_layers(student))
    model.train()
    if args.compile:
        student.compile(mode=None if args.compile == "default" else args.compile)
    opt = adamw([p for p in model.parameters() if p.requires_grad], 2e-5, 0.01)
    n_t, n_s = t_cfg.num_hidden_layers, s_cfg.num_hidden_layers
    aligner = LayerAligner(method.alignment, n_t, n_s, 0) if method.alignment else None
    rail = rail_layers(n_t, n_s, 0, 0) if method.inter in ("rail_c", "rail_l") else None
    weights = method_weights(method, 1, 1, 2)  # the ILD-on phase (curriculum rows after ild_start)
    parts = tc.parts_for(method)
    recorder = t_recorder if (mode == "live" and "lora" in parts) else None
    if cache is not None:  # only the parts the method reads, as a run caches them (teacher.needed_parts)
        cache = tc.TeacherCache({k: v for k, v in cache.parts.items() if k in parts})
    sampler = EpochPermutation(len(split), 0)
    loader = make_loader(split, args.batch, Collator(1, args.seq, pad_to_max=True), sampler)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    total = torch.zeros((), device=device)
    clock = []  # the process's CPU time at each phase's end, per step (HOST_PHASES)

    def step(batch):
        nonlocal total
        stamps = [time.process_time()]
        batch = batch_to(batch, device, non_blocking=True)
        with amp:
            if not method.kd:
                tb = None
            elif mode == "cached":
                tb = cache.lookup(batch["idx"], batch["input_ids"].shape[1], device)
            else:
                tb = tc.teacher_forward(teacher, batch, recorder, "pooled" in parts)
            stamps.append(time.process_time())
            groups = aligner.groups() if aligner is not None else None
            loss, _, _ = model(batch, tb, weights, groups, rail)
        stamps.append(time.process_time())
        loss.backward()
        stamps.append(time.process_time())
        opt.step()
        opt.zero_grad(set_to_none=True)
        total = total + loss.detach()  # as train.fit does: summed on the device, read once per epoch
        stamps.append(time.process_time())
        clock.append(stamps)
        return loss

    batches = iter(loader)
    try:
        for _ in range(args.warmup):
            step(next(batches))
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with timed():
            t0 = time.perf_counter()
            stamps = []
            for _ in range(args.steps):
                loss = step(next(batches))
                stamps.append(time.perf_counter())  # when the host is free for the next step
            sync(device)
            dt = (time.perf_counter() - t0) / args.steps
        # the host's own work per step: CPU time of this process (its threads' together: backward runs on
        # autograd's device thread; time the host spent descheduled by other load is not in it), median over the
        # timed steps, and per phase.  Where the device bounds the step the host also spins in kernel launches
        # waiting for room in the device's queue, which counts here too: read it where the host bounds the step
        host = np.diff(np.asarray(clock[args.warmup:]), axis=1) * 1e3
        host_ms = float(np.median(host.sum(axis=1)))
        host_phase_ms = dict(zip(HOST_PHASES, np.median(host, axis=0).tolist()))
        # the median time between steps' dispatch: in steady state the host waits on whichever side bounds the
        # step (its own dispatch, or the device's queue), and a burst of other work on a shared host moves the
        # mean of a row (up to 1.5x here) but not this median
        interval = float(np.median(np.diff([t0] + stamps)))
    finally:
        if model.recorder is not None:
            model.recorder.remove()
        if plain is not None:
            plain.remove()
    tokens = args.batch * args.seq
    flops = 3 * forward_flops(s_cfg, args.seq, args.rank if method.student_lora else None) * tokens
    if method.kd and mode == "live":
        flops += forward_flops(t_cfg, args.seq, args.rank) * tokens
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del model, student, opt
    if args.compile:  # a fresh dynamo for the next row: rows compile new students, past the recompile limit
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"method": name, "mode": mode, "dtype": "bf16" if bf16 else "fp32",
            "lora_path": path if method.student_lora else ("-" if path != "product" else "qkv-product"), "step_s": dt,
            "step_s_median_interval": interval, "host_ms": host_ms, "host_phase_ms": host_phase_ms,
            "samples_per_s": args.batch / dt, "model_flops_per_step": flops, "flop_rate": flops / dt,
            "peak_gib": peak, "loss": float(loss.detach())}


def profile_one(name: str, mode: str, teacher, t_recorder, t_cfg, s_cfg, split, cache, args, device, out: str) -> None:
    from torch.profiler import ProfilerActivity, profile as prof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    path = args.profile_lora_path
    p = prof(activities=acts)
    # the timed steps only: the model's upload (pageable copies) and the warm-up steps stay out of the table
    bench_method(name, mode, True, teacher, t_recorder, t_cfg, s_cfg, split, cache, args, device, path, timed=lambda: p)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    averages = p.key_averages()
    table = averages.table(sort_by=key, row_limit=30)
    steps = args.steps
    gpu, cpu = profile_ms_per_step(averages, steps)
    head = (f"# {name}, {mode} teacher, bf16 autocast, compile={args.compile}, LoRA path {path}, the {steps} timed steps profiled\n"
            f"# per step: device busy {gpu:.1f} ms, host operator time {cpu:.1f} ms (with profiler overhead)\n")
    print(head + table)
    with open(out, "w") as fh:
        fh.write(head + table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--methods", nargs="+", default=list(BENCH_METHODS))
    ap.add_argument("--modes", nargs="+", default=["live", "cached"], choices=["live", "cached"],
                    help="teacher outputs computed every step (live) or read from the cache")
    ap.add_argument("--repeats", type=int, default=1, help="time every row this often, interleaved; report the median")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--compile", default=None, choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                    help="torch.compile the student (and the live teacher) with this mode")
    ap.add_argument("--tiny", action="store_true", help="2-layer models on the CPU (smoke test)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", default=None, help="write a profiler table of one method (bf16)")
    ap.add_argument("--profile-method", nargs="+", default=["loraild_fixed"],
                    help="methods profiled (several: one table each, the method's name added to the --profile file name)")
    ap.add_argument("--profile-mode", default="cached", choices=["live", "cached"])
    ap.add_argument("--profile-lora-path", default="fused", choices=[p for p in LORA_PATHS if p != "hooks"],
                    help="the fused LoRA path of the profiled LoRAILD methods (as in --lora-paths)")
    ap.add_argument("--section", default="steps", choices=["steps", "compile", "run", "kmeans"],
                    help="steps: the step table; compile: eager vs compiled losses; run: per-phase times of one "
                         "CLI run; kmeans: device k-means vs scikit-learn (loraild_sections.py)")
    ap.add_argument("--lora-paths", nargs="+", default=["fused"], choices=list(LORA_PATHS),
                    help="student LoRA of the LoRAILD rows: fused (paperlib's default: one q/k/v product per layer, "
                         "torch features; fused-torch / fused-triton force the features), composite (round 11's "
                         "default: the composite fused path), branch (Triton features, one-node branch), "
                         "fused-composite (Triton features, no branch), fused-python (the product in Python, not "
                         "its C++ twin) and/or peft + hooks")
    ap.add_argument("--compile-composite", action="store_true",
                    help="--section compile: compiled students keep round 11's composite path "
                         "(FusedLoraRecorder.compiled_product=False); for the step table use --lora-paths composite")
    ap.add_argument("--vanilla-qkv", nargs="+", default=["linear"], choices=PLAIN_QKV,
                    help="q/k/v of the students without LoRA (w/o KD, Vanilla KD): HF's three nn.Linear and/or one "
                         "product per layer (paperlib.loraild.qkv_product.PlainQkv)")
    ap.add_argument("--compare-steps", type=int, default=300)
    ap.add_argument("--compare-window", type=int, default=50)
    ap.add_argument("--run-method", default="loraild_fixed")
    ap.add_argument("--run-epochs", type=int, default=2)
    ap.add_argument("--run-steps", type=int, default=100, help="steps per epoch of the timed run")
    ap.add_argument("--run-batch", type=int, default=128)
    ap.add_argument("--run-test", type=int, default=3200, help="test (and cluster) examples: the paper's cap")
    ap.add_argument("--run-precision", default="no", choices=["no", "bf16"])
    ap.add_argument("--run-min-words", type=int, default=None,
                    help="sentences of --run-min-words to --run-words words, skewed short (default: all --run-words)")
    ap.add_argument("--run-pad", default="max", choices=["max", "longest"],
                    help="training batches padded to max_length (the authors') or to their longest sentence")
    ap.add_argument("--run-words", type=int, default=None,
                    help="words per synthetic sentence (default: fill --seq; SST-2's sentences average about 20)")
    ap.add_argument("--run-compile", nargs="+", default=["off"],
                    help="compile modes of the run, one run each (e.g. off auto); --compile overrides")
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--kmeans-examples", type=int, default=3200)
    ap.add_argument("--kmeans-sets", type=int, default=6, help="feature sets compared with scikit-learn")
    args = ap.parse_args()
    if args.section == "run":
        out = run_phases(args)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"section": "run", "args": vars(args), **out}, fh, indent=1)
        return

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    t_cfg, s_cfg = model_configs(args.tiny)
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "batch": args.batch, "seq": args.seq, "rank": args.rank}
    import transformers
    info["transformers"] = transformers.__version__
    rate = matmul_rate(device, 8192 if device.type == "cuda" else 512, 30 if device.type == "cuda" else 3)
    info["bf16_matmul_flops"] = rate
    print(json.dumps(info))
    if args.section == "kmeans":
        out = compare_kmeans(args, device, t_cfg, s_cfg, TASK)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"section": "kmeans", "info": info, **out}, fh, indent=1)
        return

    if device.type == "cuda":  # build (or load) the C++ product before any row is timed
        t0 = time.perf_counter()
        info["cpp_product"] = qkv_native.available()
        print(f"C++ q/k/v product available: {info['cpp_product']} ({time.perf_counter() - t0:.1f} s to build or load)")
    teacher = build_teacher(t_cfg, args.rank, device)
    info["attn_implementation"] = teacher.config._attn_implementation
    info["compile"] = args.compile
    n = args.batch * (args.warmup + args.steps)
    split = make_split(n, args.seq, t_cfg.vocab_size)
    builds = {}
    caches = {}
    for bf16 in (False, True) if "bf16" in args.dtypes else (False,):
        if ("bf16" if bf16 else "fp32") not in args.dtypes:
            continue
        sync(device)
        t0 = time.perf_counter()
        parts = teacher_parts(teacher, split, args.seq, device, bf16)
        sync(device)
        builds["bf16" if bf16 else "fp32"] = time.perf_counter() - t0
        caches[bf16] = tc.TeacherCache(parts).to(device)  # as train.teacher_outputs does on a GPU
    print(f"teacher cache build ({n} examples, all parts): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in builds.items()))
    if args.section == "compile":
        out = compare_compile(args, device, t_cfg, s_cfg, split, caches[True] if True in caches else caches[False], TASK)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"section": "compile", "info": info, **out}, fh, indent=1)
        return
    # hooks added after torch.compile are not traced: the live teacher's recorder is attached first
    t_recorder = LoraFeatureRecorder(teacher)
    if args.compile:
        teacher.compile(mode=None if args.compile == "default" else args.compile)

    # every row ``--repeats`` times, interleaved (A B C A B C), and the median kept: rows of equal
    # work measured once differed by up to 20% in one run
    timings: dict[tuple, list[dict]] = {}
    for rep in range(args.repeats):
        for dtype in args.dtypes:
            bf16 = dtype == "bf16"
            for name in args.methods:
                for mode in [m for m in args.modes if METHODS[name].kd or m == "live"]:
                    for path in (args.lora_paths if METHODS[name].student_lora else args.vanilla_qkv):
                        r = bench_method(name, mode, bf16, teacher, t_recorder, t_cfg, s_cfg, split, caches[bf16],
                                         args, device, path)
                        r["mfu"] = r["flop_rate"] / rate
                        timings.setdefault((dtype, name, mode, path), []).append(r)
                        print(f"{dtype:5s} {name:22s} {mode:6s} {r['lora_path']:11s} {r['samples_per_s']:8.1f} samples/s  "
                              f"{1e3 * r['step_s']:7.1f} ms/step (median {1e3 * r['step_s_median_interval']:6.1f})  "
                              f"host {r['host_ms']:6.2f} ms  {100 * r['mfu']:5.1f}% of bf16 matmul  "
                              f"peak {r['peak_gib']:.1f} GiB  (repeat {rep + 1}/{args.repeats})", flush=True)
    rows = []
    for reps in timings.values():
        r = dict(sorted(reps, key=lambda x: x["step_s"])[len(reps) // 2])  # the median repeat
        r["step_s_repeats"] = [x["step_s"] for x in reps]
        r["step_s_median_interval_repeats"] = [x["step_s_median_interval"] for x in reps]
        r["step_s_median_interval"] = float(np.median(r["step_s_median_interval_repeats"]))
        r["host_ms_repeats"] = [x["host_ms"] for x in reps]
        r["host_ms"] = float(np.median(r["host_ms_repeats"]))
        r["host_phase_ms"] = {k: float(np.median([x["host_phase_ms"][k] for x in reps])) for k in HOST_PHASES}
        rows.append(r)

    def get(name, mode, dtype, path="fused", plain="-"):
        return next((r for r in rows if r["method"] == name and r["mode"] == mode and r["dtype"] == dtype
                     and r["lora_path"] in (path, plain)), None)

    ratios = []
    print("\nratios (measured in this run)")
    for dtype in args.dtypes:
        for mode in args.modes:
            for plain in args.vanilla_qkv:
                base = get("vanilla_kd", mode, dtype, plain="-" if plain == "linear" else "qkv-product")
                for name in args.methods:
                    for path in args.lora_paths:
                        r = get(name, mode, dtype, path)
                        if base and r and name.startswith("loraild"):
                            x = r["step_s"] / base["step_s"]
                            xm = r["step_s_median_interval"] / base["step_s_median_interval"]
                            # each repeat against the Vanilla KD row timed just before it (a busy host's slow
                            # spells last seconds: pairing cancels them), and the fastest repeat of each (the
                            # cost on a host that nothing else slowed)
                            paired = float(np.median([a / b for a, b in zip(r["step_s_median_interval_repeats"],
                                                                             base["step_s_median_interval_repeats"])]))
                            best = min(r["step_s_median_interval_repeats"]) / min(base["step_s_median_interval_repeats"])
                            # the host's own work (the process's CPU time per step): what a host-bound step's
                            # ratio tends to when nothing else loads the host
                            host = r["host_ms"] / base["host_ms"]
                            ratios.append({"what": f"{name} / vanilla_kd step time", "mode": mode, "dtype": dtype,
                                           "lora_path": path, "vanilla_qkv": plain, "ratio": x,
                                           "ratio_median_interval": xm, "ratio_paired_median": paired,
                                           "ratio_fastest": best, "ratio_host_cpu": host,
                                           "host_phase_ms": {"vanilla_kd": base["host_phase_ms"],
                                                             name: r["host_phase_ms"]}})
                            print(f"  {dtype} {mode:6s} {name} ({path} LoRA) / Vanilla KD ({plain} q/k/v) step time: "
                                  f"{x:.3f} (mean), {xm:.3f} (median interval), {paired:.3f} (median of paired "
                                  f"repeats), {best:.3f} (fastest repeats)  (target <= 1.10); host CPU time "
                                  f"{host:.3f} ({r['host_ms']:.2f} against {base['host_ms']:.2f} ms; by phase "
                                  + ", ".join(f"{k} {r['host_phase_ms'][k]:.2f}/{base['host_phase_ms'][k]:.2f}"
                                              for k in HOST_PHASES) + ")")
        for name in args.methods:
            live, cached = get(name, "live", dtype), get(name, "cached", dtype)
            if live and cached:
                x = live["step_s"] / cached["step_s"]
                ratios.append({"what": f"{name} live / cached epoch time", "dtype": dtype, "ratio": x})
                print(f"  {dtype} {name}: recomputing / reusing teacher outputs: {x:.2f}x  (target >= 1.5)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"info": info, "cache_build_s": builds, "rows": rows, "ratios": ratios}, fh, indent=1)
    if args.profile:
        for name in args.profile_method:
            out = args.profile if len(args.profile_method) == 1 else \
                str(Path(args.profile).with_name(f"{Path(args.profile).stem}_{name}{Path(args.profile).suffix}"))
            profile_one(name, args.profile_mode, teacher, t_recorder, t_cfg, s_cfg, split,
                        caches[True] if True in caches else caches[False], args, device, out)


if __name__ == "__main__":
    main()
