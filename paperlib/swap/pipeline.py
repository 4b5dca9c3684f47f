"""End to end: load model and text, run both passes, return tables; cached on disk.

Each finished pass is written to ``cache_dir/<config key>/`` at once (``fit.npz`` after pass 1,
``swaps.json`` after pass 2), so an interrupted run resumes from the last finished pass and a
rerun with the same configuration is read back instead of recomputed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paperlib.data.models import describe_model, load_model
from paperlib.data.text import load_text
from paperlib.data.tokens import batches, sequences
from paperlib.swap.analysis import BASELINES, FitResult, SwapResult, fit_layers, layer_rows, measure_swaps, pair_rows
from paperlib.swap.blocks import ResidualStack
from paperlib.swap.config import SwapConfig


def default_cache_dir() -> Path:
    return Path(os.environ.get("PAPERLIB_CACHE", Path.home() / ".cache" / "paperlib")) / "swap"


@dataclass
class SwapAnalysis:
    config: SwapConfig
    pairs: pd.DataFrame  # one row per adjacent pair (i, j = i + 1), 1-based
    layers: pd.DataFrame  # one row per layer: trans, r2_fit, r2_heldout
    fit: FitResult
    swaps: SwapResult
    model_description: str
    text_description: str
    seconds: dict = field(default_factory=dict)


def _save_fit(path: Path, fit: FitResult) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, A=np.stack(fit.A), r2=np.array(fit.r2), n_tokens=fit.n_tokens,
             **{f"baseline_{k}": np.array(v) for k, v in fit.baselines.items()})
    tmp.replace(path)


def _load_fit(path: Path) -> FitResult:
    z = np.load(path)
    base = {k[len("baseline_"):]: list(z[k]) for k in z.files if k.startswith("baseline_")}
    return FitResult(A=list(z["A"]), r2=list(z["r2"]), n_tokens=int(z["n_tokens"]), baselines=base)


def run_swap_analysis(
    config: SwapConfig,
    cache_dir: str | Path | None = "default",
    progress: bool = True,
    model=None,
    tokenizer=None,
) -> SwapAnalysis:
    """Run (or read back) the swap analysis of ``config``.

    ``model``/``tokenizer`` may be given directly (tests use tiny models); otherwise they are
    loaded by name.  ``cache_dir=None`` disables caching.
    """
    torch.manual_seed(config.seed)
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    folder = Path(cache_dir) / config.key() if cache_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(asdict(config), indent=1))
    fit_path = folder / "fit.npz" if folder else None
    swap_path = folder / "swaps.json" if folder else None
    seconds: dict = {}

    text = load_text(config.text)
    fit = _load_fit(fit_path) if fit_path and fit_path.exists() else None
    if fit is not None and not set(BASELINES) <= set(fit.baselines):
        fit = None  # written before a baseline was added: pass 1 runs again
    need_model = fit is None or not (swap_path and swap_path.exists())
    if need_model and model is None:
        t0 = time.perf_counter()
        model, tokenizer = load_model(config.model, config.device, config.dtype)
        seconds["load"] = time.perf_counter() - t0
    stack = ResidualStack(model) if model is not None else None

    def token_batches(docs, n_tokens: int):
        seqs = sequences(tokenizer, docs, n_tokens, config.seq_len)
        return batches(seqs, config.batch_size, tokenizer.pad_token_id)

    if fit is None:
        t0 = time.perf_counter()
        fit = fit_layers(stack, token_batches(text.metric, config.metric_tokens), config.window, config.ridge, progress)
        seconds["pass1"] = time.perf_counter() - t0
        if fit_path:
            _save_fit(fit_path, fit)
    if swap_path and swap_path.exists():
        swaps = SwapResult(**json.loads(swap_path.read_text()))
    else:
        t0 = time.perf_counter()
        swaps = measure_swaps(stack, token_batches(text.delta, config.delta_tokens), fit, config.window, progress)
        seconds["pass2"] = time.perf_counter() - t0
        if swap_path:
            swap_path.write_text(json.dumps(asdict(swaps)))
    pairs = pd.DataFrame(pair_rows(fit, swaps, device=config.device))
    layers = pd.DataFrame(layer_rows(fit, swaps))
    if folder is not None:
        pairs.to_csv(folder / "pairs.csv", index=False)
        layers.to_csv(folder / "layers.csv", index=False)
    return SwapAnalysis(config, pairs, layers, fit, swaps, describe_model(config.model), text.description, seconds)
