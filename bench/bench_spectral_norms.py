"""lambda_max of the table's 106 Gram matrices: full eigen-solver against block Lanczos.

The Dep column (eq. 14) needs ``||A_i||_2``, ``||A_i A_{i+1}||_2`` and ``||A_{i+1} A_i||_2`` for
GPT-2 Large's 36 fitted maps (106 float64 1280 x 1280 matrices).  On a GPU these are
``sqrt(lambda_max(M^T M))``; this script times ``torch.linalg.eigvalsh`` against
:func:`paperlib.swap.indicators.largest_eigenvalues` (block Lanczos with Rayleigh-Ritz)
on the maps fitted by the pipeline (random-weight GPT-2 Large, 16,384 tokens, bf16) and on
Gaussian matrices (a clustered top spectrum, the slow case), for three block sizes and two
step limits, and prints the largest relative difference from the full solver.

Usage: ``PYTHONPATH=. python bench/bench_spectral_norms.py`` (needs a CUDA device).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2Model

sys.path.insert(0, str(Path(__file__).parent))
from bench_swap import GPT2_LARGE, make_batches  # noqa: E402

from paperlib.swap.analysis import fit_layers  # noqa: E402
from paperlib.swap.blocks import ResidualStack  # noqa: E402
from paperlib.swap.indicators import largest_eigenvalues  # noqa: E402


def seconds(fn) -> tuple[torch.Tensor, float]:
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> None:
    d = torch.device("cuda")
    torch.manual_seed(0)
    cfg = GPT2Config(**GPT2_LARGE)
    model = GPT2Model(cfg).to(d, torch.bfloat16).eval()
    fit = fit_layers(ResidualStack(model), make_batches(16384, 1024, 8, cfg.vocab_size, 1), progress=False)
    A = torch.stack([torch.as_tensor(a, dtype=torch.float64) for a in fit.A]).to(d)
    pipeline = torch.cat([A, A[:-1] @ A[1:], A[1:] @ A[:-1]])
    g = torch.Generator(device=d).manual_seed(0)
    gaussian = torch.randn(106, 1280, 1280, dtype=torch.float64, device=d, generator=g) / 40
    print(f"device: {torch.cuda.get_device_name()}")
    for name, M in (("pipeline", pipeline), ("gaussian", gaussian)):
        G = M.transpose(-1, -2) @ M
        torch.linalg.eigvalsh(G[:2])  # solver set-up, not timed
        full, t_full = seconds(lambda: torch.linalg.eigvalsh(G)[..., -1])
        parts = [f"{name}: eigvalsh {t_full:.3f} s"]
        for block in (4, 8, 16):
            for limit in (30, 60):
                sub, t = seconds(lambda: largest_eigenvalues(G, block=block, max_iter=limit))
                err = ((sub - full).abs() / full).max().item()
                parts.append(f"block {block}, max_iter {limit}: {t:.3f} s ({t_full / t:.1f}x), rel. diff {err:.1e}")
        print("; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
