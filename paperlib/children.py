"""Worker processes that end with the process that started them (a killed sweep leaves no orphans)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time


def exit_with_parent(poll: float = 1.0) -> None:
    """Call in a child process: it ends (``os._exit``) as soon as its parent is gone.

    A parent killed with ``kill -9`` cannot stop its pool, and a spawned child that only waits for
    work would run on for ever (or finish a long training run nobody reads).  A daemon thread
    waits on multiprocessing's parent sentinel (ready when the parent dies, even before this call)
    or, for a child not started by multiprocessing, polls the parent's pid every ``poll`` seconds.
    The run's lock is released by the kernel and its partial files are temporary files, so nothing
    half-done is ever read.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        def watch() -> None:
            parent.join()  # returns when the parent's sentinel closes: the parent has died
            os._exit(1)
    else:
        ppid = os.getppid()

        def watch() -> None:
            while os.getppid() == ppid:
                time.sleep(poll)
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["exit_with_parent"]
