"""Worker processes that end with the process that started them (a killed sweep leaves no orphans)."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(poll: float = 1.0) -> None:
    """Call in a child process: it ends (``os._exit``) within ``poll`` seconds of its parent's death.

    A parent killed with ``kill -9`` cannot stop its pool, and a spawned child that only waits for
    work would run on for ever (or finish a long training run nobody reads).  A daemon thread
    watches the parent's pid: when the child is re-parented (the parent is gone), it exits.  The
    run's lock is released by the kernel and its partial files are temporary files, so nothing
    half-done is ever read.
    """
    parent = os.getppid()
    if parent == 1:  # the parent died before this child got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["exit_with_parent"]
