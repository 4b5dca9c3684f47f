"""The authors' split rule (paper B, section 4.1; their ``normal_preprocess.py``).

Their code cuts the official GLUE train split with Python's ``random``::

    idx = list(range(n)); random.seed(0); random.shuffle(idx)
    valid = idx[:n // 10]; train = idx[n // 10:]

:func:`shuffled_head_split` is that rule for any ``n`` and divisor: the first ``n // divisor``
shuffled indices form the held-out part, the rest the training part (both in shuffled order, as
their ``Dataset.select`` keeps them).  A private :class:`random.Random` is used, so the global
``random`` state is neither read nor changed; ``random.Random(seed)`` and ``random.seed(seed)``
start from the same state, so the indices are theirs.
"""

from __future__ import annotations

import random

SPLIT_SEED = 0
VALID_DIVISOR = 10  # valid = n // 10 (their rule; not round(0.1 n))


def shuffled_head_split(n: int, divisor: int = VALID_DIVISOR, seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """``(held_out, rest)``: ``idx = list(range(n))`` shuffled by ``random.Random(seed)``, split at ``n // divisor``."""
    if n < 0 or divisor < 1:
        raise ValueError(f"need n >= 0 and divisor >= 1, got n={n}, divisor={divisor}")
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    k = n // divisor
    return idx[:k], idx[k:]


__all__ = ["shuffled_head_split", "SPLIT_SEED", "VALID_DIVISOR"]
