"""One owner per run: a lock file holding the owner's pid, released by the kernel if it dies.

The lock is ``fcntl.flock`` on ``<target>.lock``.  The kernel drops a flock when its process
ends, however it ends (``kill -9`` included), so a lock left by a dead run is *stale* and is simply
taken over by the next one; the pid written inside only names the owner in messages.  A second
process that wants a lock held by a live owner waits (printing who holds it) and then finds the
owner's finished result.  (``flock`` works on local file systems; on NFS use one results folder
per machine.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path


class LockTimeout(TimeoutError):
    """The lock stayed held by another live process for longer than the caller would wait."""


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(target.name + ".lock")


def lock_owner(path: str | Path) -> str:
    """``pid N on HOST`` as written by the owner (``unknown`` if unreadable)."""
    try:
        return Path(path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def hold_lock(target: str | Path, wait: float | None = None, poll: float = 1.0,
              quiet: bool = False) -> Iterator[Path]:
    """Hold the lock of ``target`` for a block; waits up to ``wait`` seconds (``None``: for ever)."""
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait is not None and time.monotonic() - t0 >= wait:
                    raise LockTimeout(f"{target} is being computed by {lock_owner(path)} "
                                      f"(lock {path}); wait for it to finish") from None
                if not told and not quiet:
                    print(f"waiting for {lock_owner(path)}, which is computing {target}", file=sys.stderr)
                    told = True
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race with a waiter)


def is_locked(target: str | Path) -> bool:
    """Whether a live process holds the lock of ``target`` right now."""
    path = lock_path(target)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


__all__ = ["hold_lock", "is_locked", "lock_owner", "lock_path", "LockTimeout"]
