"""Where a sweep's runs execute: this process and a pool of local processes (one lane per GPU, or
per CPU core), or a Ray cluster.

Job-level parallelism: every run is an independent, seeded job, so N GPUs train N runs at once
(each spawned process sees one GPU through ``CUDA_VISIBLE_DEVICES``, set before CUDA starts in it)
and a Ray cluster runs each as a task asking for one GPU.  The sweep (:mod:`sweep`) decides *what*
runs (finished runs skipped, each run submitted once, stage-1 teachers and their cached outputs
computed first); this module decides *where*.

The sweep's own process is lane 0 (the plan's first GPU, its ``cuda:0``); only the other N - 1
lanes are spawned workers.  Starting a worker costs seconds (importing torch, transformers, peft,
accelerate and scikit-learn: 10-15 s on a 2-core CPU, then a CUDA context) that the one-GPU sweep,
whose process has already paid them, never pays: measured on 2 x H200, a 2-GPU sweep spent ~24 s
outside its runs against ~13 s for one GPU.  So lane 0 trains at once while the workers start, and
each lane takes the next job when it is free (no lane hoards jobs that a free one could run).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from paperlib.loraild.config import RunConfig


@dataclass(frozen=True)
class WorkerPlan:
    """``workers`` processes; worker ``w`` gets the environment ``envs[w]`` and ``threads`` CPU threads."""

    workers: int
    envs: tuple[dict[str, str], ...]
    threads: int

    @property
    def gpus(self) -> list[str]:
        return [e["CUDA_VISIBLE_DEVICES"] for e in self.envs if "CUDA_VISIBLE_DEVICES" in e]


def visible_gpus() -> list[str]:
    """GPU ids this process may use (``CUDA_VISIBLE_DEVICES`` entries, else ``0 .. count-1``)."""
    import torch

    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",") if s.strip()] if env else [str(i) for i in range(n)]
    return ids[:n]


def under_launcher() -> bool:
    """Started by ``accelerate launch`` / torchrun with several processes (each run is then data-parallel)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def plan_workers(device: str | None, workers: int | None) -> WorkerPlan:
    """How many runs at once, and on which GPU each process trains.

    - under a multi-process launcher: 1 (every run is data-parallel over the launched processes);
    - on GPUs (``device`` not ``"cpu"`` and a GPU visible): ``workers`` or, by default, one per
      GPU; worker ``w`` sees GPU ``w mod n_gpus`` only;
    - on the CPU: ``workers`` (default 1), each with ``cores // workers`` threads.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if under_launcher():
        return WorkerPlan(1, ({},), 0)
    gpus = [] if device == "cpu" else visible_gpus()
    cores = os.cpu_count() or 1
    if gpus:
        n = workers or len(gpus)
        return WorkerPlan(n, tuple({"CUDA_VISIBLE_DEVICES": gpus[w % len(gpus)]} for w in range(n)),
                          max(1, cores // n))
    n = workers or 1
    return WorkerPlan(n, tuple({} for _ in range(n)), max(1, cores // n))


def shard_configs(configs: list[RunConfig], shard: tuple[int, int] | None) -> list[RunConfig]:
    """Shard ``K`` of ``N`` (0-based): runs ``K, K + N, K + 2N, ...`` of the sweep's order."""
    if shard is None:
        return configs
    k, n = shard
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"shard must be K/N with 0 <= K < N, not {k}/{n}")
    return configs[k::n]


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/8"`` -> ``(3, 8)``; one clear error for anything else."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes K/N (e.g. 0/4, with 0 <= K < N), not {text!r}") from None
    shard_configs([], (k, n))
    return k, n


