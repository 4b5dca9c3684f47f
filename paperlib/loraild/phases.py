"""Wall time per phase of a run (process group, data, teacher, teacher outputs, steps, evaluation, clusters, saving).

Each phase's time is measured between device synchronisations, so GPU work queued in one phase is
not billed to the next; the sum is the run's wall time up to the untimed remainder.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from collections.abc import Iterator

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(dev)


class PhaseTimer:
    """Accumulates wall seconds per named phase: ``with timer("steps"): ...``.

    ``timer.seconds`` maps phase -> seconds (phases entered several times add up).
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[phase] += time.perf_counter() - t0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


@contextmanager
def _untimed(phase: str) -> Iterator[None]:
    yield


def maybe(timer: PhaseTimer | None):
    """``timer`` itself, or a context factory that times nothing."""
    return timer if timer is not None else _untimed
