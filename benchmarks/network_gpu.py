#!/usr/bin/env python3
"""Where ALGNet's GPU time goes at 1280x720, and what compiling and layouts change.

Run on a machine with an NVIDIA GPU (``PYTHONPATH=src python benchmarks/network_gpu.py``):

1. eager fp32 latency of ``algnet`` (median of a few runs after warm-up);
2. a torch.profiler breakdown of one eager forward: GPU time per kernel name, largest first, and the
   share taken by the selective scan's Triton kernels;
3. eager with bf16 autocast, with and without channels-last input;
4. with ``--compile``: ``torch.compile`` of the whole model (the scan stays an opaque call), its
   compile time and latency in fp32 and bf16.

Every row is guarded: one failing row is reported and the others still run. ``--budget`` seconds
(default 240) bounds the whole run; rows that would start after it are skipped and say so.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback
from collections import defaultdict


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="algnet")
    parser.add_argument("--size", default="720x1280", help="HxW of the input")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=240.0)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the model")
    parser.add_argument("--top", type=int, default=15, help="kernels listed in the profile")
    return parser.parse_args(argv)


def timed(fn, reps):
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_breakdown(model, x, top):
    """GPU microseconds per kernel name over one forward; prints the largest and the scan's share."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(x)
            torch.cuda.synchronize()
    per_name = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_name[event.name][0] += event.time_range.elapsed_us()
            per_name[event.name][1] += 1
    total = sum(v[0] for v in per_name.values())
    scan = sum(v[0] for k, v in per_name.items() if k.startswith(("scan_seq", "scan_fwd", "carry")))
    print(f"  GPU kernel time in one forward: {total / 1e3:.1f} ms; selective scan (scan_seq/scan_fwd/carry): "
          f"{scan / 1e3:.1f} ms ({100 * scan / max(total, 1e-9):.0f}%)")
    print(f"  {'kernel':70s} {'calls':>6s} {'ms':>8s} {'share':>6s}")
    for name, (us, calls) in sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {name[:70]:70s} {calls:6d} {us / 1e3:8.2f} {100 * us / max(total, 1e-9):5.1f}%")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import algnet

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch")
        return 1
    start = time.time()
    deadline = start + args.budget
    h, w = (int(v) for v in args.size.lower().split("x"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, model {args.model}, input 1x3x{h}x{w}", flush=True)
    model = algnet.create_model(args.model).cuda().eval()
    x = torch.rand(1, 3, h, w, device="cuda")
    failures = 0

    def row(label, fn):
        nonlocal failures
        if time.time() > deadline:
            print(f"  {label}: skipped, out of budget", flush=True)
            return
        try:
            fn()
        except Exception as err:  # report and go on to the next row
            failures += 1
            traceback.print_exc()
            print(f"  {label}: ERROR {type(err).__name__}: {err}", flush=True)

    def latency(label, net, inp, bf16):
        def run():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                net(inp)

        seconds = timed(run, args.reps)
        print(f"  {label:40s} {seconds * 1e3:8.1f} ms   peak {torch.cuda.max_memory_allocated() / 2**30:5.2f} GiB", flush=True)

    print("eager", flush=True)
    row("fp32", lambda: latency("fp32", model, x, False))
    row("profile", lambda: profile_breakdown(model, x, args.top))
    row("bf16", lambda: latency("bf16 autocast", model, x, True))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    row("bf16 cl", lambda: latency("bf16 autocast, channels-last model+input", model.to(memory_format=torch.channels_last), x_cl, True))
    model = model.to(memory_format=torch.contiguous_format)
    if args.compile:
        print("torch.compile", flush=True)

        def compiled():
            net = torch.compile(model)
            t = time.time()
            with torch.no_grad():
                net(x)
            torch.cuda.synchronize()
            print(f"  compile + first run: {time.time() - t:.1f} s", flush=True)
            latency("compiled fp32", net, x, False)
            row("compiled bf16", lambda: latency("compiled bf16 autocast", net, x, True))

        row("compile", compiled)
    print(f"done in {time.time() - start:.0f} s; {failures} row(s) failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