def absolute(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its local paths (results, GLUE folder, model folders) made absolute, so that a
    worker started elsewhere (another working directory, another node) finds the same files."""
    changes = {"results_dir": str(Path(cfg.results_dir).expanduser().resolve())}
    for key in ("glue_dir", "teacher", "student", "tokenizer"):
        v = getattr(cfg, key)
        if v and Path(v).expanduser().exists():
            changes[key] = str(Path(v).expanduser().resolve())
    return cfg.replace(**changes)


def precompute(cfg: RunConfig, parts: tuple[str, ...]) -> dict:
    """Stage 1 and the cached teacher outputs ``parts`` (in a worker), then free the teacher's memory."""
    import torch

    from paperlib.loraild import teacher as teacher_mod

    summary = teacher_mod.precompute_teacher(cfg, parts)
    teacher_mod._TEACHERS.clear()  # later runs in this worker read the cache, not the model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary


def _init_worker(threads: int, envs) -> None:
    os.environ.update(envs.get())  # before anything in this process starts CUDA
    import torch

    from paperlib.children import exit_with_parent

    exit_with_parent()  # a killed sweep takes its workers with it
    torch.set_num_threads(threads)
    # pay the imports and the CUDA context now, in every worker at once, not at each one's first run
    import paperlib.loraild.train  # noqa: F401

    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")


def _ready() -> int:
    return os.getpid()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to ``n`` (unless 0) inside the block, the previous count restored after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LocalPool:
    """Lanes following a :class:`WorkerPlan` (``with LocalPool(plan) as pool: ...``): lane 0 is this
    process (its main thread, which has every import and its GPU's ``cuda:0``), lanes ``1 .. N-1``
    a ``spawn`` process pool with the plan's environments ``envs[1:]``."""

    def __init__(self, plan: WorkerPlan):
        self.plan = plan
        self.spawned = plan.workers - 1
        self._pool: ProcessPoolExecutor | None = None
        self._feeders: list[threading.Thread] = []  # the threads handing jobs to the spawned lanes
        self._stops: list[threading.Event] = []
        if self.spawned < 1:
            return
        ctx = multiprocessing.get_context("spawn")
        envs = ctx.Queue()
        for env in plan.envs[1:]:
            envs.put(env)
        self._pool = ProcessPoolExecutor(self.spawned, mp_context=ctx, initializer=_init_worker,
                                         initargs=(plan.threads, envs))
        # a spawn pool starts a worker per submission while none is idle: one no-op each starts all
        # of them now, together (not waited for: lane 0 trains meanwhile; a lane's feeder takes its
        # first job when a worker is ready, so no job waits for a starting worker that lane 0 could run)
        self._ready = [self._pool.submit(_ready) for _ in range(self.spawned)]

    def __enter__(self) -> "LocalPool":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is None:
            return
        for stop in self._stops:  # no lane takes another job
            stop.set()
        for t in self._feeders:  # a feeder ends when its lane's job (if any) has returned
            t.join(timeout=None if exc[0] is None else 0)
        if exc[0] is None and not any(t.is_alive() for t in self._feeders):
            # every job has returned and no lane holds one: stop the idle workers instead of waiting
            # for each to shut down its interpreter and CUDA context (seconds at the sweep's end)
            self.discard()
        else:
            self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)

    def discard(self) -> None:
        """Stop the spawned workers without waiting for them (they hold no work: a pool started
        ahead and not used, or one whose jobs have all returned).  They are terminated before the
        pool shuts down, so none spends seconds on an orderly exit first."""
        if self._pool is None:
            return
        terminate = getattr(self._pool, "terminate_workers", None)  # the public call, Python 3.14+
        if terminate is not None:
            terminate()
        else:  # earlier Pythons: the pool's own table of its worker processes
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    proc.terminate()
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def map_unordered(self, fn: Callable, jobs: dict[int, tuple]) -> Iterator[tuple[int, object]]:
        """``(key, fn(*args))`` for every ``key: args`` of ``jobs``, as they finish.

        Each lane takes the next job of a shared queue when it is free: one feeder thread per
        spawned worker submits a job and waits for it; lane 0 runs jobs here, between yields (a
        spawned lane's result may wait until lane 0's job returns).  The first error stops the
        handing out (no lane takes another job) and is raised here.
        """
        todo = deque(jobs.items())
        take_lock, stop = threading.Lock(), threading.Event()
        self._stops.append(stop)
        done: queue.SimpleQueue = queue.SimpleQueue()  # (key, error or None, result) of spawned lanes

        def take():
            with take_lock:
                return todo.popleft() if todo and not stop.is_set() else None

        def feed(lane: int) -> None:
            try:
                self._ready[lane].result()
            except BaseException as err:  # noqa: BLE001 -- a worker that failed to start
                stop.set()
                done.put((None, err, None))
                return
            while (job := take()) is not None:
                key, args = job
                try:
                    done.put((key, None, self._pool.submit(fn, *args).result()))
                except BaseException as err:  # noqa: BLE001 -- handed to the main thread, raised there
                    stop.set()
                    done.put((key, err, None))
                    return

        feeders = [threading.Thread(target=feed, args=(w,), name=f"lane-{w + 1}-feeder", daemon=True)
                   for w in range(self.spawned if jobs else 0)]
        self._feeders += feeders
        for t in feeders:
            t.start()
        remaining = len(jobs)
        try:
            with torch_threads(self.plan.threads):
                while remaining:
                    try:  # results of the spawned lanes first; wait for them only when lane 0 has no job
                        key, err, out = done.get(block=False) if todo and not stop.is_set() else done.get()
                    except queue.Empty:
                        job = take()
                        if job is None:
                            continue
                        key, args = job
                        try:
                            out = fn(*args)
                        except BaseException:
                            stop.set()
                            raise
                        remaining -= 1
                        yield key, out
                        continue
                    if err is not None:
                        raise err
                    remaining -= 1
                    yield key, out
        finally:
            stop.set()  # no lane takes a new job (an error, or the caller stopped early)


