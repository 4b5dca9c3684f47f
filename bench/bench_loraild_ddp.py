"""Data-parallel LoRAILD training: N processes against one at the same global batch.

Writes random-weight models of the paper's sizes (teacher: RoBERTa-large config, 24 layers,
d = 1024; student: DistilRoBERTa-base config, 6 layers, d = 768; vocabulary 50,265; dropout off
so that both runs see the same arithmetic) and a synthetic SST-2 folder in the GLUE layout whose
sentences fill ``--max-length`` tokens, then trains the same run (stage 1 teacher + stage 2
LoRAILD, same seed, same global batch, same data order) twice through the package's CLI:

- one process (``python -m paperlib loraild``, first GPU only);
- ``--nproc`` processes (``accelerate launch --multi_gpu --num_processes N`` on GPUs, or
  ``torch.distributed.run`` with gloo on the CPU for ``--tiny``).

Prints wall-clock times and the speed-up, the per-epoch training losses of both runs and their
largest relative difference, and counts what was written (one result JSON, one teacher, no
checkpoint left behind).  ``--batch-size`` of the CLI is the global batch: each of the N
processes takes ``global / N`` examples per step.

Usage on a two-GPU machine: ``PYTHONPATH=. python bench/bench_loraild_ddp.py --json out.json``;
on the CPU: ``PYTHONPATH=. python bench/bench_loraild_ddp.py --tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ["the", "a", "movie", "film", "plot", "actor", "is", "was", "very", "this", "and", "but",
         "good", "great", "love", "fun", "fine", "superb", "bad", "awful", "hate", "boring", "dull", "weak"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SIZES = {"teacher": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
         "student": dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072)}
TINY = {"teacher": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64),
        "student": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)}


def write_models(root: Path, tiny: bool) -> dict[str, str]:
    """Random-weight teacher and student folders with a word-piece tokenizer (no download)."""
    import torch
    from transformers import BertTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    # a vocab dict: transformers 5 reads only the special tokens from vocab_file here, so every
    # word would become [UNK]
    words = (root / "vocab.txt").read_text().split()
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    out = {}
    for name, sizes in (TINY if tiny else SIZES).items():
        torch.manual_seed(0)
        cfg = RobertaConfig(vocab_size=100 if tiny else 50265, max_position_embeddings=514, type_vocab_size=1,
                            pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            classifier_dropout=0.0, **sizes)
        RobertaForSequenceClassification(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def models_in(root: Path, tiny: bool) -> dict[str, str]:
    """The teacher and student folders under ``root``: those an earlier call wrote (``--prepare-only``,
    a second call with the same ``--out``), else new ones (:func:`write_models`)."""
    if (root / "student" / "config.json").exists():
        return {name: str(root / name) for name in ("teacher", "student")}
    return write_models(root, tiny)


def write_sst2(root: Path, n_train: int, n_dev: int, words: int, min_words: int | None = None) -> Path:
    """GLUE-layout SST-2 with sentences of ``words`` words; the label decides a few of them.  With
    ``min_words``: lengths from ``min_words`` up, skewed short like SST-2's (``min_words`` plus an
    exponential draw of mean 12 words, at most ``words``)."""
    rng = random.Random(0)

    def sentence(label: int) -> str:
        pool = WORDS[12:18] if label else WORDS[18:]
        n = words if min_words is None else min(words, min_words + int(rng.expovariate(1 / 12)))
        return " ".join(rng.choice(WORDS[:12]) if rng.random() < 0.8 else rng.choice(pool) for _ in range(n))

    (root / "SST-2").mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        labels = [rng.randint(0, 1) for _ in range(n)]
        lines = ["sentence\tlabel"] + [f"{sentence(y)}\t{y}" for y in labels]
        (root / "SST-2" / name).write_text("\n".join(lines) + "\n")
    return root


def finish(args: argparse.Namespace, work: Path, figures: dict) -> int:
    """Write ``figures`` to ``--json`` (if given) and remove the work folder unless ``--out`` named it."""
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def launch(nproc: int, gpu: bool, cli_args: list[str], log: Path, entry: list[str] | None = None) -> float:
    """Run the CLI in ``nproc`` processes; returns the wall-clock seconds.  ``entry``: a script and its
    options to run instead of ``-m paperlib`` (``profile_cli_steps.py``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    program = entry or ["-m", "paperlib"]
    if nproc == 1:
        cmd = [sys.executable, *program, "loraild", *cli_args]
        if gpu:
            env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    elif gpu:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               *program, "loraild", *cli_args]
    else:
        env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *program, "loraild", *cli_args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"{nproc}-process run failed (exit {proc.returncode}); log {log}:\n{proc.stderr[-4000:]}")
    return wall


