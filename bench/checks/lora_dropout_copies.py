"""GPU micro-benchmark: three ways to make the fused LoRA's three dropped-out copies of a layer's input.

The fused q/k/v LoRA (paperlib/loraild/fused_lora.py) needs ``dropout_m(x)`` for m = q, k, v: three
independent masks over one ``[N, d]`` input, then one batched product with ``A`` ``[3, r, d]``.
Times forward + backward (gradients of x and A) of:

- ``expand``: ``F.dropout(x.expand(3, N, d))`` (the library's way in rounds 6-13; dropout of a stride-0 view;
  round 14 draws three dropouts of ``x`` instead: ``bench/bench_lora_dropout.py``);
- ``cat``: ``F.dropout(torch.cat([x, x, x]).view(3, N, d))`` (a contiguous copy first);
- ``repeat``: ``F.dropout(x.repeat(3, 1, 1))``.

Usage: ``python bench/checks/lora_dropout_copies.py`` on a GPU (bf16, N = 4096 and 16384, d = 768, r = 32).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import cuda_ms  # noqa: E402


def copies(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "expand":
        return x.expand(3, *x.shape)
    if how == "cat":
        return torch.cat([x, x, x]).view(3, *x.shape)
    return x.unsqueeze(0).repeat(3, 1, 1)


def time_variant(how: str, n: int, d: int, r: int, dtype, p: float = 0.05, iters: int = 50) -> float:
    x = torch.randn(n, d, device="cuda", dtype=dtype, requires_grad=True)
    a = torch.randn(3, r, d, device="cuda", dtype=dtype, requires_grad=True)
    g = torch.randn(3, n, r, device="cuda", dtype=dtype)

    def step():
        xs = F.dropout(copies(x, how), p, True)
        h = torch.bmm(a, xs.transpose(1, 2)).transpose(1, 2)
        h.backward(g)

    return cuda_ms(step, iters, warmup=5)


def main() -> None:
    print(torch.cuda.get_device_name(), torch.__version__)
    for dtype in (torch.bfloat16, torch.float32):
        for n in (4096, 16384):
            row = {how: time_variant(how, n, 768, 32, dtype) for how in ("expand", "cat", "repeat")}
            print(f"{str(dtype):15s} N={n:6d}: " + "  ".join(f"{k} {v:.3f} ms" for k, v in row.items())
                  + f"   (per layer, forward + backward; a step has 6 layers)")


if __name__ == "__main__":
    main()
