"""The swap analysis of a model larger than one card, split over the GPUs of one host.

Prints, from one run (random weights have the true cost; nothing is downloaded):

1. **Agreement.** A smaller random-weight Llama (``--small-layers`` x ``--small-d``) dispatched with
   accelerate twice: all on ``cuda:0``, then its layers split in two halves over ``cuda:0`` and
   ``cuda:1``.  Both tables must agree (largest difference of r, delta, delta' and R^2; Spearman).
2. **Scale.** A random-weight Llama of Llama-3-70B width (d = 8192, 64 heads, 8 KV heads,
   intermediate 28,672, vocabulary 128,256) with as many layers as the cards hold in bf16 next
   to their fit statistics (``--layers`` to fix it), placed by accelerate's
   ``infer_auto_device_map`` with :func:`paperlib.swap.placement.swap_max_memory` and dispatched
   with ``dispatch_model`` (what ``--device-map auto`` does); both passes and the table at
   ``--tokens`` metric + ``--tokens`` delta tokens: tokens/s, seconds per phase, peak memory per
   card, the model's placement.
3. The memory a full Llama-3-70B shape needs (80 layers), from :func:`memory_plan`.

Usage (2 GPUs): ``PYTHONPATH=. python bench/bench_swap_multi_gpu.py --json results.json``.
``--dry-run-cpu`` runs part 1 on two "devices" that are both the CPU, at a tiny size (a check of
the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy import stats
from transformers import AutoModel, LlamaConfig

from paperlib.data.tokens import TokenBatch
from paperlib.swap.analysis import fit_layers, measure_swaps, pair_rows
from paperlib.swap.blocks import ResidualStack
from paperlib.swap.placement import GiB, memory_plan, swap_max_memory

LLAMA3_70B = dict(num_hidden_layers=80, hidden_size=8192, intermediate_size=28672, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0)


def make_batches(n_tokens: int, seq_len: int, batch_size: int, vocab: int, seed: int) -> list[TokenBatch]:
    g = torch.Generator().manual_seed(seed)
    n_seq = n_tokens // seq_len
    out = []
    for i in range(0, n_seq, batch_size):
        ids = torch.randint(0, vocab, (min(batch_size, n_seq - i), seq_len), generator=g)
        out.append(TokenBatch(ids, torch.ones_like(ids)))
    return out


def _dev(v) -> torch.device:
    return torch.device(f"cuda:{v}" if isinstance(v, int) else v)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def random_dispatched(config: LlamaConfig, device_map: dict, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """A bf16 model built without host memory: an empty (meta) model whose parameters are drawn on
    ``cuda:0`` by a generator per parameter (so any placement gets the same weights) and moved to
    the device the map gives them, then dispatched with accelerate's hooks."""
    from accelerate import dispatch_model, init_empty_weights
    from accelerate.utils import set_module_tensor_to_device

    with init_empty_weights():
        model = AutoModel.from_config(config, dtype=torch.bfloat16)
    owners = sorted(device_map, key=len, reverse=True)
    src = "cuda:0" if torch.cuda.is_available() else "cpu"
    for k, (name, p) in enumerate(list(model.named_parameters())):
        owner = next(o for o in owners if o == "" or name == o or name.startswith(o + "."))
        dev = _dev(device_map[owner])
        g = torch.Generator(device=src).manual_seed(seed * 100003 + k)
        if name.endswith("norm.weight"):
            value = torch.ones(p.shape, dtype=torch.bfloat16, device=dev)
        else:
            value = torch.empty(p.shape, dtype=torch.bfloat16, device=src).normal_(0.0, std, generator=g).to(dev)
        set_module_tensor_to_device(model, name, dev, value=value)
    model = dispatch_model(model, device_map=device_map)
    return model.eval()


