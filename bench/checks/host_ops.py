"""Host time of one layer's q/k/v work, and of the tensor calls it is made of (bench/README.md section 7,
round 15).

On a batch small enough that the device never holds the host back (16 x 128 tokens, bf16 autocast, the
student's sizes d 768, r 32), each callable is called ``--calls`` times back to back and the process's CPU
time per call (``time.process_time``: time the host spends descheduled by other load is not in it) is
taken, median over ``--samples`` samples.  Rows:

- the layer's q/k/v as Vanilla KD runs them (three ``nn.Linear`` under autocast) and as LoRAILD does (the
  C++ and Python products, with and without dropout), forward alone and forward plus backward;
- single tensor calls of the kind the product makes (an allocation, a view, a cast, a dropout, a product
  written into a strided view, ...), forward only;

then a profiler table of the C++ product's forward plus backward, by the host time of each operator.

Usage: ``PYTHONPATH=.:bench python bench/checks/host_ops.py [--calls 200] [--samples 9]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from paperlib.loraild import qkv_native
from paperlib.loraild.qkv_product import ProductSpec, QkvProduct


def per_call_us(fn, calls: int, samples: int, sync) -> float:
    """Median over ``samples`` of the process CPU time per call of ``calls`` calls of ``fn`` back to back."""
    for _ in range(10):
        fn()
    sync()
    out = []
    for _ in range(samples):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        out.append((time.process_time() - t0) / calls * 1e6)
        sync()
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--samples", type=int, default=9)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    d, r, n, p, s = 768, 32, args.tokens, 0.05, 2.0
    lin = [nn.Linear(d, d).to(device) for _ in range(3)]
    a = [nn.Parameter(torch.randn(r, d, device=device) * 0.02) for _ in range(3)]
    b = [nn.Parameter(torch.randn(d, r, device=device) * 0.02) for _ in range(3)]
    x = torch.randn(n, d, device=device, requires_grad=True)
    amp = torch.autocast(device.type, dtype=torch.bfloat16)
    native = device.type == "cuda" and qkv_native.available()

    def linears(backward: bool):
        def run():
            with amp:
                outs = [m(x) for m in lin]
            if backward:
                torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        return run

    def product(cpp: bool, drop: float, backward: bool):
        spec = ProductSpec(p=drop, scale=s, dtype=torch.bfloat16)

        def run():
            with amp:
                if cpp:
                    outs = qkv_native.qkv_lora(x, lin, a, b, spec)
                else:
                    outs = QkvProduct.apply(x, lin[0].weight, lin[0].bias, lin[1].weight, lin[1].bias, lin[2].weight,
                                            lin[2].bias, *a, *b, spec)
            if backward:
                torch.autograd.backward(outs[:3], [torch.ones_like(o) for o in outs[:3]])
        return run

    rows = [("3 nn.Linear, forward", linears(False)), ("3 nn.Linear, forward + backward", linears(True))]
    for cpp in ([True] if native else []) + [False]:
        for drop in (p, 0.0):
            for backward in (False, True):
                rows.append((f"{'C++' if cpp else 'Python'} product, p {drop}, forward{' + backward' if backward else ''}",
                             product(cpp, drop, backward)))
    xb = x.detach().to(torch.bfloat16)
    wide = torch.empty(n, d + 3 * r, dtype=torch.bfloat16, device=device)
    w32 = lin[0].weight.detach()
    a16 = torch.randn(r, d, dtype=torch.bfloat16, device=device)
    ws = [m.weight.detach() for m in lin]
    rows += [
        ("torch.empty [N, d + 3r]", lambda: torch.empty(n, d + 3 * r, dtype=torch.bfloat16, device=device)),
        ("narrow (a view)", lambda: wide.narrow(1, 0, d)),
        ("cast [N, d] fp32 -> bf16", lambda: x.detach().to(torch.bfloat16)),
        ("copy_ into a strided view", lambda: wide.narrow(1, 0, d).copy_(xb)),
        ("native_dropout [N, d]", lambda: torch.native_dropout(xb, p, True)),
        ("mm into a strided view", lambda: torch.mm(xb, a16.T, out=wide.narrow(1, d, r))),
        ("cat of 3 fp32 weights into bf16", lambda: torch.cat(ws, out=torch.empty(3 * d, d, dtype=torch.bfloat16,
                                                                                  device=device))),
        ("zero_ of a strided view", lambda: wide.narrow(1, d, 3 * r).zero_()),
        ("cast [d, d] fp32 -> bf16", lambda: w32.to(torch.bfloat16)),
        ("addmm [N, d] x [d, d]", lambda: torch.addmm(lin[0].bias.detach().to(torch.bfloat16), xb,
                                                       w32.to(torch.bfloat16).T)),
    ]
    print(f"host CPU time per call, us (median of {args.samples} x {args.calls} calls; {n} tokens, d {d}, r {r}, bf16; "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'})", flush=True)
    for label, fn in rows:
        print(f"  {label:52s} {per_call_us(fn, args.calls, args.samples, sync):9.1f}", flush=True)
    if native:
        from torch.profiler import ProfilerActivity, profile

        run = product(True, p, True)
        for _ in range(10):
            run()
        sync()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(100):
                run()
            sync()
        print("\nthe C++ product with dropout, forward + backward, 100 calls (profiler on):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))


if __name__ == "__main__":
    main()
