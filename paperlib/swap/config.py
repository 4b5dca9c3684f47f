"""Configuration of one swap analysis (a small dataclass, as in transformers/peft)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

#: what the paper ran (section 4.2); token counts are not given in the paper
PAPER = {"model": "gpt2-large", "text": "webtext", "seq_len": 1024}


@dataclass
class SwapConfig:
    model: str = "smollm2-135m"  # embedded name, hub name (gpt2-large) or local folder
    text: str = "wiki"  # wiki | lee | webtext | webtext:DIR | path to .txt/.jsonl
    metric_tokens: int = 16384  # tokens for the fits (eq. 12) and the baselines
    delta_tokens: int = 4096  # tokens for delta (eq. 2) and delta' (eq. 16)
    seq_len: int = 128
    batch_size: int = 8
    window: int = 4  # Xhat = mean of the token and the window-1 before it
    ridge: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    device_map: str = ""  # "" = the whole model on `device`; "auto" = split over the GPUs (accelerate)
    precision: str = "float64"  # Gram / pass-2 products: float64 | bf16x3 | bf16x6 | tf32 (sums always float64)
    stats_device: str = ""  # "" = each layer's statistics on its device; "cpu" = pinned host memory
    #: composed tanh-GELUs (GPT-2's gelu_new) as one fused kernel: auto (on GPUs) | fused | model
    activations: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive integer (the paper uses 4), got {self.window!r}")
        for name in ("metric_tokens", "delta_tokens", "seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")
        from paperlib.swap.linear_fit import check_precision

        check_precision(self.precision)
        from paperlib.swap.fused_activations import check_activations

        check_activations(self.activations)
        if self.stats_device and self.stats_device != "cpu" and not self.stats_device.startswith("cuda"):
            raise ValueError(f"stats_device must be empty (each layer's device), 'cpu' or 'cuda:N', got {self.stats_device!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        from paperlib.devices import check_device_name

        check_device_name(self.device)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "SwapConfig":
        """The config named by the keys of ``values`` that are fields (e.g. a notebook's
        papermill parameters, ``globals()``); other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def fuse_activations(self) -> bool:
        """Whether composed tanh-GELUs run fused: ``activations`` resolved (``auto``: on GPUs,
        where they are memory-bound; CPU runs keep the model's modules)."""
        if self.activations == "auto":
            return self.device.startswith("cuda") or bool(self.device_map)
        return self.activations == "fused"

    def key(self) -> str:
        """Cache key: everything that changes the numbers (not where they are computed; the default
        precision and the model's own activations are left out so keys of earlier runs stay
        valid)."""
        d = asdict(self)
        for where in ("device", "device_map", "stats_device"):
            d.pop(where)
        if d["precision"] == "float64":
            d.pop("precision")
        d.pop("activations")
        if self.fuse_activations():
            d["activations"] = "fused"
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
