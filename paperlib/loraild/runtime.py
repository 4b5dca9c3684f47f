"""The process's compute set-up: one ``Accelerator`` per process, CPU thread count."""

from __future__ import annotations

import os
import time

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

_ACC: Accelerator | None = None


def get_accelerator(device: str | None = None) -> Accelerator:
    """One process-wide ``Accelerator`` (``device="cpu"`` forces the CPU).

    Under a launcher (``WORLD_SIZE`` > 1) on a machine without a GPU the CPU is chosen even when
    ``device`` is not given: accelerate would otherwise start every process as a separate
    single-process run, all writing the same files.
    """
    global _ACC
    from paperlib.devices import check_device

    check_device(device)  # "cuda" on a machine without one is refused, not run on the CPU
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cpu = device == "cpu" or (device is None and world > 1 and not torch.cuda.is_available())
    if _ACC is not None and (device is None or (_ACC.device.type == "cpu") == want_cpu):
        return _ACC
    if _ACC is not None:
        AcceleratorState._reset_state(True)
    _ACC = Accelerator(cpu=want_cpu, kwargs_handlers=[ddp_settings()],
                       # batches collated into pinned memory (prepare.loaders) go to the GPU asynchronously
                       dataloader_config=DataLoaderConfiguration(non_blocking=True))
    if world > 1 and _ACC.num_processes != world:
        raise RuntimeError(f"launched as {world} processes but accelerate set up {_ACC.num_processes} "
                           f"(device={device!r}); each would train alone and overwrite the others' files")
    return _ACC


def ddp_settings() -> DistributedDataParallelKwargs:
    """How DDP wraps a model (used only under a multi-process launcher).

    - ``find_unused_parameters``: set per model before it is prepared (:func:`search_unused_parameters`);
    - ``gradient_as_bucket_view``: the gradients *are* views into DDP's all-reduce buckets, so no
      copy into the buckets before the all-reduce and none back after it (about 330 MB each way
      per step for a DistilRoBERTa-size student);
    - ``broadcast_buffers=False``: no broadcast of the module's buffers from process 0 before every
      forward. The students' buffers (position ids, token type ids) are constants, and DDP
      already makes every process start from process 0's parameters and buffers.
    """
    return DistributedDataParallelKwargs(find_unused_parameters=True, gradient_as_bucket_view=True,
                                         broadcast_buffers=False)


def search_unused_parameters(acc: Accelerator, search: bool) -> None:
    """Whether DDP (in the next ``acc.prepare``) searches each step's graph for parameters that got
    no gradient.  Needed only where some are skipped on some steps (RAIL-KD's projections while the
    intermediate loss is off); the search is an extra graph traversal every step and lets no
    bucket be reduced before the forward's graph is known."""
    if acc.ddp_handler is not None:
        acc.ddp_handler.find_unused_parameters = search


def busy_cores(interval: float = 0.5) -> float:
    """Cores kept busy by other processes right now (from ``/proc/stat``; load average elsewhere)."""
    def sample():
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
        return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / max(t1 - t0, 1))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0


def auto_threads(requested: int | None = None) -> int:
    """Set torch's CPU threads: ``requested``, or 1 when other processes already keep a core busy.

    On a small shared CPU, two OpenMP threads competing with another busy process wait on each
    other at every barrier (a 4x slowdown measured here); one thread then runs faster.
    """
    if requested:
        torch.set_num_threads(int(requested))
    elif (os.cpu_count() or 1) <= 4 and busy_cores() >= 0.5:
        torch.set_num_threads(1)
    return torch.get_num_threads()