def fresh_results(results: Path, prepared: Path | None) -> Path:
    """An empty results folder holding only the prepared teacher (when there is one)."""
    shutil.rmtree(results, ignore_errors=True)
    if prepared is not None:
        shutil.copytree(prepared, results)
    return results


def one_epoch(cli: list[str], batch: int) -> list[str]:
    """``cli`` for one epoch at global batch ``batch`` (the same data: the same prepared teacher)."""
    out = list(cli)
    for opt, value in (("--epochs", "1"), ("--batch-size", str(batch))):
        out[out.index(opt) + 1] = value
    return out


def half_batch_run(args, gpu: bool, cli: list[str], prepared: Path | None, work: Path) -> dict:
    """One process at the per-process batch of the N-process run, one epoch: its step time is what
    each of the N processes would take per step if data parallelism cost nothing."""
    batch = args.global_batch // args.nproc
    results = fresh_results(work / "results-half", prepared)
    launch(1, gpu, one_epoch(cli, batch) + ["--results-dir", str(results)], work / "log-half.txt")
    h = json.loads(sorted(results.rglob("seed0-*.json"))[0].read_text())["history"][0]
    ms = 1e3 * h["steps_s"] / max(h["steps"], 1)
    print(f"1 process at batch {batch} (one epoch, {h['steps']} steps): {ms:.1f} ms per step", flush=True)
    return {"batch": batch, "steps": h["steps"], "step_ms": ms}