def split_map(n_layers: int, devices: list) -> dict:
    """Layers in ``len(devices)`` consecutive groups; embeddings on the first device, final norm on the last."""
    per = -(-n_layers // len(devices))
    return {"embed_tokens": devices[0], "rotary_emb": devices[0], "norm": devices[-1],
            **{f"layers.{i}": devices[i // per] for i in range(n_layers)}}


def run(model, bf, bd, precision: str) -> tuple[list[dict], object, dict]:
    stack = ResidualStack(model)
    for i in range(torch.cuda.device_count()):
        torch.cuda.reset_peak_memory_stats(i)
    t0 = time.perf_counter()
    fit = fit_layers(stack, bf, progress=False, precision=precision)
    _sync()
    t1 = time.perf_counter()
    swaps = measure_swaps(stack, bd, fit, progress=False, precision=precision)
    _sync()
    t2 = time.perf_counter()
    rows = pair_rows(fit, swaps, device=stack.devices[0])
    _sync()
    t3 = time.perf_counter()
    info = {"seconds": t3 - t0, "phases_s": {"pass1": t1 - t0, "pass2": t2 - t1, "table": t3 - t2},
            "peak_gib_per_card": [torch.cuda.max_memory_allocated(i) / GiB for i in range(torch.cuda.device_count())],
            "layers_per_card": {str(d): sum(1 for x in stack.devices if x == d) for d in sorted(set(stack.devices), key=str)}}
    return rows, swaps, info


def compare(rows_a, swaps_a, rows_b, swaps_b) -> dict:
    out = {}
    for k in ("r", "delta", "delta_lin"):
        a = np.array([r[k] for r in rows_a])
        b = np.array([r[k] for r in rows_b])
        out[f"max_rel_diff_{k}"] = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-300))
        out[f"spearman_{k}"] = float(stats.spearmanr(a, b).statistic)
    out["max_abs_diff_r2_heldout"] = float(np.nanmax(np.abs(np.array(swaps_a.r2_heldout) - np.array(swaps_b.r2_heldout))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=None, help="layers of the 70B-width model (default: as many as fit)")
    ap.add_argument("--tokens", type=int, default=16384, help="metric tokens = delta tokens (>= d = 8192)")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--headroom-gib", type=float, default=8.0, help="per card, beyond weights and statistics")
    ap.add_argument("--precision", default="float64", help="float64 | bf16x3 | tf32")
    ap.add_argument("--small-layers", type=int, default=16)
    ap.add_argument("--small-d", type=int, default=2048)
    ap.add_argument("--small-tokens", type=int, default=8192)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--dry-run-cpu", action="store_true", help="check the script on the CPU at a tiny size")
    args = ap.parse_args()
    if args.dry_run_cpu:
        args.small_layers, args.small_d, args.small_tokens, args.seq_len, args.skip_large = 4, 256, 1024, 128, True
        devices: list = ["cpu", "cpu"]
        names = ["cpu", "cpu"]
    else:
        n_cards = torch.cuda.device_count()
        if n_cards < 2:
            raise SystemExit(f"error: this benchmark needs 2 or more GPUs, found {n_cards}")
        devices = [0, 1]
        names = [torch.cuda.get_device_name(i) for i in range(n_cards)]
    print(f"devices: {names}; torch {torch.__version__}")
    results: dict = {"devices": names, "precision": args.precision}

    # 3. what the full Llama-3-70B shape needs
    plan70 = memory_plan(LlamaConfig(**LLAMA3_70B), torch.bfloat16)
    results["llama3_70b_plan"] = {"summary": plan70.summary(), "weights_gb": plan70.weights / 1e9,
                                  "stats_gb": plan70.stats / 1e9}
    print("Llama-3-70B shape:", plan70.summary())

    # 1. agreement: one card against two cards, same weights and tokens
    small = LlamaConfig(**{**LLAMA3_70B, "num_hidden_layers": args.small_layers, "hidden_size": args.small_d,
                           "intermediate_size": int(args.small_d * 3.5), "num_attention_heads": max(2, args.small_d // 128),
                           "num_key_value_heads": min(8, max(2, args.small_d // 128)), "vocab_size": 32000})
    bf = make_batches(args.small_tokens, args.seq_len, args.batch_size, small.vocab_size, seed=1)
    bd = make_batches(args.small_tokens, args.seq_len, args.batch_size, small.vocab_size, seed=2)
    runs = {}
    for label, dmap in (("one_card", split_map(args.small_layers, devices[:1])),
                        ("two_cards", split_map(args.small_layers, devices))):
        model = random_dispatched(small, dmap)
        run(model, bf[:1], bd[:1], args.precision)  # warm-up (kernels, allocator); one batch holds >= d tokens
        runs[label] = run(model, bf, bd, args.precision)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        print(label, json.dumps(runs[label][2]))
    agree = compare(runs["one_card"][0], runs["one_card"][1], runs["two_cards"][0], runs["two_cards"][1])
    results["agreement_small"] = {"config": f"{args.small_layers} layers, d = {args.small_d}", **agree,
                                  "one_card": runs["one_card"][2], "two_cards": runs["two_cards"][2]}
    print("one card vs two cards:", json.dumps(agree))

    # 2. scale: 70B width, as many layers as the cards hold
    if not args.skip_large:
        from accelerate import infer_auto_device_map, init_empty_weights

        one = memory_plan(LlamaConfig(**{**LLAMA3_70B, "num_hidden_layers": 1}), torch.bfloat16)
        headroom = int(args.headroom_gib * GiB)
        free = sum(torch.cuda.mem_get_info(i)[0] for i in range(n_cards))
        per_layer = one.layer_weight_bytes + one.stats_bytes_per_layer
        n_layers = args.layers or int((free - n_cards * headroom - one.other_weight_bytes) // per_layer)
        for _ in range(12):  # fewer layers until accelerate places them all on the cards
            cfg = LlamaConfig(**{**LLAMA3_70B, "num_hidden_layers": n_layers})
            plan = memory_plan(cfg, torch.bfloat16)
            with init_empty_weights():
                meta = AutoModel.from_config(cfg, dtype=torch.bfloat16)
            dmap = infer_auto_device_map(meta, max_memory=swap_max_memory(plan, headroom), dtype=torch.bfloat16,
                                         no_split_module_classes=meta._no_split_modules)
            del meta
            if not any(v in ("cpu", "disk") for v in dmap.values()):
                break
            if args.layers:
                raise SystemExit(f"error: {n_layers} layers do not fit the cards with their statistics; "
                                 f"pass fewer --layers")
            n_layers -= 1
        print(f"70B-width model: {plan.summary()}; placed by accelerate over {n_cards} cards")
        model = random_dispatched(cfg, dmap)
        bf = make_batches(args.tokens, args.seq_len, args.batch_size, cfg.vocab_size, seed=1)
        bd = make_batches(args.tokens, args.seq_len, args.batch_size, cfg.vocab_size, seed=2)
        rows, swaps, info = run(model, bf, bd, args.precision)
        info.update(layers=n_layers, d=cfg.hidden_size, tokens=args.tokens, plan=plan.summary(),
                    tokens_per_s=2 * args.tokens / info["seconds"],
                    r_range=[min(r["r"] for r in rows), max(r["r"] for r in rows)],
                    delta_range=[min(r["delta"] for r in rows), max(r["delta"] for r in rows)],
                    r2_heldout_min=float(np.nanmin(swaps.r2_heldout)))
        results["large"] = info
        print("70B width:", json.dumps(info))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
