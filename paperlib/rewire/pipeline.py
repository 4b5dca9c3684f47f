"""End to end: pass 1 (shared with the swap analysis), then the rewiring pass; cached on disk.

Pass 1 and 2 of paper A come from :func:`paperlib.swap.pipeline.run_swap_analysis` with the
same model, text and token counts, so its cache (``<cache>/swap/<key>/``, e.g. chapter 02's run)
is reused.  The rewiring pass writes its running sums to ``<cache>/rewire/<key>/state.json``
after every batch (atomically) and its table to ``ops.csv`` at the end: an interrupted run
resumes after the last finished batch and a finished one is read back.
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

from paperlib.data.models import describe_model
from paperlib.data.text import load_text
from paperlib.data.tokens import batches, sequences
from paperlib.rewire.config import RewireConfig
from paperlib.rewire.costs import COSTS, CostSums
from paperlib.rewire.heads import find_output_head, load_model_with_head
from paperlib.rewire.measure import SUMMED, measure_rewirings
from paperlib.rewire.operations import Rewiring, expand
from paperlib.rewire.predictors import PREDICTORS
from paperlib.swap.blocks import ResidualStack
from paperlib.swap.pipeline import SwapAnalysis, run_swap_analysis

#: columns of the operations table, in order
COLUMNS = ("op", "i", "j", *COSTS, *PREDICTORS)


def default_cache_dir() -> Path:
    return Path(os.environ.get("PAPERLIB_CACHE", Path.home() / ".cache" / "paperlib"))


@dataclass
class RewireAnalysis:
    config: RewireConfig
    table: pd.DataFrame  # one row per operation, COLUMNS (layers 1-based, j empty where it does not apply)
    swap: SwapAnalysis  # pass 1 and 2 of paper A (fits A_i, r, delta, delta' of adjacent pairs)
    n_tokens: int  # held-out tokens the costs were measured on
    nll: float  # the original model's mean next-token NLL on them (nan for encoders)
    has_head: bool
    model_description: str
    text_description: str
    seconds: dict = field(default_factory=dict)


def operations_table(ops: list[Rewiring], sums: CostSums, pairs: pd.DataFrame, has_head: bool,
                     has_linear: bool = True) -> pd.DataFrame:
    """One row per operation: costs, then predictors (``r`` for adjacent swaps only)."""
    means = sums.means()
    r = {(int(a), int(b)): v for a, b, v in zip(pairs["i"], pairs["j"], pairs["r"])}
    rows = []
    for k, op in enumerate(ops):
        row = {"op": op.op, "i": op.i, "j": op.j}
        for name in SUMMED:
            row[name] = float(means[name][k])
        if not has_head:
            row["kl"] = row["dnll"] = np.nan
        if not has_linear:
            row["linear"] = np.nan
        row["r"] = r.get((op.i, op.j), np.nan) if op.op == "swap" else np.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["j"] = table["j"].astype("Int64")
    return table


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    tmp = path.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def run_rewire_analysis(
    config: RewireConfig,
    cache_dir: str | Path | None = "default",
    progress: bool = True,
    model=None,
    tokenizer=None,
) -> RewireAnalysis:
    """Run (or read back, or resume) the rewiring analysis of ``config``.

    ``model``/``tokenizer`` may be given directly (tests use tiny models; a causal LM with its
    head gives output costs, a base model or encoder hidden-state costs only); otherwise they
    are loaded by name with :func:`paperlib.rewire.heads.load_model_with_head`.
    ``cache_dir=None`` disables caching.
    """
    torch.manual_seed(config.seed)
    root = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir is not None else None)
    folder = root / "rewire" / config.key() if root is not None else None
    seconds: dict = {}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(asdict(config), indent=1))
    table_path = folder / "ops.csv" if folder else None
    state_path = folder / "state.json" if folder else None
    meta_path = folder / "meta.json" if folder else None

    text = load_text(config.text)
    done = table_path is not None and table_path.exists() and meta_path.exists()
    if not done and model is None:
        t0 = time.perf_counter()
        model, tokenizer = load_model_with_head(config.model, config.device, config.dtype)
        seconds["load"] = time.perf_counter() - t0
    swap_cache = root / "swap" if root is not None else None
    t0 = time.perf_counter()
    swap = run_swap_analysis(config.swap_config(), cache_dir=swap_cache, progress=progress,
                             model=model, tokenizer=tokenizer)
    seconds.update({f"swap {k}": v for k, v in swap.seconds.items()})
    seconds["r, Dep from the fits"] = time.perf_counter() - t0 - sum(swap.seconds.values())

    if done:
        table = pd.read_csv(table_path, dtype={"j": "Int64"})
        meta = json.loads(meta_path.read_text())
    else:
        stack = ResidualStack(model)
        head = find_output_head(model)
        ops = expand(config.ops, stack.n_layers, config.max_span)
        seqs = sequences(tokenizer, text.delta, config.tokens, config.seq_len)
        token_batches = batches(seqs, config.batch_size, tokenizer.pad_token_id)
        state = None
        if state_path is not None and state_path.exists():
            state = CostSums.from_state(json.loads(state_path.read_text()))
        checkpoint = (lambda s: _write_json(state_path, s.state())) if state_path is not None else None
        t0 = time.perf_counter()
        sums = measure_rewirings(stack, head, token_batches, ops, swap.fit.A, config.window, progress,
                                 state=state, checkpoint=checkpoint)
        seconds["rewire pass"] = time.perf_counter() - t0
        table = operations_table(ops, sums, swap.pairs, has_head=head is not None)
        meta = {"n_tokens": sums.n_tokens, "has_head": head is not None,
                "nll": sums.nll_sum / sums.n_targets if head is not None and sums.n_targets else float("nan")}
        if folder is not None:
            _write_json(meta_path, meta)
            _write_csv(table_path, table)
    return RewireAnalysis(config, table, swap, int(meta["n_tokens"]), float(meta["nll"]), bool(meta["has_head"]),
                          describe_model(config.model), text.description, seconds)
