"""Chapter 05: rewiring beyond adjacent swaps (delete, swap any pair, parallel, repeat), its cost at
the model's output and how well pass 1's predictors rank it."""

from paperlib.rewire.config import RewireConfig
from paperlib.rewire.operations import KINDS, Parallel, Rewiring, RewiringError, delete, expand, parallel, repeat, swap

__all__ = ["RewireConfig", "KINDS", "Parallel", "Rewiring", "RewiringError", "delete", "expand", "parallel",
           "repeat", "swap"]
