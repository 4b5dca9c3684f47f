"""Layer alignments between a teacher with ``n_t`` layers and a student with ``n_s <= n_t`` (section 3.2).

Every alignment is a list of ``n_s`` *groups*: student layer ``i`` is matched with the mean of the
teacher layers in ``groups[i]`` (a single layer except for Average).  General rule, with
``b(i) = floor(i * n_t / n_s)`` the group boundaries:

- **Fixed** (PKD-like): ``i -> b(i + 1) - 1``, the last teacher layer of the i-th block.
  24 -> 6 gives {0:3, 1:7, 2:11, 3:15, 4:19, 5:23} (appendix A, table 3); 12 -> 6 gives
  {0:1, ..., 5:11}; 6 -> 3 gives {0:1, 1:3, 2:5}.
- **Average** (ALP-KD-like, uniform weights): ``i -> [b(i), b(i + 1))``, consecutive blocks that
  cover every teacher layer once; 24 -> 6 gives [0-3], [4-7], ..., [20-23].
- **Random** (RAIL-KD-like): ``n_s`` distinct teacher layers drawn uniformly, kept in order
  (sorted); redrawn at every training step (*Random step*) or once per epoch (*Random epoch*).
"""

from __future__ import annotations

import random as _random

MODES = ("fixed", "average", "random_step", "random_epoch")


def _check(n_teacher: int, n_student: int) -> None:
    if n_student < 1 or n_teacher < n_student:
        raise ValueError(f"need 1 <= student layers <= teacher layers, got {n_student} and {n_teacher}")


def boundaries(n_teacher: int, n_student: int) -> list[int]:
    """``b(0..n_s)``: ``b(i) = floor(i * n_t / n_s)``; ``b(0) = 0``, ``b(n_s) = n_t``."""
    _check(n_teacher, n_student)
    return [(i * n_teacher) // n_student for i in range(n_student + 1)]


def fixed_alignment(n_teacher: int, n_student: int) -> dict[int, int]:
    """Student layer -> teacher layer ``b(i + 1) - 1``."""
    b = boundaries(n_teacher, n_student)
    return {i: b[i + 1] - 1 for i in range(n_student)}


def average_alignment(n_teacher: int, n_student: int) -> list[list[int]]:
    """Student layer -> the teacher layers ``b(i) .. b(i + 1) - 1`` (averaged)."""
    b = boundaries(n_teacher, n_student)
    return [list(range(b[i], b[i + 1])) for i in range(n_student)]


def random_alignment(n_teacher: int, n_student: int, rng: _random.Random) -> list[int]:
    """``n_s`` distinct teacher layers, sorted (the order of the layers is kept)."""
    _check(n_teacher, n_student)
    return sorted(rng.sample(range(n_teacher), n_student))


class LayerAligner:
    """Yields the groups of teacher layers per training step for one alignment mode.

    Random draws come from a generator seeded by ``(seed, epoch)``, so a run resumed at an epoch
    boundary draws the same layers as an uninterrupted one.
    """

    def __init__(self, mode: str, n_teacher: int, n_student: int, seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"unknown alignment {mode!r}; use one of {MODES}")
        _check(n_teacher, n_student)
        self.mode, self.n_teacher, self.n_student, self.seed = mode, n_teacher, n_student, seed
        self._rng = _random.Random(seed)
        self._epoch_groups: list[list[int]] | None = None

    def start_epoch(self, epoch: int) -> list[list[int]] | None:
        """Reseed for ``epoch``; returns the epoch's draw for *Random epoch*."""
        self._rng = _random.Random(self.seed * 100_003 + epoch)
        if self.mode == "random_epoch":
            self._epoch_groups = [[t] for t in random_alignment(self.n_teacher, self.n_student, self._rng)]
        return self._epoch_groups

    def groups(self) -> list[list[int]]:
        """Teacher-layer groups for the next step (consumes a draw for *Random step*)."""
        if self.mode == "fixed":
            return [[t] for t in fixed_alignment(self.n_teacher, self.n_student).values()]
        if self.mode == "average":
            return average_alignment(self.n_teacher, self.n_student)
        if self.mode == "random_step":
            return [[t] for t in random_alignment(self.n_teacher, self.n_student, self._rng)]
        if self._epoch_groups is None:
            self.start_epoch(0)
        return self._epoch_groups  # type: ignore[return-value]


def rail_layers(n_teacher: int, n_student: int, seed: int, epoch: int) -> list[int]:
    """RAIL-KD's per-epoch random teacher layers (sorted), reproducible from ``(seed, epoch)``."""
    return random_alignment(n_teacher, n_student, _random.Random(seed * 100_003 + epoch + 7_777))


__all__ = ["MODES", "boundaries", "fixed_alignment", "average_alignment", "random_alignment",
           "LayerAligner", "rail_layers"]
