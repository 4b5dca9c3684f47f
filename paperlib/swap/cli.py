"""``python -m paperlib swap``: the swap table of one model on one text, as CSV."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from paperlib.swap.config import SwapConfig

HELP = {
    "model": "embedded name (smollm2-135m, minilm-l6), hub name (gpt2-large) or local folder",
    "text": "wiki | lee (embedded), webtext (the paper's, downloads), webtext:DIR, or a .txt/.jsonl path",
    "metric_tokens": "tokens for the fits A_i (eq. 12); at least the hidden size",
    "delta_tokens": "tokens for delta (eq. 2) and delta' (eq. 16)",
    "window": "Xhat averages the token and the window-1 tokens before it (paper: 4)",
    "ridge": "ridge lambda (times the token count) added to the normal equations",
    "device_map": "'auto' splits the model over the GPUs with accelerate, leaving each card room for its "
                  "layers' fit statistics (models larger than one card); empty: the whole model on --device",
    "precision": "products of the fits and of pass 2: float64 (exact); bf16x6 / bf16x3 (split-bf16 tensor cores, "
                 "6 / 3 bf16 products, maps exact to about cond(G) 2^-23 / 2^-16); tf32 (one TF32 product, "
                 "least exact); sums are float64 in every mode",
    "activations": "auto (fused on GPUs) | fused: GPT-2-style composed tanh-GELUs run as one fused kernel "
                   "(the same function, rounded once: 0.5 s of a 2.2 s GPT-2 Large run on an H100) | model: "
                   "the model's own modules",
    "stats_device": "where the 2 d^2 float64 fit statistics (pass 1) and float32 maps [A_i | K_i] (pass 2) "
                    "of each layer live: empty = the layer's GPU, 'cpu' = pinned host memory (when they do "
                    "not fit beside the weights, e.g. a 70B model on two 80 GB cards)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swap", help="adjacent-layer swap analysis (paper A)", description=__doc__)
    defaults = SwapConfig()
    for f in fields(SwapConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name), help=HELP.get(f.name, f.name) + " (default: %(default)s)")
    p.add_argument("--tokens", type=int, default=None, help="shorthand: metric tokens; delta gets a quarter")
    p.add_argument("--out", default="swap_table.csv", help="CSV with one row per adjacent pair")
    p.add_argument("--layers-out", default=None, help="optional CSV with one row per layer (Trans, R^2)")
    p.add_argument("--cache-dir", default="default", help="where finished passes are kept ('none' to disable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the analysis; a problem the user can fix (bad option, missing text or model, too few
    tokens, unsupported model) is an ``error: ...`` message on stderr, no traceback, exit status 2."""
    return one_line_errors(_run, args)


def one_line_errors(func, args: argparse.Namespace) -> int:
    """``func(args)``, with the errors a user can fix printed as one ``error: ...`` line (exit 2)."""
    from paperlib.swap.blocks import UnsupportedModelError

    # ValueError covers TooFewTokensError, TextSourceError and bad options; OSError covers
    # ModelLoadError and unwritable outputs; UnsupportedModelError is a TypeError
    try:
        return func(args)
    except (ValueError, OSError, UnsupportedModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from paperlib.swap.pipeline import run_swap_analysis
    from paperlib.swap.stats import spearman

    values = {f.name: getattr(args, f.name) for f in fields(SwapConfig)}
    if args.tokens is not None:
        values["metric_tokens"] = args.tokens
        values["delta_tokens"] = max(1, args.tokens // 4)
    config = SwapConfig(**values)
    cache = None if args.cache_dir == "none" else args.cache_dir
    from pathlib import Path

    from paperlib.files import check_writable

    for out in filter(None, (args.out, args.layers_out)):  # before the work, not after it
        check_writable(Path(out).resolve().parent, "output folder", "pass --out/--layers-out in a writable folder")
    result = run_swap_analysis(config, cache_dir=cache, progress=not args.quiet)
    from paperlib.files import write_text_atomic

    write_text_atomic(args.out, result.pairs.to_csv(index=False))
    if args.layers_out:
        write_text_atomic(args.layers_out, result.layers.to_csv(index=False))
    print(f"wrote {len(result.pairs)} pairs to {args.out}")
    if len(result.pairs) >= 3:
        print("r vs delta:      ", spearman(result.pairs["r"], result.pairs["delta"]))
        print("delta' vs delta: ", spearman(result.pairs["delta_lin"], result.pairs["delta"]))
    return 0
