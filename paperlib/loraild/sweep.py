"""Sweeps over tasks x methods x seeds: finished runs are skipped, interrupted ones resumed.

The teacher of each task is trained (or found) first; every student run then reuses it and its
cached outputs.  Results are read back from the JSON files, so a repeated sweep costs seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from accelerate import PartialState
from tqdm import tqdm

from paperlib.loraild.config import METHOD_NAMES, METHODS, RunConfig, check_method, check_task
from paperlib.loraild.train import is_finished, load_result, run, train_teacher


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


def run_sweep(base: RunConfig, tasks: Iterable[str], methods: Iterable[str] = METHOD_NAMES,
              seeds: Iterable[int] = range(5), progress: bool = True) -> SweepResult:
    """Run (or resume, or skip) every run of the sweep; returns all results."""
    configs = sweep_configs(base, tasks, methods, seeds)
    teachers: dict[str, dict] = {}
    for cfg in configs:
        if cfg.task not in teachers and any(METHODS[c.method].kd for c in configs if c.task == cfg.task):
            teachers[cfg.task] = train_teacher(cfg.replace(progress=False))
    results, ran, skipped = [], [], []
    bar = tqdm(configs, desc="runs", disable=not (progress and PartialState().is_main_process))
    for cfg in bar:
        key = (cfg.task, cfg.method, cfg.seed)
        if is_finished(cfg):
            skipped.append(key)
            results.append(load_result(cfg))
            continue
        bar.set_postfix_str(f"{cfg.task}/{cfg.method}/seed{cfg.seed}")
        results.append(run(cfg.replace(progress=False) if progress else cfg))
        ran.append(key)
    return SweepResult(results, teachers, ran, skipped)


def collect(base: RunConfig, tasks: Iterable[str], methods: Iterable[str] = METHOD_NAMES,
            seeds: Iterable[int] = range(5)) -> list[dict]:
    """The finished results of a sweep, without running anything."""
    out = []
    for cfg in sweep_configs(base, tasks, methods, seeds):
        r = load_result(cfg)
        if r is not None:
            out.append(r)
    return out


__all__ = ["SweepResult", "sweep_configs", "run_sweep", "collect"]
