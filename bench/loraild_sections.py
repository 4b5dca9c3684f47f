"""Sections of ``bench_loraild.py`` beyond the step table (issue 13):

- ``compile``: eager against ``torch.compile`` losses over a few hundred steps at the paper's sizes;
- ``run``: per-phase wall times of one ``python -m paperlib loraild`` run (random weights);
- ``kmeans``: the device k-means against scikit-learn on features of the paper's sizes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from paperlib.loraild.alignment import LayerAligner
from paperlib.loraild.config import METHODS
from paperlib.loraild.curriculum import method_weights
from paperlib.loraild.distill import DistillModel
from paperlib.loraild.encoding import Collator, EncodedSplit, EpochPermutation, batch_to, make_loader
from paperlib.loraild.loop import adamw
from paperlib.loraild.models import student_lora
from timing import sync


def _student(s_cfg, rank, device, dropout: bool):
    from transformers import AutoModelForSequenceClassification

    cfg = s_cfg if dropout else s_cfg.__class__(**{**s_cfg.to_dict(), "hidden_dropout_prob": 0.0,
                                                   "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0})
    torch.manual_seed(0)
    return student_lora(AutoModelForSequenceClassification.from_config(cfg), rank, 0.05 if dropout else 0.0).to(device)


def compare_compile(args, device, t_cfg, s_cfg, split, cache, task) -> dict:
    """LoRAILD Fixed, cached teacher, bf16 autocast: per-step losses of eager and compiled training
    from the same initial weights and batches.  With dropout, the compiled kernels draw other
    masks, so a second eager run with other dropout draws gives the size of that noise."""
    method = METHODS["loraild_fixed"]
    mode = args.compile or "reduce-overhead"
    steps = args.compare_steps
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    runs = [("eager", None, True, 0), ("eager, other dropout draws", None, True, 1), (f"compiled {mode}", mode, True, 0),
            ("eager, no dropout", None, False, 0), (f"compiled {mode}, no dropout", mode, False, 0)]
    curves, times = {}, {}
    for label, comp, dropout, draws in runs:
        student = _student(s_cfg, args.rank, device, dropout)
        model = DistillModel(student, method, task, t_cfg.num_hidden_layers, t_cfg.hidden_size).to(device).train()
        model.recorder.compiled_product = not getattr(args, "compile_composite", False)
        if comp and args.tiny:  # CPU smoke test: trace with dynamo/AOT autograd, no C++ code generation
            student.compile(backend="aot_eager")
        elif comp:
            student.compile(mode=None if comp == "default" else comp)
        opt = adamw([p for p in model.parameters() if p.requires_grad], 2e-5, 0.01)
        aligner = LayerAligner("fixed", t_cfg.num_hidden_layers, s_cfg.num_hidden_layers, 0)
        weights = method_weights(method, 1, 1, 2)
        sampler = EpochPermutation(len(split), 0)
        loader = make_loader(split, args.batch, Collator(1, args.seq, pad_to_max=True), sampler)
        torch.manual_seed(1000 + draws)  # dropout stream
        losses = []
        batches, epoch = iter(loader), 0
        t0 = time.perf_counter()
        for _ in range(steps):
            try:
                b = next(batches)
            except StopIteration:
                epoch += 1
                sampler.set_epoch(epoch)
                batches = iter(loader)
                b = next(batches)
            b = batch_to(b, device, non_blocking=True)
            with amp:
                tb = cache.lookup(b["idx"], b["input_ids"].shape[1], device)
                loss, _, _ = model(b, tb, weights, aligner.groups(), None)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach().float())
        sync(device)
        times[label] = time.perf_counter() - t0
        curves[label] = torch.stack(losses).tolist()
        model.recorder.remove()
        del model, student, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    w = args.compare_window
    win = {k: [float(np.mean(v[i:i + w])) for i in range(0, steps, w)] for k, v in curves.items()}

    def rel(a, b):
        return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))

    out = {"steps": steps, "window": w, "mode": mode, "compile_product": not getattr(args, "compile_composite", False),
           "seconds": times, "window_means": win,
           "max_rel_window_diff": {
               "compiled vs eager (dropout)": rel(win[f"compiled {mode}"], win["eager"]),
               "eager vs eager, other dropout draws (noise yardstick)": rel(win["eager, other dropout draws"], win["eager"]),
               "compiled vs eager (no dropout)": rel(win[f"compiled {mode}, no dropout"], win["eager, no dropout"])},
           "max_rel_step_diff_no_dropout": rel(curves[f"compiled {mode}, no dropout"], curves["eager, no dropout"]),
           "first_and_last_loss": {k: (v[0], v[-1]) for k, v in curves.items()}}
    print(f"\ncompile vs eager: LoRAILD Fixed, cached teacher, bf16, {steps} steps of {args.batch} x {args.seq}")
    print("window means (" + f"{w} steps):")
    for k, v in win.items():
        print(f"  {k:36s} " + " ".join(f"{x:.4f}" for x in v) + f"   ({times[k]:.1f} s, incl. compiling)")
    for k, v in out["max_rel_window_diff"].items():
        print(f"  largest relative difference of the window means, {k}: {v:.2e}")
    print(f"  largest relative difference per step, compiled vs eager, no dropout: {out['max_rel_step_diff_no_dropout']:.2e}")
    return out


def run_phases(args) -> dict:
    """One ``python -m paperlib loraild`` run at the paper's sizes (random weights, synthetic SST-2
    filling 128 tokens), stage 1 done first; prints the result's ``phases_s`` and the share of steps."""
    bench = Path(__file__).resolve().parent
    sys.path.insert(0, str(bench))
    from bench_loraild_ddp import write_models, write_sst2

    work = Path(args.run_dir or tempfile.mkdtemp(prefix="loraild-run-"))
    models = write_models(work / "models", tiny=args.tiny)
    seq = 32 if args.tiny else args.seq
    n_train = args.run_batch * args.run_steps
    words = min(args.run_words or seq - 2, seq - 2)  # padded to seq tokens either way; the cache keeps real tokens
    glue = write_sst2(work / "glue", n_train=int(n_train / 0.9) + 20, n_dev=args.run_test, words=words,
                      min_words=args.run_min_words)
    common = ["--glue-dir", str(glue), "--teacher", models["teacher"], "--student", models["student"],
              "--epochs", str(args.run_epochs), "--teacher-epochs", "1",
              "--rank", "4" if args.tiny else str(args.rank), "--max-length", str(seq),
              *(["--pad-to-max-length"] if args.run_pad == "max" else []),
              "--ild-start", "0", "--no-group-by-length", "--no-progress", "--batch-size", str(args.run_batch),
              "--max-train", str(n_train), "--max-test", str(args.run_test), "--cluster-max-examples",
              str(args.run_test), "--teacher-cache-max-gb", "16", "--results-dir", str(work / "results")]
    if args.tiny:
        common += ["--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if args.run_precision != "no":
        env["ACCELERATE_MIXED_PRECISION"] = args.run_precision
    root = str(bench.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # stage 1 and the teacher cache first, so the timed run is stage 2 alone
    subprocess.run([sys.executable, "-m", "paperlib", "sweep", "--tasks", "sst2", "--methods", args.run_method,
                    "--seeds", "0", "--teachers-only", *common], env=env, check=True, cwd=root)
    modes = [args.compile] if args.compile else args.run_compile
    out = {}
    for mode in modes:  # the same run once per compile mode (the result is removed in between)
        for old in (work / "results").rglob("seed0-*"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        out[mode] = _one_run(args, work, common + ["--compile", mode], env, root, n_train, seq)
    return out if len(out) > 1 else next(iter(out.values()))


def _one_run(args, work: Path, common: list[str], env: dict, root: str, n_train: int, seq: int) -> dict:
    cli = ["--task", "sst2", "--method", args.run_method, "--seed", "0", *common]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "paperlib", "loraild", *cli], env=env, cwd=root,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(f"run failed ({' '.join(common[-2:])}):\n{proc.stderr[-4000:]}", flush=True)
        return {"failed": proc.stderr[-4000:]}
    result = json.loads(next((work / "results").rglob("seed0-*.json")).read_text())
    phases = result["phases_s"]
    total = result["elapsed_s"]
    steps = args.run_steps * args.run_epochs
    print(f"\none run: {args.run_method}, {args.run_epochs} epochs x {args.run_steps} steps of {args.run_batch} x {seq} "
          f"tokens (sentences of {f'{args.run_min_words}-' if args.run_min_words else ''}{args.run_words or seq - 2} words), test/cluster examples {args.run_test}, "
          f"precision {args.run_precision}, padded to {'max_length' if args.run_pad == 'max' else 'the longest sentence'}, "
          f"{' '.join(common[-2:])} (the run compiled: {result.get('compile')})")
    print(f"process wall {wall:.1f} s (imports, model loading included); run elapsed_s {total:.1f} s; "
          f"epoch train losses {[round(h['train']['loss'], 5) for h in result['history']]}")
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {k:16s} {v:8.2f} s  {100 * v / total:5.1f}%")
    print(f"  steps: {1e3 * phases.get('steps', 0) / steps:.1f} ms/step", flush=True)
    per_epoch = [h.get("steps_s") for h in result["history"]]
    later = per_epoch[1:] if len(per_epoch) > 1 and None not in per_epoch else []
    steady = 1e3 * sum(later) / (args.run_steps * len(later)) if later else None
    if later:  # compiling (or first-use warm-up) falls in the first epoch
        print(f"  steps per epoch {per_epoch} s; after the first epoch {steady:.1f} ms/step", flush=True)
    # the paper's SST-2: 67,349 training examples (60,614 after the 9:1 cut), 20 epochs, batch 128
    paper_train, paper_epochs, paper_test = 60_614, 20, 872
    per_step = phases.get("steps", 0) / steps
    per_epoch_eval = phases.get("evaluation", 0) / args.run_epochs
    fixed = sum(v for k, v in phases.items() if k not in ("steps", "evaluation", "teacher_outputs"))
    extra = {"steps": per_step * (paper_train // args.run_batch) * paper_epochs,
             "evaluation": per_epoch_eval * paper_epochs * (paper_train / 9 + paper_test) / (n_train / 9 + args.run_test),
             "teacher_outputs": phases.get("teacher_outputs", 0) * paper_train / n_train, "fixed": fixed}
    share = extra["steps"] / sum(extra.values())
    print(f"  extrapolated to the paper's SST-2 (60,614 x 20 epochs; per-unit costs of this run): steps "
          f"{extra['steps']:.0f} s of {sum(extra.values()):.0f} s = {100 * share:.1f}% (an estimate, not a measurement)")
    return {"wall_s": wall, "elapsed_s": total, "phases_s": phases, "steps": steps, "compiled": result.get("compile"),
            "train_loss": [h["train"]["loss"] for h in result["history"]], "steps_s_per_epoch": per_epoch,
            "ms_per_step_after_first_epoch": steady,
            "steps_share": phases.get("steps", 0) / total, "extrapolated_sst2": extra, "extrapolated_steps_share": share}


def labelled_split(n: int, seq: int, vocab: int, seed: int = 0) -> EncodedSplit:
    """Random sentences whose label shifts the token distribution (30% of the tokens from the
    label's half of the vocabulary), so the features carry some class structure."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids = torch.randint(3, vocab, (n, seq), generator=g)
    half = (vocab - 3) // 2
    biased = 3 + labels[:, None] * half + torch.randint(0, half, (n, seq), generator=g)
    pick = torch.rand(n, seq, generator=g) < 0.3
    ids = torch.where(pick, biased, ids)
    ids[:, 0], ids[:, -1] = 0, 2
    return EncodedSplit(ids.tolist(), None, labels.numpy())


def compare_kmeans(args, device, t_cfg, s_cfg, task) -> dict:
    """Table 2's features of a (random-weight) LoRAILD student at the paper's sizes; k-means on the
    device (paperlib) against scikit-learn's KMeans(2, n_init=10, random_state=0) on the CPU."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from paperlib.loraild.clusters import cluster_scores, collect_features
    from paperlib.loraild.kmeans import kmeans

    student = _student(s_cfg, args.rank, device, True)
    model = DistillModel(student, METHODS["loraild_fixed"], task, t_cfg.num_hidden_layers, t_cfg.hidden_size).to(device)
    split = labelled_split(args.kmeans_examples, args.seq, t_cfg.vocab_size)
    loader = make_loader(split, 64, Collator(1, args.seq, pad_to_max=True))
    sync(device)
    t0 = time.perf_counter()
    scores = cluster_scores(model, loader, device, 2)
    sync(device)
    whole = time.perf_counter() - t0
    print(f"\ncluster analysis as a run does it ({len(scores)} feature sets, {args.kmeans_examples} examples, "
          f"{device}): {whole:.1f} s")
    feats, gold = collect_features(model, loader, device)
    sets = [(k, li, x) for k, layers in feats.items() for li, x in enumerate(layers)]
    step = max(1, len(sets) // args.kmeans_sets)
    rows = []
    for (kind, module), li, x in sets[::step][: args.kmeans_sets]:
        x = torch.as_tensor(x, device=device)
        sync(device)
        t0 = time.perf_counter()
        ours = kmeans(x, 2, n_init=10, seed=0)
        sync(device)
        t_ours = time.perf_counter() - t0
        xc = x.double().cpu().numpy()
        t0 = time.perf_counter()
        ref = KMeans(n_clusters=2, n_init=10, random_state=0).fit(xc)
        t_ref = time.perf_counter() - t0
        lab = ours.labels.cpu().numpy()
        r = {"kind": kind, "module": module, "layer": li, "dims": int(x.shape[1]),
             "ari_between": float(adjusted_rand_score(ref.labels_, lab)),
             "gold_ari_sklearn": float(adjusted_rand_score(gold, ref.labels_)),
             "gold_ari_ours": float(adjusted_rand_score(gold, lab)),
             "inertia_rel_diff": ours.inertia / ref.inertia_ - 1, "seconds_ours": t_ours, "seconds_sklearn": t_ref}
        rows.append(r)
        print(f"  {kind:6s} {module:10s} layer {li}  D={r['dims']:6d}  ARI(ours, sklearn) {r['ari_between']:.4f}  "
              f"gold ARI sklearn {r['gold_ari_sklearn']:.4f} ours {r['gold_ari_ours']:.4f}  inertia "
              f"{r['inertia_rel_diff']:+.1e}  time ours {t_ours:.2f} s, sklearn {t_ref:.2f} s", flush=True)
    model.recorder.remove()
    return {"cluster_scores_s": whole, "sets": len(scores), "rows": rows,
            "speedup": sum(r["seconds_sklearn"] for r in rows) / max(sum(r["seconds_ours"] for r in rows), 1e-9)}
