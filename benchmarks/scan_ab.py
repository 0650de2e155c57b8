"""Two versions of the CPU scan kernel, timed side by side in alternating fresh processes.

On the 2-core development machine, two copies of the *same* module loaded into one process ran up
to 1.2x apart, although they compiled to identical machine code (their assembly was diffed): where
the JIT places code and data moves the timings. Fresh processes, alternating A, B, B, A, ..., and
the median of their per-process results put identical code within ~3% (forward at L=65,536) and
resolve real differences of ~5-10%. See benchmarks/RESULTS.md.

Each version is a copy of ``src/algnet/ops/scan_cpu.py`` saved as its own file, for example::

    git show HEAD~1:src/algnet/ops/scan_cpu.py > /tmp/scan_old.py
    cp src/algnet/ops/scan_cpu.py /tmp/scan_new.py
    python benchmarks/scan_ab.py /tmp/scan_old.py /tmp/scan_new.py --processes 8
    python benchmarks/scan_ab.py /tmp/scan_old.py /tmp/scan_new.py --length 1024 --calls 40

The first run of each file compiles its kernels (about a minute each on 2 cores; numba caches them
next to the file). Inputs are those of ``benchmarks/scan.py`` (B=1, E=64, N=32, delta_softplus, z).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/scan.py: the inputs, E and N


def _load(path: str):
    name = os.path.splitext(os.path.basename(path))[0]  # numba's cache is keyed by the module's file
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's disk cache re-imports a kernel's module by name
    spec.loader.exec_module(module)
    return module


def measure(path: str, length: int, calls: int) -> dict:
    """Median seconds of ``calls`` forward and ``calls`` forward+backward calls of one version."""
    import torch
    from scan import make_inputs

    module = _load(path)
    x = make_inputs(length, "cpu", requires_grad=True)
    order = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

    def once(backward: bool) -> float:
        for t in x.values():
            t.grad = None
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            y = module._SelectiveScanCPU.apply(*(x[k] for k in order), True)
            if backward:
                y.backward(torch.ones_like(y))
        return time.perf_counter() - start

    for _ in range(2):  # compile or load the kernels, touch the buffers
        once(True)
    return {"forward": statistics.median(once(False) for _ in range(calls)),
            "fwd+bwd": statistics.median(once(True) for _ in range(calls))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="first version of scan_cpu.py (a file path)")
    parser.add_argument("b", help="second version")
    parser.add_argument("--length", type=int, default=65_536)
    parser.add_argument("--processes", type=int, default=8, help="fresh processes per version")
    parser.add_argument("--calls", type=int, default=7, help="timed calls per pass in each process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # one version, one process: print its medians
        print(json.dumps(measure(args.a, args.length, args.calls)))
        return
    for path in (args.a, args.b):
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")
    results = {args.a: [], args.b: []}
    for k in range(args.processes):
        for path in (args.a, args.b) if k % 2 == 0 else (args.b, args.a):
            cmd = [sys.executable, os.path.abspath(__file__), path, path, "--child", "--length", str(args.length),
                   "--calls", str(args.calls)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{path}: the child process failed:\n{out.stderr[-2000:]}")
            results[path].append(json.loads(out.stdout.strip().splitlines()[-1]))
    from scan import E, N

    updates = E * N * args.length
    print(f"L={args.length}, {args.processes} fresh processes per version, {args.calls} calls per pass in each")
    print(f"{'version':<28} {'forward ms':>11} {'(min-max)':>15} {'fwd+bwd ms':>11} {'(min-max)':>15} {'fwd+bwd upd/s':>14}")
    med = {}
    for path, rows in results.items():
        f = [1e3 * r["forward"] for r in rows]
        b = [1e3 * r["fwd+bwd"] for r in rows]
        med[path] = (statistics.median(f), statistics.median(b))
        print(f"{os.path.basename(path):<28} {med[path][0]:>11.2f} {f'({min(f):.2f}-{max(f):.2f})':>15} "
              f"{med[path][1]:>11.2f} {f'({min(b):.2f}-{max(b):.2f})':>15} {updates / med[path][1] * 1e3:>14.3e}")
    (fa, ba), (fb, bb) = med[args.a], med[args.b]
    print(f"speed-up of the second over the first (median time ratio): forward {fa / fb:.3f}, fwd+bwd {ba / bb:.3f}")


if __name__ == "__main__":
    main()