def profile_runs(args, gpu: bool, cli: list[str], prepared: Path | None, work: Path) -> dict:
    """Profiled one-epoch runs: 1 process at the per-process batch, N processes at the global batch."""
    script = str(Path(__file__).resolve().parent / "profile_cli_steps.py")
    out = work / "profiles"
    tables = {}
    for n, batch in ((1, args.global_batch // args.nproc), (args.nproc, args.global_batch)):
        results = fresh_results(work / f"results-profile-{n}", prepared)
        first = min(20, args.steps_per_epoch // 3)  # after the warm-up steps, within the epoch
        count = max(1, min(args.profile_steps, args.steps_per_epoch - first - 1))
        entry = [script, "--profile-out", str(out), "--profile-from", str(first), "--profile-steps", str(count),
                 *(["--trace"] if args.trace else [])]
        launch(n, gpu, one_epoch(cli, batch) + ["--results-dir", str(results)], work / f"log-profile-{n}.txt", entry)
        for f in sorted(out.glob(f"profile_{n}proc_rank*.txt")):
            tables[f.name] = f.read_text()
            print(f"{f.name}: {f.read_text().splitlines()[1]}", flush=True)
    return tables


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=64, help="examples per optimizer step, all processes")
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--method", default="loraild_fixed")
    ap.add_argument("--words", type=int, default=None,
                    help="words per synthetic sentence (default: fill --max-length; SST-2's average about 20)")
    ap.add_argument("--precompute", action=argparse.BooleanOptionalAction, default=True,
                    help="train stage 1 and cache the teacher's outputs once before the timed runs (as a sweep "
                         "does per task); --no-precompute times them inside each run")
    ap.add_argument("--prepare-only", action="store_true",
                    help="only write the models, data and prepared teacher into --out (a later call times the runs)")
    ap.add_argument("--half-batch", action="store_true",
                    help="also time one process at the per-process batch (global / N) for one epoch: what a "
                         "data-parallel step could take at best")
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="then profile N stage-2 steps (from step 20) of a one-epoch run in one process at the "
                         "per-process batch and in N processes (bench/profile_cli_steps.py); tables in --out")
    ap.add_argument("--trace", action="store_true",
                    help="with --profile-steps: also each process's timeline (profiles/trace_*.json in --out)")
    ap.add_argument("--tiny", action="store_true", help="tiny models, gloo on the CPU")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    gpu = torch.cuda.is_available() and not args.tiny
    if gpu and torch.cuda.device_count() < args.nproc and not args.prepare_only:
        raise SystemExit(f"{args.nproc} processes need {args.nproc} GPUs; this machine has {torch.cuda.device_count()}")
    if args.global_batch % args.nproc:
        raise SystemExit(f"--global-batch {args.global_batch} is not a multiple of --nproc {args.nproc}")
    if args.tiny:
        args.max_length = min(args.max_length, 32)
    if args.prepare_only and not args.out:
        raise SystemExit("--prepare-only needs --out (the folder the timed call will read)")
    work = Path(args.out or tempfile.mkdtemp(prefix="ddp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    models = models_in(work / "models", args.tiny)
    n_train = args.global_batch * args.steps_per_epoch  # a multiple of the global batch: no padded last step
    words = min(args.words or args.max_length - 2, args.max_length - 2)  # padded to max_length either way
    glue = work / "glue"
    if not (glue / "SST-2" / "dev.tsv").exists():
        write_sst2(glue, n_train=int(n_train / 0.9) + 20, n_dev=256, words=words)
    run_id = ["--task", "sst2", "--method", args.method, "--seed", "0"]
    common = ["--glue-dir", str(glue), "--teacher", models["teacher"], "--student", models["student"],
           "--epochs", str(args.epochs), "--teacher-epochs", "1",
           "--rank", "4" if args.tiny else "32", "--lr", "2e-5", "--teacher-lr", "1e-4",
           "--max-length", str(args.max_length), "--pad-to-max-length", "--ild-start", "0",
           "--lora-dropout", "0", "--no-group-by-length", "--no-progress", "--batch-size", str(args.global_batch),
           "--max-train", str(n_train), "--max-valid", "256", "--max-test", "256", "--teacher-cache-max-gb", "16",
           "--checkpoint"]
    cli = run_id + common
    prepared = None
    if args.precompute and (work / "results-teachers").is_dir() and not args.prepare_only:
        prepared = work / "results-teachers"  # from an earlier --prepare-only call with the same --out
        print(f"stage 1 and the teacher's outputs: prepared earlier in {prepared}", flush=True)
    elif args.precompute:  # stage 1 and the teacher's cached outputs once, untimed, as a sweep does per task
        prepared = work / "results-teachers"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if gpu:
            env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "paperlib", "sweep", "--tasks", "sst2", "--methods", args.method,
                               "--seeds", "0", "--teachers-only", *common, "--results-dir", str(prepared)],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"teacher preparation failed:\n{proc.stderr[-4000:]}")
        print(f"stage 1 and the teacher's outputs, prepared once (untimed): {time.perf_counter() - t0:.1f} s", flush=True)
        if args.prepare_only:
            return 0
    runs = {}
    for n in sorted({1, args.nproc}):  # --nproc 1: the single-process run alone (a one-GPU baseline)
        results = fresh_results(work / f"results-{n}", prepared)
        wall = launch(n, gpu, cli + ["--results-dir", str(results)], work / f"log-{n}.txt")
        found = sorted(results.rglob("seed0-*.json"))
        teachers = sorted(results.rglob("teacher.safetensors"))
        leftovers = [str(p) for p in results.rglob("*.ckpt")] + [str(p) for p in results.rglob("ckpt")]
        result = json.loads(found[0].read_text())
        teacher = json.loads(sorted(results.rglob("teacher.json"))[0].read_text())
        runs[n] = {"wall_s": wall, "train_examples": n_train, "steps": args.steps_per_epoch * args.epochs, "teacher_s": teacher["elapsed_s"], "stage2_s": result["elapsed_s"],
                   "phases_s": result.get("phases_s", {}), "num_processes": result["num_processes"], "device": result["device"],
                   "result_files": len(found), "teacher_files": len(teachers), "checkpoints_left": leftovers,
                   "train_loss": [h["train"]["loss"] for h in result["history"]],
                   "inter": [h["train"].get("inter") for h in result["history"]],
                   "valid": [h["valid_score"] for h in result["history"]], "history": result["history"]}
        print(f"{n} process(es) on {result['device']}: wall {wall:.1f} s (teacher {teacher['elapsed_s']:.1f} s, "
              f"stage 2 {result['elapsed_s']:.1f} s); result files {len(found)}, teacher files {len(teachers)}, "
              f"checkpoints left {len(leftovers)}", flush=True)
    for n, res in runs.items():
        per_epoch = [round(1e3 * h["steps_s"] / max(h["steps"], 1), 1) for h in res.pop("history")]
        res["step_ms_by_epoch"] = per_epoch
        print(f"  {n} process(es): ms per optimizer step, by epoch: {per_epoch}", flush=True)
    extra = {}
    if args.half_batch and args.nproc > 1:
        extra["half_batch"] = half_batch_run(args, gpu, cli, prepared, work)
    if args.profile_steps and args.nproc > 1:
        extra["profiles"] = profile_runs(args, gpu, cli, prepared, work)
    if args.nproc == 1:
        return finish(args, work, {"args": vars(args), "gpu": gpu, "runs": runs, **extra})
    one, many = runs[1], runs[args.nproc]
    print(f"\n{'epoch':>5s} {'loss, 1 proc':>14s} {f'loss, {args.nproc} procs':>14s} {'rel. diff':>10s}")
    diffs = []
    for e, (a, b) in enumerate(zip(one["train_loss"], many["train_loss"])):
        diffs.append(abs(a - b) / max(abs(a), 1e-12))
        print(f"{e:5d} {a:14.6f} {b:14.6f} {diffs[-1]:10.2e}")
    summary = {"speedup_wall": one["wall_s"] / many["wall_s"], "speedup_stage2": one["stage2_s"] / many["stage2_s"],
               "speedup_teacher": one["teacher_s"] / many["teacher_s"], "max_rel_loss_diff": max(diffs)}
    for phase in sorted(set(one["phases_s"]) | set(many["phases_s"])):  # process_group: only with N > 1
        a, b = one["phases_s"].get(phase, 0.0), many["phases_s"].get(phase, 0.0)
        summary.setdefault("speedup_by_phase", {})[phase] = a / b if a > 0 and b > 0 else None
        print(f"  stage-2 phase {phase:<18s} {a:8.2f} s on 1, {b:8.2f} s on {args.nproc}: "
              f"{a / b if a > 0 and b > 0 else float('nan'):.2f}x")
    stage1 = "stage 1 prepared once before both (not compared)" if args.precompute else \
        f"{summary['speedup_teacher']:.2f}x stage 1"
    if args.precompute:
        summary.pop("speedup_teacher")
    print(f"\nspeed-up with {args.nproc} processes: {summary['speedup_wall']:.2f}x wall clock (process starts "
          f"included), {stage1}, {summary['speedup_stage2']:.2f}x stage 2 (the run's elapsed_s); "
          f"largest relative difference of the epoch losses {summary['max_rel_loss_diff']:.1e}")
    return finish(args, work, {"args": vars(args), "gpu": gpu, "runs": runs, "summary": summary, **extra})


if __name__ == "__main__":
    sys.exit(main())
