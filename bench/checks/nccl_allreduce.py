"""GPU check: how long the all-reduce of a DistilRoBERTa-size gradient takes between this machine's GPUs.

Data-parallel LoRAILD (bench/README.md section 7 (e)) loses about 9.6 ms per step against perfect
halving.  Its gradients are 82 M float32 values (330 MB) per step, all-reduced by DDP in buckets of
25 MB while the backward runs.  This times, over NCCL, the all-reduce of the whole 330 MB at once and
in 25 MB buckets, and prints the bus bandwidth.

Usage: ``torchrun --standalone --nproc_per_node 2 bench/checks/nccl_allreduce.py`` (prints on rank 0).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import cuda_ms  # noqa: E402


def main() -> None:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    n = 82_000_000
    grad = torch.randn(n, device="cuda")
    buckets = list(grad.split(25 * 2**20 // 4))
    whole = cuda_ms(lambda: dist.all_reduce(grad))
    split = cuda_ms(lambda: [dist.all_reduce(b) for b in buckets])
    if rank == 0:
        nbytes = grad.numel() * 4
        bus = 2 * (world - 1) / world * nbytes / (whole / 1e3) / 1e9
        print(f"{world} x {torch.cuda.get_device_name()}: all-reduce of {nbytes / 1e6:.0f} MB float32: "
              f"{whole:.2f} ms at once (bus bandwidth {bus:.0f} GB/s), {split:.2f} ms in {len(buckets)} buckets of 25 MB")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
