"""End to end: load model and text, run both passes, return tables; cached on disk.

Each finished pass is written to ``cache_dir/<key>/`` at once (``fit.npz`` after pass 1,
``swaps.json`` after pass 2), so an interrupted run resumes from the last finished pass and a
rerun with the same configuration is read back instead of recomputed.  The key is the
configuration *and the content* of the model's files and the text's files
(:mod:`paperlib.fingerprint`): edited text or new weights at the same path are a new entry.
Files are written atomically; a damaged one is reported by name and recomputed; one process at a
time computes an entry (a lock file in the cache folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paperlib.data.models import context_length, describe_model, load_model, model_source, resolve_dtype
from paperlib.data.text import load_text, text_files
from paperlib.devices import check_device
from paperlib.files import BackgroundWrite, atomic_path, check_writable, read_json, read_or_none, write_json_atomic, write_text_atomic
from paperlib.fingerprint import path_fingerprint, source_fingerprint
from paperlib.locks import hold_lock
from paperlib.data.tokens import batches, sequences
from paperlib.swap.analysis import BASELINES, FitResult, SwapResult, fit_layers, layer_rows, measure_swaps, pair_rows
from paperlib.swap.blocks import ResidualStack
from paperlib.swap.host_maps import HostMaps
from paperlib.swap.config import SwapConfig
from paperlib.swap.fused_activations import fused_activations


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
    maps = fit.A.array() if isinstance(fit.A, HostMaps) else np.stack(fit.A)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
            np.savez(fh, A=maps, r2=np.array(fit.r2), n_tokens=fit.n_tokens,
                     **{f"baseline_{k}": np.array(v) for k, v in fit.baselines.items()})


class FitSaver(BackgroundWrite):
    """Writes ``fit.npz`` in a background thread while pass 2 runs.

    The maps are copied from the GPUs on side streams (:class:`~paperlib.swap.host_maps.HostMaps`)
    and written atomically, overlapping pass 2's kernels; :meth:`wait` joins the thread and
    re-raises what it raised.  An error in pass 2 still leaves the finished file (the caller joins
    the thread before re-raising it), so the next run resumes from pass 2.
    """

    def __init__(self, path: Path, fit: FitResult):
        super().__init__(lambda: _save_fit(path, fit), name="paperlib-save-fit")


def _load_fit(path: Path) -> FitResult:
    with np.load(path) as z:  # allow_pickle stays False: no code runs when a received file is read
        base = {k[len("baseline_"):]: list(z[k]) for k in z.files if k.startswith("baseline_")}
        return FitResult(A=list(z["A"]), r2=list(z["r2"]), n_tokens=int(z["n_tokens"]), baselines=base)


def _load_swaps(path: Path) -> SwapResult:
    return SwapResult(**read_json(path))


def content_key(config: SwapConfig) -> str:
    """Cache key: the configuration (:meth:`SwapConfig.key`) and the content of the model's and
    the text's local files (a hub name or URL counts by its name)."""
    parts = {"config": config.key(), "model": source_fingerprint(model_source(config.model)),
             "text": [path_fingerprint(p) for p in text_files(config.text)] or config.text}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def check_seq_len(model, seq_len: int) -> None:
    """``seq_len`` must fit the model's positions (past them the embeddings index out of range)."""
    limit = context_length(model)
    if limit is not None and seq_len > limit:
        raise ValueError(f"seq_len {seq_len} exceeds the model's context of {limit} positions; "
                         f"use --seq-len {limit} or less")


