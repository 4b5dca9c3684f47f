"""Sweep throughput on N GPUs against one: ``python -m paperlib sweep`` runs one run per GPU.

Writes random-weight models of the paper's sizes (RoBERTa-large-config teacher, DistilRoBERTa-base-
config student) and a synthetic SST-2 folder whose sentences fill ``--max-length`` tokens (as
``bench_loraild_ddp.py``), trains the stage-1 teacher and its cached outputs first
(``sweep --teachers-only``, untimed), then times the same grid (methods x seeds) twice through
the CLI, in fresh results folders that share the teacher:

- on one GPU (``CUDA_VISIBLE_DEVICES`` = the first one, the sweep's default of one worker per GPU);
- on every GPU of the machine (one worker process per GPU).

Prints both wall-clock times, runs per hour and their ratio, how many result files each sweep wrote
(every run exactly once), how many runs each sweep reported as trained, the sweep's lane line (how
busy its lanes were, when each started its first run, how long each idled at the end; the JSON
keeps it, and each run's ``started_unix`` and ``worker``), and the largest relative difference of
the runs' epoch losses between the two (same seeds: placement must not change them).

Usage: ``PYTHONPATH=. python bench/bench_sweep_gpus.py --json out.json`` on a multi-GPU machine;
``--tiny`` runs tiny models on the CPU with ``--workers 2`` (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loraild_ddp import finish, write_models, write_sst2  # noqa: E402


def link_or_copy(src: str, dst: str) -> None:
    """A hard link (the teacher's cached outputs are GBs, and only read), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def sweep(args: list[str], env: dict, log: Path) -> tuple[float, str, float]:
    """Run one sweep process; returns its wall time, its stdout and its start (unix seconds)."""
    start_unix, t0 = time.time(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "paperlib", "sweep", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"sweep failed (exit {proc.returncode}); log {log}:\n{proc.stderr[-4000:]}")
    return wall, proc.stdout, start_unix


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["vanilla_kd", "loraild_fixed", "loraild_average"])
    ap.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1 of every method")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps-per-epoch", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--test", type=int, default=872, help="test (and cluster) examples per run")
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU, 2 worker processes")
    ap.add_argument("--prepare-only", action="store_true",
                    help="only write the models, data and the stage-1 teacher with its cached outputs into --out "
                         "(a later call with the same --out times the sweeps)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() and not args.tiny else 0
    if not args.tiny and gpus < 2:
        raise SystemExit(f"this compares N GPUs with one and needs at least 2; this machine has {gpus}")
    if args.tiny:
        args.max_length, args.batch_size = min(args.max_length, 32), min(args.batch_size, 8)
    if args.prepare_only and not args.out:
        raise SystemExit("--prepare-only needs --out (the folder the timed call will read)")
    work = Path(args.out or tempfile.mkdtemp(prefix="sweep-bench-"))
    prepared = (work / "results-teachers").is_dir() and not args.prepare_only  # by an earlier --prepare-only call
    n_train = args.batch_size * args.steps_per_epoch
    if prepared:
        models = {name: str(work / "models" / name) for name in ("teacher", "student")}
        glue = work / "glue"
        print(f"models, data and the teacher: prepared earlier in {work}", flush=True)
    else:
        models = write_models(work / "models", args.tiny)
        glue = write_sst2(work / "glue", n_train=int(n_train / 0.9) + 20, n_dev=args.test, words=args.max_length - 2)
    common = ["--tasks", "sst2", "--methods", *args.methods, "--seeds", *map(str, range(args.seeds)),
              "--glue-dir", str(glue), "--teacher", models["teacher"], "--student", models["student"],
              "--epochs", str(args.epochs), "--ild-start", "0", "--teacher-epochs", "1", "--rank", "4" if args.tiny else "32",
              "--max-length", str(args.max_length), "--pad-to-max-length", "--no-group-by-length", "--no-progress",
              "--batch-size", str(args.batch_size), "--max-train", str(n_train), "--max-test", str(args.test),
              "--cluster-max-examples", str(args.test), "--teacher-cache-max-gb", "16"]
    if args.tiny:
        common += ["--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    one_env = dict(env)
    if gpus:
        first = env.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(gpus)))).split(",")[0]
        one_env["CUDA_VISIBLE_DEVICES"] = first
    n_runs = len(args.methods) * args.seeds
    out = {}
    first_results = None
    for label, run_env, extra in (("1 GPU" if gpus else "1 worker", one_env, ["--workers", "1"]),
                                  (f"{gpus} GPUs" if gpus else "2 workers", env, [] if gpus else ["--workers", "2"])):
        results = work / f"results-{label.replace(' ', '')}"
        if first_results is None and not prepared:  # the teacher and its cached outputs: trained once, untimed
            sweep(common + ["--results-dir", str(results), "--teachers-only"], env, work / f"teacher-{label}.log")
            first_results = results
            shutil.copytree(results, work / "results-teachers", copy_function=link_or_copy)
            if args.prepare_only:
                print(f"stage 1 and the teacher's outputs prepared in {work / 'results-teachers'}", flush=True)
                return 0
        else:
            shutil.rmtree(results, ignore_errors=True)
            shutil.copytree(work / "results-teachers", results, copy_function=link_or_copy)
        wall, stdout, start_unix = sweep(common + ["--results-dir", str(results), *extra], run_env, work / f"sweep-{label}.log")
        files = sorted(results.rglob("seed*.json"))
        ran = next((line for line in stdout.splitlines() if line.startswith("ran ")), "?")
        lanes = next((line for line in stdout.splitlines() if " lanes: runs busy " in line), None)  # sweep.lane_line
        losses = {}
        per_run = {}
        for f in files:
            r = json.loads(f.read_text())
            losses[(r["method"], r["seed"])] = [h["train"]["loss"] for h in r["history"]]
            per_run[f"{r['method']}/{r['seed']}"] = {"elapsed_s": r.get("elapsed_s"), "phases_s": r.get("phases_s"),
                                                      "started_unix": r.get("started_unix"), "worker": r.get("worker")}
        out[label] = {"wall_s": wall, "runs": n_runs, "runs_per_hour": 3600 * n_runs / wall, "result_files": len(files),
                      "distinct_runs": len(losses), "reported": ran, "lanes": lanes, "per_run": per_run,
                      "log_tail": (work / f"sweep-{label}.log").read_text()[-3000:], "losses": {f"{m}/{s}": v for (m, s), v in losses.items()}}
        busy = sum(v["elapsed_s"] or 0 for v in per_run.values())
        # the sweep process's own seconds: before its first run starts, after its last run ends
        starts = [v["started_unix"] for v in per_run.values() if v["started_unix"]]
        ends = [v["started_unix"] + v["elapsed_s"] for v in per_run.values() if v["started_unix"] and v["elapsed_s"]]
        if starts and ends:
            out[label]["before_runs_s"] = min(starts) - start_unix
            out[label]["after_runs_s"] = start_unix + wall - max(ends)
        print(f"{label}: {n_runs} runs in {wall:.1f} s (the runs' own elapsed_s add up to {busy:.1f} s) = {out[label]['runs_per_hour']:.0f} runs/hour; "
              f"result files {len(files)} ({len(losses)} distinct runs); sweep said: {ran}", flush=True)
        print(f"  {lanes or 'one lane (no timeline line)'}", flush=True)
        if "before_runs_s" in out[label]:
            print(f"  sweep process: {out[label]['before_runs_s']:.1f} s before its first run started, "
                  f"{out[label]['after_runs_s']:.1f} s after its last run ended", flush=True)
    (a, b) = out.values()
    diffs = [abs(x - y) / max(abs(x), 1e-12) for k in a["losses"] for x, y in zip(a["losses"][k], b["losses"].get(k, []))]
    summary = {"runs_per_hour_ratio": b["runs_per_hour"] / a["runs_per_hour"],
               "max_rel_loss_diff": max(diffs) if diffs else None}
    print(f"\nruns per hour, {list(out)[1]} / {list(out)[0]}: {summary['runs_per_hour_ratio']:.2f}x (target >= 1.8 on 2 GPUs); "
          f"largest relative difference of the epoch losses between the two sweeps: {summary['max_rel_loss_diff']:.1e}")
    return finish(args, work, {"args": vars(args), "gpus": gpus, "sweeps": out, "summary": summary})


if __name__ == "__main__":
    sys.exit(main())
