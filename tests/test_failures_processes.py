"""Issue 12, cases 5: two runs at once (locks, temporary names) and workers that die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from paperlib.files import atomic_path, read_or_none, write_json_atomic
from paperlib.locks import LockTimeout, hold_lock, is_locked

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            text=True)


def _wait_for(predicate, timeout: float = 180.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_held_lock_names_its_owner_and_a_dead_owners_lock_is_taken_over(tmp_path):
    target = tmp_path / "run.json"
    owner = _python(f"""
        import time
        from paperlib.locks import hold_lock
        with hold_lock({str(target)!r}):
            print("held", flush=True)
            time.sleep(600)
    """)
    try:
        assert owner.stdout.readline().strip() == "held"
        assert is_locked(target)
        with pytest.raises(LockTimeout, match=rf"pid {owner.pid} on .*wait for it to finish"):
            with hold_lock(target, wait=0.5, poll=0.1):
                pass
    finally:
        owner.send_signal(signal.SIGKILL)  # the owner dies without cleaning up
        owner.wait()
    assert (tmp_path / "run.json.lock").exists()  # the stale lock file is still there ...
    with hold_lock(target, wait=0.5):  # ... and is taken over at once
        assert is_locked(target)
        assert f"pid {os.getpid()}" in (tmp_path / "run.json.lock").read_text()
    assert not is_locked(target)


def test_temporary_names_are_unique_per_writer(tmp_path):
    target = tmp_path / "last.pt"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and a.parent == b.parent == tmp_path and str(os.getpid()) in a.name
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a" and not list(tmp_path.glob("*.tmp"))  # b replaced first, then a


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "swaps.json"
    write_json_atomic(target, {"delta": [1.0]})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"delta": object()})  # fails half-way through serialising
    assert read_or_none(target, lambda p: p.read_text()) == '{\n "delta": [\n  1.0\n ]\n}'
    assert not list(tmp_path.glob("*.tmp"))


def test_sweep_workers_die_with_their_parent():
    """A sweep's ``--workers`` children must not outlive a parent killed with ``kill -9`` (here while
    they are still starting: the harder case, their parent is gone before they can look at it)."""
    parent = _python("""
        import time
        from paperlib.loraild.dispatch import LocalPool, WorkerPlan
        pool = LocalPool(WorkerPlan(3, ({}, {}, {}), 1))._pool  # the sweep's spawned lanes (lane 0: this process)
        futures = [pool.submit(time.sleep, 600) for _ in range(2)]
        print(" ".join(str(p) for p in pool._processes), flush=True)
        time.sleep(600)
    """)
    try:
        children = [int(p) for p in parent.stdout.readline().split()]
        assert len(children) == 2 and all(_alive(p) for p in children)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    try:
        assert _wait_for(lambda: not any(_alive(p) for p in children)), "workers outlived their parent"
    finally:
        for p in children:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_writability_checks_of_one_folder_at_once_do_not_fail_each_other(tmp_path, monkeypatch):
    """Two sweep lanes check the shared results folder at start-up: one lane's probe file must not be
    replaced or removed by the other's (it was one shared name: the second lane's removal failed, and a
    writable folder was reported "not writable").  Here the other lane's whole check runs between this
    check's rename and its removal."""
    import paperlib.files as files

    real_replace = files.os.replace
    nested = []

    def replace_then_other_lane(src, dst):
        real_replace(src, dst)
        if not nested:
            nested.append(dst)
            files.check_writable(tmp_path, "results folder", "fix")  # the other lane, start to end

    monkeypatch.setattr(files.os, "replace", replace_then_other_lane)
    files.check_writable(tmp_path, "results folder", "fix")
    assert nested and not list(tmp_path.iterdir())  # both probes gone, nothing else left
