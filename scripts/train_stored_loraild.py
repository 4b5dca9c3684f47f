"""Train paper B's stored GPU runs (chapter 04, profile ``embedded-gpu``) on a machine with GPUs.

    python scripts/train_stored_loraild.py --results-dir stored/loraild_mpnet --procs-per-gpu 4

1. Stage 1 for each ``--teacher-lrs`` value (LoRA r = 32 teachers, one process per GPU at a time).
2. The teacher with the best valid score is chosen (``teacher_choice.json``: the authors picked
   their teacher checkpoint by hand after an lr sweep; here the rule is written down).
3. Its outputs (logits, LoRA-A features, pooled states) are cached once.
4. Every (method, seed) is trained by ``python -m paperlib loraild --profile embedded-gpu ...`` in
   its own process, ``--procs-per-gpu`` at a time on each GPU (small students leave a GPU mostly
   idle, so several runs share one).  Finished runs are skipped: rerun to continue.

Everything is paperlib's own code; this script only schedules it.  ``--snapshot FILE`` writes a
tar.gz of the results' JSON files every ``--snapshot-every`` seconds and at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paperlib.loraild.config import METHOD_NAMES, RunConfig  # noqa: E402


#: ``--smoke``: a few examples and one epoch, to check the whole script end to end on a CPU
SMOKE = dict(max_train=48, max_valid=16, max_test=16, teacher_epochs=1, epochs=1, cluster_max_examples=16,
             ild_start=0)


def overrides(args) -> dict:
    out = dict(SMOKE) if args.smoke else {}
    if args.epochs:
        out["epochs"] = args.epochs
    return out


def base_config(args, teacher_lr: float | None = None) -> RunConfig:
    return RunConfig(task="rotten_tomatoes", profile="embedded-gpu", results_dir=str(args.results_dir),
                     teacher_lr=teacher_lr, progress=False, **overrides(args))


def config_source(args, teacher_lr: float) -> str:
    """Python source of :func:`base_config` for a subprocess."""
    extra = "".join(f", {k}={v!r}" for k, v in overrides(args).items())
    return (f"RunConfig(task='rotten_tomatoes', profile='embedded-gpu', results_dir={str(args.results_dir)!r}, "
            f"teacher_lr={teacher_lr!r}, progress=False{extra})")


def gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) or [-1]


def env_for(gpu: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    if gpu >= 0:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def run_pool(commands: list[list[str]], slots: list[int], log_dir: Path, labels: list[str] | None = None) -> list[int]:
    """Run ``commands`` with one process per entry of ``slots`` (a GPU index each) at a time."""
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = list(enumerate(commands))
    running: dict[int, tuple[subprocess.Popen, int]] = {}
    codes = [0] * len(commands)
    free = list(slots)
    while pending or running:
        while pending and free:
            i, cmd = pending.pop(0)
            gpu = free.pop(0)
            log = open(log_dir / f"job{i:03d}.log", "w")
            running[i] = (subprocess.Popen(cmd, env=env_for(gpu), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), gpu)
        time.sleep(1)
        for i, (proc, gpu) in list(running.items()):
            if proc.poll() is not None:
                codes[i] = proc.returncode
                free.append(gpu)
                del running[i]
                status = "ok" if proc.returncode == 0 else f"FAILED ({proc.returncode}), log {log_dir}/job{i:03d}.log"
                what = labels[i] if labels else f"job {i}"
                print(f"[{time.strftime('%H:%M:%S')}] {what} on GPU {gpu}: {status}", flush=True)
    return codes


def snapshot(results: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in sorted(results.rglob("*.json")):
            tar.add(p, arcname=str(p.relative_to(results.parent)))
        for p in sorted(results.rglob("*.log")):
            tar.add(p, arcname=str(p.relative_to(results.parent)))
    os.replace(tmp, target)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results-dir", type=Path, default=ROOT / "stored" / "loraild_mpnet")
    ap.add_argument("--teacher-lrs", type=float, nargs="+", default=[1e-4, 2e-4, 5e-4])
    ap.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=None, help="default: the profile's (20)")
    ap.add_argument("--procs-per-gpu", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="a few examples, one epoch (check the script on a CPU)")
    ap.add_argument("--snapshot", type=Path, default=None)
    ap.add_argument("--snapshot-every", type=float, default=30.0)
    args = ap.parse_args()
    args.results_dir = args.results_dir.resolve()
    logs = args.results_dir / "logs"
    stop = threading.Event()
    if args.snapshot:
        def loop():
            while not stop.wait(args.snapshot_every):
                snapshot(args.results_dir, args.snapshot)
        threading.Thread(target=loop, daemon=True).start()
    t0 = time.time()
    devices = gpus()
    py = sys.executable

    from paperlib.loraild.run_files import teacher_dir
    from paperlib.loraild.teacher import teacher_finished

    # 1. stage-1 teachers not finished yet (a rerun starts no process for a finished one), one per GPU at a time
    todo = [lr for lr in args.teacher_lrs if not teacher_finished(base_config(args, lr).resolved())]
    teach = [[py, "-c", "from paperlib.loraild.config import RunConfig; "
              "from paperlib.loraild.teacher import train_teacher; "
              f"train_teacher({config_source(args, lr)})"] for lr in todo]
    codes = run_pool(teach, devices, logs / "teachers", [f"teacher lr {lr:g}" for lr in todo])
    if any(codes):
        print("a teacher failed; see the logs", file=sys.stderr)
        return 1

    summaries = {}
    for lr in args.teacher_lrs:
        cfg = base_config(args, lr).resolved()
        assert teacher_finished(cfg)
        summaries[lr] = json.loads((teacher_dir(cfg) / "teacher.json").read_text())
    best_lr = max(summaries, key=lambda lr: summaries[lr]["best_valid"])
    choice = {"rule": "the teacher lr with the best valid score (best epoch of each teacher)",
              "candidates": {f"{lr:g}": {k: summaries[lr][k] for k in ("best_epoch", "best_valid", "best_test")}
                             for lr in args.teacher_lrs},
              "chosen_teacher_lr": best_lr}
    (args.results_dir / "teacher_choice.json").write_text(json.dumps(choice, indent=1))
    print(f"[{time.time() - t0:.0f}s] teacher lr {best_lr:g} chosen: {json.dumps(choice['candidates'])}", flush=True)

    # 2. the chosen teacher's outputs, cached once for every run
    pre = [[py, "-c", "from paperlib.loraild.config import RunConfig; "
            "from paperlib.loraild.teacher import precompute_teacher; "
            f"precompute_teacher({config_source(args, best_lr)})"]]
    if any(run_pool(pre, devices[:1], logs / "cache", ["teacher outputs"])):
        print("caching the teacher's outputs failed; see the logs", file=sys.stderr)
        return 1
    print(f"[{time.time() - t0:.0f}s] teacher outputs cached", flush=True)

    # 3. every (method, seed), several processes per GPU
    runs = [[py, "-m", "paperlib", "loraild", "--profile", "embedded-gpu", "--task", "rotten_tomatoes",
             "--method", m, "--seed", str(s), "--teacher-lr", f"{best_lr!r}", "--results-dir", str(args.results_dir),
             "--no-progress"] + [x for k, v in overrides(args).items() for x in (f"--{k.replace('_', '-')}", str(v))]
            for s, m in itertools.product(args.seeds, args.methods)]
    slots = [g for g in devices for _ in range(args.procs_per_gpu)]
    codes = run_pool(runs, slots, logs / "runs", [f"{m}/seed{s}" for s, m in itertools.product(args.seeds, args.methods)])
    stop.set()
    if args.snapshot:
        snapshot(args.results_dir, args.snapshot)
    print(f"[{time.time() - t0:.0f}s] {codes.count(0)} of {len(runs)} runs finished", flush=True)
    return 0 if not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