_PRESTARTED: dict[tuple, LocalPool] = {}  # pools started ahead by prestart(), by plan


def _plan_key(plan: WorkerPlan) -> tuple:
    return plan.workers, tuple(tuple(sorted(e.items())) for e in plan.envs), plan.threads


def prestart(device: str | None, workers: int | None) -> None:
    """Start the spawned lanes of the sweep's plan now, ahead of the sweep.

    ``python -m paperlib sweep`` calls this before it imports the training code (transformers,
    peft, accelerate: seconds), so that the workers' own imports and CUDA contexts start at the same
    time instead of after them: measured on 2 x H100, a worker started by the sweep began its first
    run 11 s after lane 0.  :func:`local_pool` hands the started pool to the sweep.
    """
    if under_launcher():
        return
    plan = plan_workers(device, workers)
    if plan.workers > 1 and _plan_key(plan) not in _PRESTARTED:
        _PRESTARTED[_plan_key(plan)] = LocalPool(plan)


def local_pool(plan: WorkerPlan) -> LocalPool:
    """The pool :func:`prestart` started for ``plan``, else a new one."""
    return _PRESTARTED.pop(_plan_key(plan), None) or LocalPool(plan)


def discard_prestarted() -> None:
    """Stop pools started ahead and not taken by a sweep (e.g. every run had finished)."""
    while _PRESTARTED:
        _PRESTARTED.popitem()[1].discard()


# --- Ray ---------------------------------------------------------------------------------------

def import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs Ray: pip install 'paperlib[ray]' (or pip install ray)") from None
    return ray


def ray_connect(address: str | None, **init_kwargs):
    """``ray.init(address)`` unless this process is already connected; returns the ``ray`` module."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, **init_kwargs)
    return ray


def ray_gpus_per_run(ray, device: str | None) -> float:
    """1 GPU per run when the cluster has GPUs and the runs are not forced onto the CPU, else 0."""
    return 1.0 if device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


class RayPool:
    """Each job a Ray task asking for ``gpus`` GPUs and one CPU; Ray retries a task whose worker died
    (``max_retries``), and the run then resumes from its last checkpoint in the shared folder."""

    def __init__(self, ray, gpus: float, max_retries: int = 3):
        self.ray, self.gpus, self.max_retries = ray, gpus, max_retries

    def map_unordered(self, fn: Callable, jobs: dict[int, tuple]) -> Iterator[tuple[int, object]]:
        remote = self.ray.remote(fn).options(num_gpus=self.gpus, num_cpus=1, max_retries=self.max_retries)
        pending = {remote.remote(*args): key for key, args in jobs.items()}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), self.ray.get(ref)


__all__ = ["WorkerPlan", "visible_gpus", "under_launcher", "plan_workers", "shard_configs", "parse_shard",
           "absolute", "precompute", "torch_threads", "LocalPool", "prestart", "local_pool", "discard_prestarted",
           "import_ray", "ray_connect", "ray_gpus_per_run", "RayPool"]
