"""Configuration of one rewiring analysis (a small dataclass, as :class:`paperlib.swap.config.SwapConfig`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from paperlib.rewire.operations import KINDS, RewiringError
from paperlib.swap.config import SwapConfig


@dataclass
class RewireConfig:
    model: str = "smollm2-135m"  # embedded name, hub name (gpt2-large) or local folder
    text: str = "wiki"  # as SwapConfig.text; costs are measured on its held-out (delta) half
    ops: tuple[str, ...] = ("swap", "delete", "parallel")  # families, see operations.KINDS
    tokens: int = 1024  # held-out tokens on which every operation's cost is measured
    max_span: int = 3  # delete_span: contiguous spans of 2 .. max_span layers
    metric_tokens: int = 16384  # pass 1 (fits A_i), shared with the swap analysis and its cache
    delta_tokens: int = 4096  # pass 2 of the swap analysis (delta, delta' of adjacent pairs)
    seq_len: int = 128
    batch_size: int = 8
    window: int = 4  # Xhat = mean of the token and the window-1 before it (paper A: 4)
    ridge: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ops, str):
            self.ops = (self.ops,)
        self.ops = tuple(self.ops)
        unknown = [k for k in self.ops if k not in KINDS]
        if unknown or not self.ops:
            raise RewiringError(f"unknown or no operations {list(unknown)}; choose from {', '.join(KINDS)}")
        if self.tokens < 1:
            raise ValueError(f"tokens must be positive, got {self.tokens}")
        if self.max_span < 2:
            raise RewiringError(f"max_span must be at least 2 (a span of one layer is delete(i)), got {self.max_span}")
        self.swap_config()  # validates the shared fields

    def swap_config(self) -> SwapConfig:
        """The swap analysis whose pass 1 (the maps A_i, r) this run reuses."""
        names = {f.name for f in fields(SwapConfig)}
        return SwapConfig(**{k: v for k, v in asdict(self).items() if k in names})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "RewireConfig":
        """The config named by the keys of ``values`` that are fields (e.g. papermill parameters)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def key(self) -> str:
        """Cache key: everything that changes the numbers (not the device)."""
        d = asdict(self)
        d.pop("device")
        d["ops"] = sorted(d["ops"])
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
