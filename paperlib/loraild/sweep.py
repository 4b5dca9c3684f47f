"""Sweeps over tasks x methods x seeds: finished runs are skipped, interrupted ones resumed.

The teacher of each task is trained (or found) first; every student run then reuses it and its
cached outputs.  Results are read back from the JSON files, so a repeated sweep costs seconds.

On a machine with N GPUs the sweep trains N runs at once, one per GPU (job-level parallelism: the
runs of a sweep are small and independent): this process trains on the first GPU and N - 1 spawned
processes on the others, each lane taking the next run when it is free (a worker's start costs
seconds of imports and a CUDA context that this process has already paid; :mod:`dispatch`).  On a
CPU, ``workers=2`` runs two students at a time in two processes of one thread each: on two cores
that is about 1.3x the throughput of one process with two threads, and it does not collapse when
another program keeps a core busy.  A sweep that trained runs in several lanes returns one line of
its timeline (:func:`lane_line`, printed by ``python -m paperlib sweep``): how busy the lanes were,
when each started, how long each idled at the end.  ``backend="ray"`` hands the runs to a Ray
cluster, ``shard`` splits the grid for a job array (:mod:`dispatch`).  Results do not depend on
where runs execute (every run is seeded on its own).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from accelerate import PartialState
from tqdm import tqdm

from paperlib.loraild.config import METHOD_NAMES, METHODS, RunConfig, check_method, check_task
from paperlib.loraild.dispatch import (RayPool, absolute, local_pool, plan_workers, precompute, ray_connect,
                                      ray_gpus_per_run, shard_configs, under_launcher)
from paperlib.loraild.teacher import outputs_cached
from paperlib.loraild.train import is_finished, load_result, needed_parts, run, teacher_finished, train_teacher


@dataclass
class SweepResult:
    """Finished runs and the stage-1 teacher summaries of a sweep."""

    results: list[dict]
    teachers: dict[str, dict]
    ran: list[tuple[str, str, int]]  # (task, method, seed) trained by this call
    skipped: list[tuple[str, str, int]]  # already finished before this call
    lanes: str | None = None  # timeline of this call's runs (:func:`lane_line`) when they ran in several lanes


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
    """Parallel runs for a sweep: one per GPU; one per core (at most 2) on a CPU; 1 under ``accelerate launch``."""
    if under_launcher() or PartialState().num_processes > 1:
        return 1
    plan = plan_workers(device, None)
    return plan.workers if plan.gpus else max(1, min(2, os.cpu_count() or 1))


def lane_line(results: list[dict], began: float, ended: float) -> str | None:
    """One line on where a sweep's time went: its runs (``started_unix`` >= ``began``) grouped by the
    process that trained them (``worker``: host, pid), or ``None`` for fewer than 2 runs or 2 lanes.

    busy = sum of the runs' ``elapsed_s`` out of lanes x (``ended`` - ``began``); per lane: its first
    run's start after ``began`` and its idle time at the end (``ended`` - its last run's end).
    """
    lanes: dict[tuple, list[dict]] = {}
    for r in results:
        if r.get("started_unix", -1.0) >= began and r.get("worker"):
            lanes.setdefault((r["worker"].get("host"), r["worker"].get("pid")), []).append(r)
    if len(lanes) < 2 or sum(map(len, lanes.values())) < 2:
        return None
    order = sorted(lanes.values(), key=lambda rs: min(r["started_unix"] for r in rs))
    wall = ended - began
    busy = sum(r["elapsed_s"] for rs in order for r in rs)
    first = " / ".join(f"{min(r['started_unix'] for r in rs) - began:.1f}" for rs in order)
    idle = " / ".join(f"{ended - max(r['started_unix'] + r['elapsed_s'] for r in rs):.1f}" for rs in order)
    return (f"{len(order)} lanes: runs busy {busy:.1f} s of {len(order)} x {wall:.1f} s "
            f"({100 * busy / max(len(order) * wall, 1e-9):.0f}%); first run started {first} s after the sweep "
            f"began, idle {idle} s at the end (per lane)")


def _teacher_jobs(configs: list[RunConfig]) -> dict[str, tuple[RunConfig, tuple[str, ...]]]:
    """Per task with KD runs: its first config and every teacher output its runs read."""
    jobs = {}
    for cfg in configs:
        if cfg.task in jobs:
            continue
        task_cfgs = [c for c in configs if c.task == cfg.task and METHODS[c.method].kd]
        if task_cfgs:
            parts = tuple(sorted({p for c in task_cfgs for p in needed_parts(c.resolved())}))
            jobs[cfg.task] = (cfg.replace(progress=False), parts)
    return jobs


def run_sweep(base: RunConfig, tasks: Iterable[str], methods: Iterable[str] = METHOD_NAMES,
              seeds: Iterable[int] = range(5), progress: bool = True, workers: int | None = 1,
              backend: str = "local", address: str | None = None, shard: tuple[int, int] | None = None,
              teachers_only: bool = False) -> SweepResult:
    """Run (or resume, or skip) every run of the sweep; returns all results (in sweep order).

    ``backend="local"``: ``workers`` lanes (``None``: one per GPU on a GPU machine, else 1;
    :func:`~paperlib.loraild.dispatch.plan_workers`): this process and ``workers - 1`` spawned ones.
    ``backend="ray"``: every run a Ray task on the cluster at ``address`` (``"auto"``: the running
    cluster; ``None``: a local instance) asking for one GPU (none on a CPU-only cluster); results go
    to ``results_dir``, which every node must see.  ``shard=(K, N)`` keeps runs ``K, K+N, ...``
    (a SLURM job array).  Stage-1 teachers and their cached outputs are computed once, before any
    run starts; ``teachers_only`` stops there.
    """
    began = time.time()
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', not {backend!r}")
    configs = shard_configs(sweep_configs(base, tasks, methods, seeds), shard)
    teacher_jobs = _teacher_jobs(configs)
    results: list[dict | None] = [None] * len(configs)
    ran, skipped, todo = [], [], []
    for i, cfg in enumerate(configs):
        if is_finished(cfg):
            skipped.append((cfg.task, cfg.method, cfg.seed))
            results[i] = load_result(cfg)
        else:
            todo.append(i)
    show = progress and PartialState().is_main_process
    if teachers_only:
        todo = []
    # teachers (and caches) are prepared for tasks with runs to do; the others' summaries are read back
    pending = set(teacher_jobs) if teachers_only else {configs[i].task for i in todo}
    # a finished teacher whose outputs are all cached needs no worker (its summary is read back)
    teachers = {t: train_teacher(c) for t, (c, p) in teacher_jobs.items()
                if teacher_finished(c) and (t not in pending or outputs_cached(c, p))}
    teacher_jobs = {t: job for t, job in teacher_jobs.items() if t not in teachers}
    if backend == "ray":
        ray = ray_connect(address)
        pool = RayPool(ray, ray_gpus_per_run(ray, base.device))
        jobs = {t: (absolute(c), p) for t, (c, p) in teacher_jobs.items()}
        teachers.update(pool.map_unordered(precompute, jobs))
        runs = {i: (absolute(configs[i].replace(progress=False)),) for i in todo}
        for i, res in tqdm(pool.map_unordered(run, runs), total=len(runs), desc="runs", disable=not show):
            results[i] = res
    else:
        plan = plan_workers(base.device, workers)
        if plan.workers <= 1:
            teachers.update({t: precompute(c, p) if teachers_only else train_teacher(c)
                             for t, (c, p) in teacher_jobs.items()})
            bar = tqdm(todo, desc="runs", disable=not show)
            for i in bar:
                cfg = configs[i]
                bar.set_postfix_str(f"{cfg.task}/{cfg.method}/seed{cfg.seed}")
                results[i] = run(cfg.replace(progress=False) if progress else cfg)
                ran.append((cfg.task, cfg.method, cfg.seed))
            return SweepResult([r for r in results if r is not None], teachers, ran, skipped)
        with local_pool(plan) as pool:  # lanes only read the teacher's outputs: every part they need, first
            teachers.update(pool.map_unordered(precompute, teacher_jobs))
            runs = {i: (configs[i].replace(progress=False),) for i in todo}
            for i, res in tqdm(pool.map_unordered(run, runs), total=len(runs), desc="runs", disable=not show):
                results[i] = res
    ran = [(configs[i].task, configs[i].method, configs[i].seed) for i in todo]
    lanes = lane_line([results[i] for i in todo], began, time.time())
    return SweepResult([r for r in results if r is not None], teachers, ran, skipped, lanes)


def collect(base: RunConfig, tasks: Iterable[str], methods: Iterable[str] = METHOD_NAMES,
            seeds: Iterable[int] = range(5)) -> list[dict]:
    """The finished results of a sweep, without running anything."""
    out = []
    for cfg in sweep_configs(base, tasks, methods, seeds):
        r = load_result(cfg)
        if r is not None:
            out.append(r)
    return out


__all__ = ["SweepResult", "sweep_configs", "run_sweep", "collect", "default_workers", "lane_line"]
