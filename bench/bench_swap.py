"""Benchmark of the swap analysis at GPT-2 Large or Llama-3-8B size (random weights have the true cost).

Prints, from one run on one device:

- the device's bf16 matrix-multiply rate (8192^3 products), the yardstick;
- paperlib's full pipeline (pass 1: hidden states + 36 streamed fits; pass 2: delta and delta'
  for the 35 pairs + held-out R^2) in fp32 and bf16 at several token counts: tokens/s, model
  FLOP rate as a fraction of the bf16 matmul rate, peak memory;
- the naive way (keep every hidden state, ``torch.linalg.lstsq`` per layer, then for each pair
  reorder the block list and run the whole model again) at the smallest token count, as a ratio;
- Spearman of the fp32 and bf16 delta columns (same ranking of pairs?);
- the pipeline runs as the CLI runs it: composed tanh-GELUs fused on GPUs (``--activations``;
  a float64 row with the model's own activations shows what fusing moves), ``fit.npz`` written
  in a background thread while pass 2 runs, and both tables (pairs and layers) made;
- with ``--precisions``: the bf16 pipeline at the largest token count with each product mode
  (``float64`` exact, ``bf16x3`` split-bf16 tensor cores, ``tf32``), its speed and its agreement
  with the float64 run: largest relative change of the maps A_i, of r and delta' (relative to
  the column's largest value), Spearman of r and delta', largest change of the held-out R^2.

Usage: ``python bench/bench_swap.py [--arch gpt2-large|llama3-8b] [--tokens 16384 32768 65536]
[--naive-tokens 16384] [--dtypes fp32 bf16] [--precisions float64 bf16x3 tf32]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from transformers import AutoModel, GPT2Config, LlamaConfig

from paperlib.data.tokens import TokenBatch
from paperlib.swap.analysis import fit_layers, layer_rows, measure_swaps, pair_rows
from paperlib.swap.blocks import ResidualStack, find_blocks
from paperlib.swap.fused_activations import composed_tanh_gelus, fused_activations
from paperlib.swap.pipeline import FitSaver
from paperlib.swap.linear_fit import bf16_tensor_cores_used
from timing import matmul_rate, sync

GPT2_LARGE = dict(n_layer=36, n_embd=1280, n_head=20, n_positions=1024, vocab_size=50257)
LLAMA3_8B = dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0)


def make_config(arch: str, layers: int | None):
    if arch == "gpt2-large":
        return GPT2Config(**{**GPT2_LARGE, "n_layer": layers or GPT2_LARGE["n_layer"]})
    if arch == "llama3-8b":
        return LlamaConfig(**{**LLAMA3_8B, "num_hidden_layers": layers or LLAMA3_8B["num_hidden_layers"]})
    raise SystemExit(f"unknown --arch {arch!r}: use gpt2-large or llama3-8b")


def make_batches(n_tokens: int, seq_len: int, batch_size: int, vocab: int, seed: int) -> list[TokenBatch]:
    g = torch.Generator().manual_seed(seed)
    n_seq = n_tokens // seq_len
    out = []
    for i in range(0, n_seq, batch_size):
        b = min(batch_size, n_seq - i)
        ids = torch.randint(0, vocab, (b, seq_len), generator=g)
        out.append(TokenBatch(ids, torch.ones_like(ids)))
    return out


def pipeline_flops(cfg, n_params_blocks: int, seq_len: int, n_tokens: int) -> float:
    """Model FLOPs of both passes on ``n_tokens`` metric and ``n_tokens`` delta tokens.

    Forward per token: 2 * block parameters + 2 * n_layer * seq * d (causal attention scores
    and values, Kaplan et al.).  Pass 1: a forward + the fits (X^T X and X^T Y: 4 d^2 per
    layer).  Pass 2: a forward + two block calls per pair + delta' and held-out residuals
    (2 d^2 per pair and per layer).
    """
    L, d = cfg.num_hidden_layers, cfg.hidden_size
    fwd = 2 * n_params_blocks + 2 * L * seq_len * d
    per_block = fwd / L
    pass1 = fwd + L * 4 * d * d
    pass2 = fwd + 2 * (L - 1) * per_block + (L - 1) * 2 * d * d + L * 2 * d * d
    return n_tokens * (pass1 + pass2)


SETTINGS = {"fuse": True, "save_dir": None}


def run_paperlib(model, batches_fit, batches_delta, precision: str = "float64", fuse: bool | None = None):
    """Both passes and the tables, as the CLI runs them (``paperlib.swap.pipeline``): composed
    tanh-GELUs fused (``fuse``, default ``SETTINGS``), ``fit.npz`` written to
    ``SETTINGS["save_dir"]`` while pass 2 runs, the pair table (Trans, Dep, r) and the layer table."""
    fuse = SETTINGS["fuse"] if fuse is None else fuse
    device = next(model.parameters()).device
    stack = ResidualStack(model)
    with fused_activations(model, fuse):
        t0 = time.perf_counter()
        fit = fit_layers(stack, batches_fit, progress=False, precision=precision)
        sync(device)
        t1 = time.perf_counter()
        saver = FitSaver(Path(SETTINGS["save_dir"]) / "fit.npz", fit) if SETTINGS["save_dir"] else None
        swaps = measure_swaps(stack, batches_delta, fit, progress=False, precision=precision)
        sync(device)
        t2 = time.perf_counter()
    rows = pair_rows(fit, swaps, device=device)
    layer_rows(fit, swaps)
    if saver is not None:
        saver.wait()
    sync(device)
    PHASES.update(pass1=t1 - t0, pass2=t2 - t1, table_and_save=time.perf_counter() - t2)
    TABLES[(precision, fuse)] = rows
    return fit, swaps


TABLES: dict = {}
NAIVE_SECONDS: dict = {}


def agreement(fit, swaps, rows, fit0, swaps0, rows0) -> dict:
    """How far a fast product mode moves the results from the float64 run on the same tokens."""
    def col(rs, k):
        return np.array([r[k] for r in rs])

    out = {"max_rel_change_A": max(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))
                                   for a, b in zip(fit.A, fit0.A))}
    for k in ("r", "delta_lin", "delta", "dep_ij", "trans_i"):
        a, b = col(rows, k), col(rows0, k)
        out[f"max_change_{k}_over_max"] = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))
        out[f"spearman_{k}"] = float(stats.spearmanr(a, b).statistic) if np.ptp(b) > 0 else float("nan")
    out["max_abs_change_r2_heldout"] = float(np.nanmax(np.abs(np.array(swaps.r2_heldout) - np.array(swaps0.r2_heldout))))
    return out


PHASES: dict = {}


def profile(model, batches_fit, batches_delta, out: str | None, precision: str = "float64") -> None:
    """torch.profiler tables of where the pipeline's time goes: top operators by total device
    time, then by self device time (kernels)."""
    from torch.profiler import ProfilerActivity, profile as prof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with prof(activities=acts) as p:
        run_paperlib(model, batches_fit, batches_delta, precision)
    on = "cuda" if torch.cuda.is_available() else "cpu"
    avg = p.key_averages()
    table = (f"products: {precision}; phases (s, under the profiler): {PHASES}\n"
             + avg.table(sort_by=f"{on}_time_total", row_limit=25)
             + avg.table(sort_by=f"self_{on}_time_total", row_limit=40))
    print(table)
    if out:
        with open(out, "w") as fh:
            fh.write(table)


@torch.no_grad()
def run_naive(model, batches_fit, batches_delta):
    """What one writes first: every hidden state kept in memory, one lstsq per layer, and a full
    forward pass of a reordered block list per swap.  (``hidden_states[-1]`` carries the final
    norm; the naive way uses it as is, which only touches the last pair.)"""
    device = next(model.parameters()).device
    blocks = find_blocks(model)
    path = next(name for name, m in model.named_modules() if m is blocks)
    owner = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    attr = path.rpartition(".")[2]
    L = len(blocks)
    hs = [[] for _ in range(L + 1)]
    for b in batches_fit:
        out = model(input_ids=b.input_ids.to(device), output_hidden_states=True, use_cache=False)
        for i, h in enumerate(out.hidden_states):
            hs[i].append(h.float().reshape(-1, h.shape[-1]))
    X = [torch.cat(h) for h in hs]
    A = [torch.linalg.lstsq(X[i], X[i + 1] - X[i]).solution for i in range(L)]
    del X, hs
    delta = np.zeros(L - 1)
    count = 0
    original = list(blocks)
    try:
        for b in batches_delta:
            ids = b.input_ids.to(device)
            base = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
            for i in range(L - 1):
                setattr(owner, attr, torch.nn.ModuleList(original[:i] + [original[i + 1], original[i]] + original[i + 2 :]))
                sw = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
                d_ = (sw[i + 2].float() - base[i + 2].float()).norm(dim=-1) / base[i].float().norm(dim=-1)
                delta[i] += float(d_.sum())
            count += ids.numel()
    finally:
        setattr(owner, attr, torch.nn.ModuleList(original))
    return A, delta / count


@torch.no_grad()
def forward_only(model, batches) -> None:
    device = next(model.parameters()).device
    for b in batches:
        model(input_ids=b.input_ids.to(device), use_cache=False)


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return out, dt, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="gpt2-large", help="gpt2-large (36 x 1280) or llama3-8b (32 x 4096, GQA)")
    ap.add_argument("--tokens", type=int, nargs="+", default=[16384, 32768, 65536])
    ap.add_argument("--naive-tokens", type=int, default=16384, help="0: skip the naive way")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the architecture's")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--precisions", nargs="+", default=["float64"],
                    help="product modes to time and compare with float64 (bf16 model, largest token count)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--profile", default=None, help="write a torch.profiler table of the bf16 run here")
    ap.add_argument("--profile-precision", default="float64", help="product mode of the profiled run")
    ap.add_argument("--activations", default="auto", choices=["auto", "fused", "model"],
                    help="composed tanh-GELUs: fused (auto: on GPUs, as the CLI) or the model's own modules")
    ap.add_argument("--no-save", action="store_true", help="do not write fit.npz (the CLI writes it)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    rate = matmul_rate(device) if device.type == "cuda" else matmul_rate(device, 256, 2)
    print(f"device: {name}; bf16 matmul rate {rate / 1e12:.1f} TFLOP/s; arch {args.arch}; "
          f"bf16 tensor cores with float32 accumulation for the split-bf16 modes: {bf16_tensor_cores_used(device)}")
    cfg = make_config(args.arch, args.layers)
    SETTINGS["fuse"] = args.activations == "fused" or (args.activations == "auto" and device.type == "cuda")
    save_dir = None if args.no_save else tempfile.TemporaryDirectory(prefix="bench-swap-")
    SETTINGS["save_dir"] = save_dir.name if save_dir else None
    results: dict = {"device": name, "arch": args.arch, "bf16_matmul_tflops": rate / 1e12,
                     "activations": "fused" if SETTINGS["fuse"] else "model", "fit_npz_written": save_dir is not None,
                     "runs": []}
    deltas = {}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for dname in args.dtypes:
        dtype = dtypes[dname]
        torch.manual_seed(0)
        with torch.device(device):  # drawn on the device: an 8B model's init on the host takes minutes
            model = AutoModel.from_config(cfg, dtype=dtype).eval()
        n_block = sum(p.numel() for p in find_blocks(model).parameters())
        warm = make_batches(2 * cfg.hidden_size, args.seq_len, args.batch_size, cfg.vocab_size, seed=0)
        run_paperlib(model, warm, warm)  # CUDA context, kernels, allocator: not timed
        # the yardstick of what the model's own code reaches: plain forward passes over the largest
        # token count (no hidden states kept), as a fraction of the bf16 matmul rate
        bf_y = make_batches(max(args.tokens), args.seq_len, args.batch_size, cfg.vocab_size, seed=1)
        fwd_flops = max(args.tokens) * (2 * n_block + 2 * cfg.num_hidden_layers * args.seq_len * cfg.hidden_size)
        for fuse in sorted({False, SETTINGS["fuse"] and bool(composed_tanh_gelus(model))}):
            with fused_activations(model, fuse):
                forward_only(model, bf_y[:2])
                _, dty, _ = timed(lambda: forward_only(model, bf_y), device)
            row = {"impl": "model forward alone", "activations": "fused" if fuse else "model",
                   "dtype": str(dtype).split(".")[-1], "tokens": max(args.tokens),
                   "seconds": dty, "tokens_per_s": max(args.tokens) / dty, "model_tflops": fwd_flops / dty / 1e12,
                   "fraction_of_bf16_matmul": fwd_flops / dty / rate}
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
        for n in args.tokens:
            bf = make_batches(n, args.seq_len, args.batch_size, cfg.vocab_size, seed=1)
            bd = make_batches(n, args.seq_len, args.batch_size, cfg.vocab_size, seed=2)
            (fit, swaps), dt, peak = timed(lambda: run_paperlib(model, bf, bd), device)
            flops = pipeline_flops(cfg, n_block, args.seq_len, n)
            row = {"impl": "paperlib", "dtype": str(dtype).split(".")[-1], "precision": "float64",
                   "activations": "fused" if SETTINGS["fuse"] else "model", "tokens": n,
                   "seconds": dt, "phases_s": dict(PHASES),
                   "tokens_per_s": 2 * n / dt, "model_tflops": flops / dt / 1e12,
                   "fraction_of_bf16_matmul": flops / dt / rate, "peak_gib": peak}
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
            dump(results, args.json)
            deltas[(row["dtype"], n)] = np.array(swaps.delta)
            if n == args.naive_tokens:
                ours = dt
                bf_n = make_batches(n, args.seq_len, args.batch_size, cfg.vocab_size, seed=1)
                (_, naive_delta), dtn, peakn = timed(lambda: run_naive(model, bf_n, bd), device)
                agree = stats.spearmanr(naive_delta, swaps.delta).statistic
                NAIVE_SECONDS[(str(dtype), n)] = dtn
                row = {"impl": "naive", "dtype": str(dtype).split(".")[-1], "tokens": n, "seconds": dtn,
                       "tokens_per_s": 2 * n / dtn, "peak_gib": peakn, "speedup_of_paperlib": dtn / ours,
                       "spearman_naive_vs_paperlib_delta": agree}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                dump(results, args.json)
        if dtype == torch.bfloat16:
            exact = (fit, swaps, TABLES[("float64", SETTINGS["fuse"])])
            runs = [(p, SETTINGS["fuse"]) for p in args.precisions if p != "float64"]
            if SETTINGS["fuse"] and composed_tanh_gelus(model):
                runs.append(("float64", False))  # what fusing the activations moves
            for precision, fuse in runs:
                run_paperlib(model, warm, warm, precision, fuse)  # warm-up of this mode's kernels
                (fit_p, swaps_p), dt, peak = timed(lambda: run_paperlib(model, bf, bd, precision, fuse), device)
                row = {"impl": "paperlib", "dtype": "bfloat16", "precision": precision,
                       "activations": "fused" if fuse else "model", "tokens": n, "seconds": dt,
                       "phases_s": dict(PHASES), "tokens_per_s": 2 * n / dt, "model_tflops": flops / dt / 1e12,
                       "fraction_of_bf16_matmul": flops / dt / rate, "peak_gib": peak,
                       "speedup_over_naive": NAIVE_SECONDS.get((str(dtype), n), float("nan")) / dt,
                       "agreement_with_float64": agreement(fit_p, swaps_p, TABLES[(precision, fuse)], *exact)}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                dump(results, args.json)
        if args.profile and dtype == torch.bfloat16:
            profile(model, bf, bd, args.profile, args.profile_precision)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "fp32" in args.dtypes and "bf16" in args.dtypes:
        for n in args.tokens:
            rho = stats.spearmanr(deltas[("float32", n)], deltas[("bfloat16", n)]).statistic
            results.setdefault("spearman_fp32_vs_bf16_delta", {})[n] = rho
            print(f"Spearman(delta fp32, delta bf16) at {n} tokens: {rho:.4f}")
    dump(results, args.json)


def dump(results: dict, path: str | None) -> None:
    """Write the figures so far (after every row: a run cut short keeps what it measured)."""
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(results, fh, indent=1)
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
