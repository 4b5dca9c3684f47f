"""``python -m paperlib rewire``: the cost of swapping, deleting, parallelising and repeating
layers, and the predictors of paper A and the pruning literature, one CSV row per operation."""

from __future__ import annotations

import argparse
from dataclasses import fields

from paperlib.rewire.config import RewireConfig
from paperlib.rewire.operations import KINDS

HELP = {
    "model": "embedded name (smollm2-135m, minilm-l6), hub name (gpt2-large) or local folder",
    "text": "wiki | lee (embedded), webtext (downloads), webtext:DIR, or a .txt/.jsonl path; "
            "costs use its held-out half",
    "ops": "operation families: " + "; ".join(f"{k}: {v}" for k, v in KINDS.items()),
    "tokens": "held-out tokens on which every operation's cost is measured",
    "max_span": "delete_span: spans of 2 .. max_span layers",
    "metric_tokens": "tokens for the fits A_i (pass 1, shared with `swap` and its cache); at least the hidden size",
    "delta_tokens": "tokens for pass 2 of `swap` (delta, delta' of adjacent pairs)",
    "window": "Xhat averages the token and the window-1 tokens before it (paper A: 4)",
    "ridge": "ridge lambda (times the token count) added to the normal equations",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rewire", help="rewiring costs (KL, perplexity, hidden state) and their predictors",
                       description=__doc__)
    defaults = RewireConfig()
    for f in fields(RewireConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "ops":
            p.add_argument(flag, dest=f.name, nargs="+", default=list(default), metavar="OP",
                           help=HELP[f.name] + " (default: %(default)s)")
        else:
            p.add_argument(flag, dest=f.name, type=type(default), default=default,
                           help=HELP.get(f.name, f.name) + " (default: %(default)s)")
    p.add_argument("--out", default="rewire_table.csv", help="CSV with one row per operation")
    p.add_argument("--spearman-out", default=None,
                   help="optional CSV: Spearman of every predictor with the cost, per operation family")
    p.add_argument("--cache-dir", default="default", help="where finished passes are kept ('none' to disable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the analysis; a problem the user can fix (bad operation or option, missing text or
    model, too few tokens, unsupported model) is one ``error: ...`` line on stderr, exit status 2."""
    from paperlib.swap.cli import one_line_errors

    return one_line_errors(_run, args)


def _run(args: argparse.Namespace) -> int:
    from paperlib.rewire.pipeline import run_rewire_analysis
    from paperlib.rewire.report import spearman_long

    config = RewireConfig(**{f.name: getattr(args, f.name) for f in fields(RewireConfig)})
    cache = None if args.cache_dir == "none" else args.cache_dir
    result = run_rewire_analysis(config, cache_dir=cache, progress=not args.quiet)
    result.table.to_csv(args.out, index=False)
    print(f"wrote {len(result.table)} operations to {args.out} "
          f"({result.n_tokens} held-out tokens{'' if result.has_head else '; no LM head: hidden-state costs only'})")
    cost = "kl" if result.has_head else "delta_out"
    rho = spearman_long(result.table, cost=cost, kinds=config.ops)
    if args.spearman_out:
        rho.to_csv(args.spearman_out, index=False)
    if len(rho):
        print(f"Spearman rho of each predictor with {cost}, per operation family:")
        print(rho.pivot(index="predictor", columns="family", values="rho").round(3).to_string())
    return 0