def _load(config: SwapConfig):
    """Load ``config.model``; with ``device_map="auto"`` on GPUs, the weights leave each card room
    for the fit statistics of its layers (:func:`paperlib.swap.placement.swap_max_memory`)."""
    max_memory = None
    if config.device_map == "auto" and torch.cuda.is_available():
        from transformers import AutoConfig

        from paperlib.swap.placement import memory_plan, swap_max_memory

        plan = memory_plan(AutoConfig.from_pretrained(config.model), resolve_dtype(config.dtype))
        max_memory = swap_max_memory(plan, stats_on_gpu=not config.stats_device)
    return load_model(config.model, config.device, config.dtype, device_map=config.device_map or None,
                      max_memory=max_memory)


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
    check_device(config.device)
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    if cache_dir is None:
        return _run(config, None, progress, model, tokenizer)
    check_writable(cache_dir, "cache folder", "pass another with --cache-dir (or $PAPERLIB_CACHE), or 'none'")
    folder = Path(cache_dir) / content_key(config)
    with hold_lock(folder):  # one process computes an entry; a second one waits, then reads it back
        return _run(config, folder, progress, model, tokenizer)


def _run(config: SwapConfig, folder: Path | None, progress: bool, model, tokenizer) -> SwapAnalysis:
    if folder is not None:
        write_text_atomic(folder / "config.json", json.dumps(asdict(config), indent=1))
    fit_path = folder / "fit.npz" if folder else None
    swap_path = folder / "swaps.json" if folder else None
    seconds: dict = {}

    text = load_text(config.text)
    fit = read_or_none(fit_path, _load_fit) if fit_path else None
    if fit is not None and not set(BASELINES) <= set(fit.baselines):
        fit = None  # written before a baseline was added: pass 1 runs again
    swaps = read_or_none(swap_path, _load_swaps) if swap_path else None
    if (fit is None or swaps is None) and model is None:
        t0 = time.perf_counter()
        model, tokenizer = _load(config)
        seconds["load"] = time.perf_counter() - t0
    if model is not None:
        check_seq_len(model, config.seq_len)
    stack = ResidualStack(model) if model is not None else None

    def token_batches(docs, n_tokens: int):
        seqs = sequences(tokenizer, docs, n_tokens, config.seq_len)
        return batches(seqs, config.batch_size, tokenizer.pad_token_id)

    saver: FitSaver | None = None
    try:
        with fused_activations(model, config.fuse_activations() and model is not None):
            if fit is None:
                swaps = None  # pass 2 uses pass 1's maps: a new fit means new swaps
                t0 = time.perf_counter()
                fit = fit_layers(stack, token_batches(text.metric, config.metric_tokens), config.window, config.ridge,
                                 progress, precision=config.precision, stats_device=config.stats_device or None)
                seconds["pass1"] = time.perf_counter() - t0
                if fit_path:
                    saver = FitSaver(fit_path, fit)  # written while pass 2 runs
            if swaps is None:
                t0 = time.perf_counter()
                swaps = measure_swaps(stack, token_batches(text.delta, config.delta_tokens), fit, config.window,
                                      progress, precision=config.precision, maps_device=config.stats_device or None)
                seconds["pass2"] = time.perf_counter() - t0
                if swap_path:
                    write_json_atomic(swap_path, asdict(swaps))
        table_device = stack.devices[0] if (config.device_map and stack is not None) else config.device
        pairs = pd.DataFrame(pair_rows(fit, swaps, device=table_device))
        layers = pd.DataFrame(layer_rows(fit, swaps))
    except BaseException:
        if saver is not None:
            saver.wait(raise_error=False)  # fit.npz is finished: a rerun resumes from pass 2
        raise
    if saver is not None:
        saver.wait()  # fit.npz is complete (or its error raised) before anything returns
    if isinstance(fit.A, HostMaps):
        fit.A.array()  # on the host now (a no-op after FitSaver), so that the device copies can go
    fit.A_device = None  # the device copies of the maps served pass 2 and the table; free that memory
    if folder is not None:
        write_text_atomic(folder / "pairs.csv", pairs.to_csv(index=False))
        write_text_atomic(folder / "layers.csv", layers.to_csv(index=False))
    return SwapAnalysis(config, pairs, layers, fit, swaps, describe_model(config.model), text.description, seconds)
