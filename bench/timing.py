"""Shared yardsticks of the benchmarks: device sync, CUDA-event timing, the measured bf16 matmul rate."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device, n: int = 8192, reps: int = 30) -> float:
    """Measured bf16 FLOP/s of an n x n x n matrix product (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def cuda_ms(fn: Callable[[], object], iters: int = 20, warmup: int = 3) -> float:
    """Mean milliseconds of ``fn()`` on the current CUDA device, between CUDA events after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def profile_ms_per_step(averages, steps: int) -> tuple[float, float]:
    """``(device, host)`` milliseconds per step of a profile's ``key_averages()``, counted as the
    profiler's own table totals count them.

    Device time sums the device's own events (kernels, copies) and leaves out the operators that
    launched them and user annotations (e.g. ``DistributedDataParallel.forward``), which report the
    same kernel time again: summing every row's ``self_device_time_total`` counted it about twice.
    """
    from torch.autograd import DeviceType

    device = sum(e.self_device_time_total for e in averages
                 if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False))
    host = sum(e.self_cpu_time_total for e in averages)
    return device / 1e3 / steps, host / 1e3 / steps
