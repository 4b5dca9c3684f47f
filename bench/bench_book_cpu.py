"""Time of the whole book build, and of each chapter in it, on the embedded defaults (CPU).

Runs ``jupyter-book build book -W -n --keep-going`` as a user does, but *cold*: a fresh output
folder (so the execution cache ``_build/.jupyter_cache`` is empty), and fresh paperlib caches
(``PAPERLIB_CACHE`` for the swap passes, ``PAPERLIB_RESULTS`` for the LoRAILD runs), so every
chapter is executed from scratch.  The per-chapter times are the execution times jupyter-cache
records for each notebook; the build time is the wall-clock time of the whole command.

Prints a table and writes JSON (``--json``).  Other busy processes distort the result: the
script reports the number of cores already busy at the start, and the chapters' own CPU
thread choice (``auto_threads``) reacts to them.

Usage: ``PYTHONPATH=. python bench/bench_book_cpu.py [--json bench/results_book_cpu.json] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from paperlib.loraild.train import busy_cores

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    return str(exe) if exe.exists() else "jupyter-book"


def chapter_times(build: Path) -> dict[str, float]:
    """Execution seconds per notebook, from the build's jupyter-cache."""
    from jupyter_cache import get_cache

    cache = get_cache(build / "_build" / ".jupyter_cache")
    return {Path(r.uri).stem: float(r.data.get("execution_seconds", float("nan")))
            for r in cache.list_cache_records()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--keep", default=None, help="build into this folder and keep it (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="book-bench-"))
    if args.keep and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = dict(os.environ, PAPERLIB_CACHE=str(work / "paperlib-cache"), PAPERLIB_RESULTS=str(work / "results"),
               HF_HUB_OFFLINE="1")
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
            "cores": os.cpu_count(), "busy_cores_at_start": round(busy_cores(1.0), 2),
            "python": platform.python_version()}
    print(json.dumps(info))
    if info["busy_cores_at_start"] > 0.5:
        print("warning: other processes keep the CPU busy; the times below include their interference")

    cmd = [jupyter_book(), "build", str(ROOT / "book"), "--path-output", str(work / "build"), "-W", "-n",
           "--keep-going"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / "build.log").write_text(proc.stdout + proc.stderr)
    chapters = chapter_times(work / "build")

    print(f"\n{'chapter':28s} {'executed in':>12s}")
    for name, sec in sorted(chapters.items()):
        print(f"{name:28s} {sec:10.1f} s")
    executed = sum(chapters.values())
    print(f"{'all chapters':28s} {executed:10.1f} s")
    print(f"{'whole build (wall clock)':28s} {wall:10.1f} s   exit code {proc.returncode}"
          f"   (rendering and start-up: {wall - executed:.1f} s)")
    if proc.returncode:
        print(f"build failed; log: {work / 'build.log'}\n{proc.stderr[-3000:]}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"info": info, "chapters_s": chapters, "executed_s": executed, "build_s": wall,
             "returncode": proc.returncode}, indent=1))
    if not args.keep and proc.returncode == 0:
        shutil.rmtree(work, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
