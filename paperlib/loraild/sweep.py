"""Sweeps over tasks x methods x seeds: finished runs are skipped, interrupted ones resumed.

The teacher of each task is trained (or found) first; every student run then reuses it and its
cached outputs.  Results are read back from the JSON files, so a repeated sweep costs seconds.

On a CPU, ``workers=2`` runs two students at a time in separate processes of one thread each:
on two cores that is about 1.3x the throughput of one process with two threads, and it does not
collapse when another program keeps a core busy.  Results do not depend on ``workers`` (every run
is seeded on its own).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from accelerate import PartialState
from tqdm import tqdm

from paperlib.loraild.config import METHOD_NAMES, METHODS, RunConfig, check_method, check_task
from paperlib.loraild.train import is_finished, load_result, needed_parts, precompute_teacher, run, train_teacher


@dataclass
class SweepResult:
    """Finished runs and the stage-1 teacher summaries of a sweep."""

    results: list[dict]
    teachers: dict[str, dict]
    ran: list[tuple[str, str, int]]  # (task, method, seed) trained by this call
    skipped: list[tuple[str, str, int]]  # already finished before this call


def sweep_configs(base: RunConfig, tasks: Iterable[str], methods: Iterable[str] = METHOD_NAMES,
                  seeds: Iterable[int] = range(5)) -> list[RunConfig]:
    """Every (task, method, seed) run of the sweep, settings of ``base`` otherwise."""
    tasks, methods, seeds = list(tasks), list(methods), list(seeds)
    for t in tasks:
        check_task(t)
    for m in methods:
        check_method(m)
    return [base.replace(task=t, method=m, seed=s) for t in tasks for m in methods for s in seeds]


def default_workers(device: str | None) -> int:
    """Parallel runs for a sweep: one per core (at most 2) on a CPU, 1 on a GPU or under ``accelerate launch``."""
    import torch

    on_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    if not on_cpu or PartialState().num_processes > 1:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def _init_worker(threads: int) -> None:
    import torch

    from paperlib.children import exit_with_parent

    exit_with_parent()  # a killed sweep takes its workers with it
    torch.set_num_threads(threads)


def run_sweep(base: RunConfig, tasks: Iterable[str], methods: Iterable[str] = METHOD_NAMES,
              seeds: Iterable[int] = range(5), progress: bool = True, workers: int = 1) -> SweepResult:
    """Run (or resume, or skip) every run of the sweep; returns all results (in sweep order)."""
    configs = sweep_configs(base, tasks, methods, seeds)
    teachers: dict[str, dict] = {}
    for cfg in configs:
        if cfg.task in teachers:
            continue
        task_cfgs = [c for c in configs if c.task == cfg.task and METHODS[c.method].kd]
        if not task_cfgs:
            continue
        if workers > 1:  # workers only read the teacher's outputs: compute every part they need now
            parts = tuple(sorted({p for c in task_cfgs for p in needed_parts(c.resolved())}))
            teachers[cfg.task] = precompute_teacher(cfg.replace(progress=False), parts)
        else:
            teachers[cfg.task] = train_teacher(cfg.replace(progress=False))
    results: list[dict | None] = [None] * len(configs)
    ran, skipped, todo = [], [], []
    for i, cfg in enumerate(configs):
        if is_finished(cfg):
            skipped.append((cfg.task, cfg.method, cfg.seed))
            results[i] = load_result(cfg)
        else:
            todo.append(i)
    show = progress and PartialState().is_main_process
    if workers <= 1:
        bar = tqdm(todo, desc="runs", disable=not show)
        for i in bar:
            cfg = configs[i]
            bar.set_postfix_str(f"{cfg.task}/{cfg.method}/seed{cfg.seed}")
            results[i] = run(cfg.replace(progress=False) if progress else cfg)
            ran.append((cfg.task, cfg.method, cfg.seed))
    elif todo:
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(run, configs[i].replace(progress=False)): i for i in todo}
            for fut in tqdm(as_completed(futures), total=len(futures), desc="runs", disable=not show):
                i = futures[fut]
                results[i] = fut.result()
        ran = [(configs[i].task, configs[i].method, configs[i].seed) for i in todo]
    return SweepResult([r for r in results if r is not None], teachers, ran, skipped)


def collect(base: RunConfig, tasks: Iterable[str], methods: Iterable[str] = METHOD_NAMES,
            seeds: Iterable[int] = range(5)) -> list[dict]:
    """The finished results of a sweep, without running anything."""
    out = []
    for cfg in sweep_configs(base, tasks, methods, seeds):
        r = load_result(cfg)
        if r is not None:
            out.append(r)
    return out


__all__ = ["SweepResult", "sweep_configs", "run_sweep", "collect", "default_workers"]
