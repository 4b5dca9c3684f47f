"""Paper A: characterising adjacent layer swaps by layer redundancy and layer independence."""

from paperlib.swap.blocks import ResidualStack, UnsupportedModelError, find_blocks
from paperlib.swap.config import SwapConfig
from paperlib.swap.indicators import commutator, dep, swap_score, trans
from paperlib.swap.linear_fit import NormalEquations, TooFewTokensError, window_mean

__all__ = [
    "ResidualStack", "UnsupportedModelError", "find_blocks", "SwapConfig", "commutator", "dep",
    "swap_score", "trans", "NormalEquations", "TooFewTokensError", "window_mean",
]
