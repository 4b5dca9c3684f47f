"""Where a sweep's runs execute: one process per GPU, shards of the grid, a Ray cluster (local, CPU)."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

from paperlib.loraild import dispatch
from paperlib.loraild.dispatch import LocalPool, WorkerPlan, parse_shard, plan_workers, shard_configs
from paperlib.loraild.sweep import default_workers, lane_line, run_sweep, sweep_configs


def test_one_worker_per_gpu_each_pinned_to_its_own(monkeypatch):
    monkeypatch.setattr(dispatch, "visible_gpus", lambda: ["2", "5"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    plan = plan_workers(None, None)
    assert plan.workers == 2 and plan.gpus == ["2", "5"]
    assert plan_workers("cuda", 4).gpus == ["2", "5", "2", "5"]  # more workers than GPUs: round robin
    assert plan_workers("cpu", None).workers == 1 and plan_workers("cpu", None).gpus == []
    assert default_workers(None) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")  # under accelerate launch every run is data-parallel instead
    assert plan_workers(None, None).workers == 1
    with pytest.raises(ValueError, match="workers must be at least 1"):
        plan_workers(None, 0)


def lane_job(key: int, seconds: float, parent: int, log: str, fail_in: str | None = None):
    """A job of ``seconds`` that logs its key; this process's jobs (lane 0) first wait until a spawned
    lane has started one (so both lanes run jobs, however long the spawned one takes to start);
    raises in lane 0 or in a spawned lane (``fail_in``)."""
    in_parent = os.getpid() == parent
    with open(log, "a") as fh:
        fh.write(f"{key} {os.getpid()}\n")
    if in_parent:
        end = time.monotonic() + 300
        while not any(int(line.split()[1]) != parent for line in Path(log).read_text().splitlines()):
            if fail_in == "parent" or time.monotonic() > end:
                break
            time.sleep(0.05)
    if fail_in == ("parent" if in_parent else "spawned"):
        raise ValueError(f"job {key} failed in the {fail_in} lane")
    time.sleep(seconds)
    return os.getpid(), os.getenv("PAPERLIB_SLOT")


def test_lanes_run_every_job_once_and_spawned_lanes_see_their_environment(tmp_path):
    """Lane 0 is this process (no per-lane environment); the spawned lane applies its plan entry
    before running anything (CUDA_VISIBLE_DEVICES); every job runs exactly once, uneven lengths."""
    plan = WorkerPlan(2, ({"PAPERLIB_SLOT": "a"}, {"PAPERLIB_SLOT": "b"}), 1)
    assert "PAPERLIB_SLOT" not in os.environ
    log = tmp_path / "jobs.log"
    jobs = {k: (k, 0.02 * (k % 4), os.getpid(), str(log)) for k in range(9)}
    with LocalPool(plan) as pool:
        seen = list(pool.map_unordered(lane_job, jobs))
    assert sorted(k for k, _ in seen) == list(range(9))  # every key once
    assert sorted(int(line.split()[0]) for line in log.read_text().splitlines()) == list(range(9))  # run once
    by_lane = {pid: env for _, (pid, env) in seen}
    assert by_lane.pop(os.getpid()) is None  # this process ran at least one job, in its own environment
    assert len(by_lane) == 1 and set(by_lane.values()) == {"b"}  # the spawned lane: the plan's second entry
    assert "PAPERLIB_SLOT" not in os.environ


@pytest.mark.parametrize("fail_in", ["spawned", "parent"])
def test_an_error_in_either_lane_stops_the_sweep_and_leaves_no_worker(tmp_path, fail_in):
    log = tmp_path / "jobs.log"
    jobs = {k: (k, 0.02, os.getpid(), str(log), fail_in) for k in range(6)}
    pool = LocalPool(WorkerPlan(2, ({}, {}), 1))
    workers = list(pool._pool._processes.values())
    assert len(workers) == 1  # lane 0 is this process: one spawned worker
    with pytest.raises(ValueError, match=f"failed in the {fail_in} lane"):
        with pool:
            for _ in pool.map_unordered(lane_job, jobs):
                pass
    assert not any(w.is_alive() for w in workers)
    started = log.read_text().splitlines()
    if fail_in == "parent":  # lane 0 failed at its first job: at most one more (the spawned lane's) started
        assert len(started) <= 2
    end = time.monotonic() + 30  # the feeder thread returns once its job is done or cancelled
    while any(t.name.startswith("lane-") for t in threading.enumerate()) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(t.name.startswith("lane-") for t in threading.enumerate())


def test_lane_line_sums_the_runs_of_this_call_by_process():
    """Busy = sum of elapsed_s over lanes x wall; per lane (by first start): first start and idle at the end."""
    def res(pid, start, elapsed, host="h"):
        return {"started_unix": 1000.0 + start, "elapsed_s": elapsed, "worker": {"pid": pid, "host": host, "gpu": None}}

    runs = [res(7, 8.0, 20.0), res(5, 0.5, 30.0), res(5, 30.5, 26.0), res(7, 28.0, 31.0),
            res(9, -50.0, 10.0)]  # pid 9: started before this call (a result read back): not counted
    line = lane_line(runs, 1000.0, 1060.0)
    # busy 20 + 30 + 26 + 31 = 107 of 2 x 60 (89%); lane 5 first (0.5 s), ends 56.5 (idle 3.5); lane 7 ends 59
    assert line == ("2 lanes: runs busy 107.0 s of 2 x 60.0 s (89%); first run started 0.5 / 8.0 s after the "
                    "sweep began, idle 3.5 / 1.0 s at the end (per lane)")
    assert lane_line(runs[1:3], 1000.0, 1060.0) is None  # one lane
    assert lane_line([res(5, 1.0, 2.0), res(5, 1.0, 2.0, host="other")][:1], 1000.0, 1060.0) is None  # one run
    assert lane_line([res(5, 1.0, 2.0), res(5, 1.0, 2.0, host="other")], 1000.0, 1060.0).startswith("2 lanes:")


def test_shards_partition_the_grid(tiny):
    configs = sweep_configs(tiny.config(), ["sst2", "rte"], ["wo_kd", "vanilla_kd", "loraild_fixed"], [0, 1])
    shards = [shard_configs(configs, (k, 4)) for k in range(4)]
    keys = [(c.task, c.method, c.seed) for s in shards for c in s]
    assert sorted(keys) == sorted((c.task, c.method, c.seed) for c in configs) and len(set(keys)) == len(keys)
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(bad)


def test_teachers_first_then_shards_run_each_run_once(tiny):
    base = tiny.config(results_dir=str(tiny.root / "shards"))
    methods, seeds = ["wo_kd", "vanilla_kd", "loraild_fixed"], [0]
    ready = run_sweep(base, ["sst2"], methods, seeds, progress=False, teachers_only=True)
    assert ready.ran == [] and list(ready.teachers) == ["sst2"]
    cache = next((tiny.root / "shards").rglob("cache-*"))
    assert {p.name.split(".")[0] for p in cache.iterdir()} >= {"logits", "lora"}  # both KD methods' parts, first
    a = run_sweep(base, ["sst2"], methods, seeds, progress=False, shard=(0, 2))
    b = run_sweep(base, ["sst2"], methods, seeds, progress=False, shard=(1, 2))
    assert sorted(a.ran + b.ran) == sorted(("sst2", m, 0) for m in methods) and not set(a.ran) & set(b.ran)
    whole = run_sweep(base, ["sst2"], methods, seeds, progress=False)
    assert whole.ran == [] and len(whole.results) == 3


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'paperlib[ray]')")
def test_ray_backend_on_a_local_cpu_instance(tiny, tmp_path):
    """Every run a Ray task (no GPU here: num_gpus=0); same results as in this process; a second
    sweep skips every finished run (resuming is ``run``'s own, tested in test_loraild_train)."""
    import ray

    methods, seeds = ["wo_kd", "loraild_random_epoch"], [0]
    local = run_sweep(tiny.config(results_dir=str(tmp_path / "local")), ["sst2"], methods, seeds, progress=False)
    t0 = time.time()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        print(f"ray.init: {time.time() - t0:.1f} s")
        base = tiny.config(results_dir=str(tmp_path / "ray"))
        res = run_sweep(base, ["sst2"], methods, seeds, progress=False, backend="ray")
        assert res.ran == [("sst2", m, 0) for m in methods] and list(res.teachers) == ["sst2"]
        for a, b in zip(local.results, res.results):
            assert (a["method"], a["seed"]) == (b["method"], b["seed"])
            assert b["history"][0]["train"]["loss"] == pytest.approx(a["history"][0]["train"]["loss"], rel=1e-4)
            assert b["best_valid"] == pytest.approx(a["best_valid"])
        assert len(list((tmp_path / "ray").rglob("seed0-*.json"))) == 2  # in the shared results folder
        again = run_sweep(base, ["sst2"], methods, seeds, progress=False, backend="ray")
        assert again.ran == [] and len(again.skipped) == 2
    finally:
        ray.shutdown()


def test_a_pool_started_ahead_is_the_sweeps_and_an_unused_one_is_stopped(tmp_path):
    """``python -m paperlib sweep`` starts the spawned lanes before importing the training code:
    the sweep takes that pool (it runs its jobs), and one no sweep took is stopped, not waited for."""
    dispatch.discard_prestarted()
    dispatch.prestart("cpu", 2)
    plan = plan_workers("cpu", 2)
    started = dispatch._PRESTARTED[dispatch._plan_key(plan)]
    pool = dispatch.local_pool(plan)
    assert pool is started and not dispatch._PRESTARTED
    log = tmp_path / "jobs.log"
    with pool:
        seen = dict(pool.map_unordered(lane_job, {k: (k, 0.0, os.getpid(), str(log)) for k in range(4)}))
    assert sorted(seen) == [0, 1, 2, 3] and len({pid for pid, _ in seen.values()}) == 2
    dispatch.prestart("cpu", 2)  # started ahead, never taken: the CLI's finally stops it
    procs = list(dispatch._PRESTARTED[dispatch._plan_key(plan)]._pool._processes.values())
    assert procs
    dispatch.discard_prestarted()
    assert all(code is not None for code in exit_codes(procs))
    assert not dispatch._PRESTARTED
    dispatch.prestart("cpu", 1)  # one lane: nothing to start
    assert not dispatch._PRESTARTED


def test_worker_info_names_the_gpu_a_run_trains_on(monkeypatch):
    """A sweep's lane 0 sees every GPU (``0,1`` or none set) and trains on the first; a spawned lane
    sees its own only: ``worker.gpu`` is the physical id either way."""
    import torch

    from paperlib.loraild.train import worker_info

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert worker_info(torch.device("cuda", 0))["gpu"] == "3" and worker_info(torch.device("cuda", 1))["gpu"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert worker_info(torch.device("cuda", 1))["gpu"] == "1" and worker_info(torch.device("cpu"))["gpu"] is None
    assert worker_info()["pid"] == os.getpid()


def exit_codes(procs, seconds: float = 30.0) -> list[int | None]:
    """The processes' exit codes once all have ended (``None`` for one still running after
    ``seconds``).  Polled, not ``join``ed: the pool's own thread may reap a process at the same
    moment, and a ``join`` that loses that race returns with the exit code not yet set."""
    end = time.monotonic() + seconds
    while any(p.exitcode is None for p in procs) and time.monotonic() < end:
        time.sleep(0.05)
    return [p.exitcode for p in procs]


def finishing_job(key: int, seconds: float, log: str):
    """Logs its start, sleeps, logs its end."""
    with open(log, "a") as fh:
        fh.write(f"start {key}\n")
    time.sleep(seconds)
    with open(log, "a") as fh:
        fh.write(f"end {key}\n")
    return key


def test_idle_workers_are_stopped_at_the_end_and_a_running_job_is_never_cut(tmp_path):
    """After the last result the spawned workers are terminated (SIGTERM: no wait for their
    interpreter and CUDA context to shut down); a caller that stops early leaves the block only once
    the job a spawned lane runs has returned, and no lane starts another."""
    import signal

    log = tmp_path / "jobs.log"
    pool = LocalPool(WorkerPlan(2, ({}, {}), 1))
    workers = list(pool._pool._processes.values())
    with pool:
        assert sorted(pool.map_unordered(finishing_job, {k: (k, 0.01, str(log)) for k in range(4)})) == \
            [(k, k) for k in range(4)]
    assert exit_codes(workers) == [-signal.SIGTERM] * len(workers)
    assert not any(t.name.startswith("lane-") for t in threading.enumerate())

    log.unlink()
    pool = LocalPool(WorkerPlan(2, ({}, {}), 1))
    with pool:
        for _ in pool.map_unordered(finishing_job, {k: (k, 1.0, str(log)) for k in range(8)}):
            break  # the first result (lane 0's or the spawned lane's); the other lane may be mid-job
    lines = log.read_text().splitlines()
    started = {line.split()[1] for line in lines if line.startswith("start")}
    ended = {line.split()[1] for line in lines if line.startswith("end")}
    assert started == ended and len(started) < 8


def test_the_sweep_command_imports_only_its_own_module():
    """``python -m paperlib sweep`` builds only paper B's parser: the swap and rewire modules (torch,
    scipy) are not imported before the sweep starts its workers; with no command every one is."""
    import subprocess
    import sys

    code = ("import sys; from paperlib.__main__ import build_parser; build_parser({!r}); "
            "print(sorted(m for m in ('paperlib.swap.cli', 'paperlib.rewire.cli', 'paperlib.loraild.cli', 'torch') "
            "if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    out = {cmd: subprocess.run([sys.executable, "-c", code.format(cmd)], capture_output=True, text=True, cwd=root,
                               check=True).stdout.strip() for cmd in ("sweep", None)}
    assert out["sweep"] == "['paperlib.loraild.cli']"
    assert out[None] == "['paperlib.loraild.cli', 'paperlib.rewire.cli', 'paperlib.swap.cli', 'torch']"
