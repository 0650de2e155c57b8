"""Selective-scan throughput and memory, every available backend side by side.

Prints state updates per second (B*E*N*L / seconds) for the forward and forward+backward passes at
B=1, E=64, N=32, L=65,536, the time of one call at a small L (1,024 tokens, a 32x32 feature map:
there fixed per-call costs such as thread wake-ups show; best of 10 x --repeats calls), and the peak
extra memory of one forward at L=921,600 (one full-resolution 1280x720 ALGNet layer). The reference
backend is timed at a small L only, and labelled so. Each rate is the best of --repeats calls;
before each forward+backward the inputs' gradients are reset to None, as ``optimizer.zero_grad()``
does, so adding into the previous call's gradients is not timed.

    python benchmarks/scan.py                      # CPU
    python benchmarks/scan.py --device cuda        # GPU: triton / cuda backends when present
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from algnet.ops import available_backends, selective_scan
from algnet.sysinfo import cpu_info, describe_cpu

E, N = 64, 32


def make_inputs(length: int, device: str, requires_grad: bool = False, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = dict(u=r(1, E, length), delta=r(1, E, length) - 1.0, A=-torch.exp(torch.rand(E, N, generator=g) * 2), B=r(1, N, length),
             C=r(1, N, length), D=r(E), z=r(1, E, length), delta_bias=r(E) * 0.1)
    return {k: v.to(device).requires_grad_(requires_grad) for k, v in x.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_backend(backend: str, length: int, device: str, backward: bool, repeats: int) -> float:
    """Best-of-``repeats`` seconds for one call (after a warm-up that also compiles)."""
    x = make_inputs(length, device, requires_grad=backward)

    def once():
        for t in x.values():  # as optimizer.zero_grad() does: each step's gradients are fresh, not added
            t.grad = None
        with torch.set_grad_enabled(backward):
            y = selective_scan(**x, delta_softplus=True, backend=backend)
            if backward:
                y.backward(torch.ones_like(y))
        _sync(device)

    once()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return best


_MEMORY_SCRIPT = """
import json, resource, sys, torch
sys.path.insert(0, {here!r})
from scan import make_inputs
from algnet.ops import selective_scan
backend, length, device = sys.argv[1], int(sys.argv[2]), sys.argv[3]
selective_scan(**make_inputs(16, device), delta_softplus=True, backend=backend)  # compile, load
x = make_inputs(length, device)
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
else:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with torch.no_grad():
    y = selective_scan(**x, delta_softplus=True, backend=backend)
if device.startswith("cuda"):
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated()
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(extra=(peak - before - y.numel() * y.element_size()) / 2**20)))
"""


def peak_extra_mb(backend: str, length: int, device: str) -> float:
    """Peak memory of one no-grad forward beyond its inputs and output, in a fresh process (MiB)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed blocks go back to the OS at once
    script = _MEMORY_SCRIPT.format(here=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script, backend, str(length), device], capture_output=True, text=True, env=env)
    if out.returncode:
        return float("nan")
    return json.loads(out.stdout.strip().splitlines()[-1])["extra"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--length", type=int, default=65_536)
    parser.add_argument("--reference-length", type=int, default=1_024)
    parser.add_argument("--chunked-length", type=int, default=8_192, help="L for the chunked fallback on CPU (it does 16x the arithmetic)")
    parser.add_argument("--call-length", type=int, default=1_024, help="L of the per-call timings (0 skips them)")
    parser.add_argument("--memory-length", type=int, default=921_600)
    parser.add_argument("--memory-backends", default="cpu,chunked,triton,cuda", help="comma list; '' skips the memory runs")
    parser.add_argument("--backends", default=None, help="comma list (default: every available one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the figures and the CPU to PATH as JSON")
    args = parser.parse_args(argv)

    backends = args.backends.split(",") if args.backends else available_backends(args.device)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, B=1 E={E} N={N}; {describe_cpu()}", flush=True)
    rows = []
    call = f"@L={args.call_length}"
    print(f"{'backend':<10} {'L':>8} {'forward upd/s':>14} {'fwd+bwd upd/s':>14} {'fwd ms ' + call:>16} {'fwd+bwd ms ' + call:>20} "
          f"{'peak extra MiB @L=' + str(args.memory_length):>24}")
    for backend in backends:
        length = {"reference": args.reference_length, "chunked": args.chunked_length if args.device == "cpu" else args.length}.get(backend, args.length)
        updates = E * N * length
        fwd = updates / time_backend(backend, length, args.device, False, args.repeats)
        both = updates / time_backend(backend, length, args.device, True, args.repeats)
        small = args.call_length if backend != "reference" else 0
        fwd_ms, both_ms = ((1e3 * time_backend(backend, small, args.device, bw, 10 * args.repeats) for bw in (False, True)) if small
                           else (float("nan"), float("nan")))
        mem = peak_extra_mb(backend, args.memory_length, args.device) if backend in args.memory_backends.split(",") else float("nan")
        label = f"{backend}*" if length != args.length else backend
        print(f"{label:<10} {length:>8} {fwd:>14.3e} {both:>14.3e} {fwd_ms:>16.2f} {both_ms:>20.2f} {mem:>24.1f}", flush=True)
        rows.append(dict(backend=backend, length=length, forward_updates_per_s=fwd, fwd_bwd_updates_per_s=both,
                         call_length=small, forward_call_ms=fwd_ms, fwd_bwd_call_ms=both_ms, memory_length=args.memory_length,
                         peak_extra_mib=mem))
    print("* timed at a smaller L (reference: a Python loop over tokens; chunked on CPU: 16x the arithmetic); nan: not measured")
    if args.json:
        result = dict(device=args.device, torch_threads=torch.get_num_threads(), E=E, N=N, repeats=args.repeats, rows=rows,
                      **cpu_info())
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
