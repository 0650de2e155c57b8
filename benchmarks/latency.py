"""Whole-network CPU latency: ALGNet against NAFNet-32 on the same image, each plain and fused.

Each model runs in eval mode under ``torch.no_grad``, as built and as ``algnet.fuse(model)`` (the
deploy-time conversion), alternating in one process, after one warm-up pass each (which also
compiles or loads the numba kernels); the best of ``--repeats`` timed passes is reported, with the
ratios and the process's peak RSS after each model. ``--profile`` adds a torch.profiler table of
where the fused ALGNet's time goes.

    python benchmarks/latency.py                  # 1280x720, the paper's Table 6 size
    python benchmarks/latency.py --size 256x256
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

import algnet
from algnet.sysinfo import cpu_info, describe_cpu


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def time_models(models: dict, x: torch.Tensor, repeats: int) -> dict:
    """Best seconds of each model, timed alternately so drift on the machine hits both alike."""
    best = dict.fromkeys(models, float("inf"))
    with torch.no_grad():
        for model in models.values():
            model(x)  # warm-up
        for _ in range(repeats):
            for label, model in models.items():
                start = time.perf_counter()
                model(x)
                best[label] = min(best[label], time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="720x1280", help="HxW (default 720x1280)")
    parser.add_argument("--models", default="algnet,nafnet32")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's table for the first model")
    parser.add_argument("--json", metavar="PATH", help="also write the timings and the CPU to PATH as JSON")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    names = args.models.split(",")
    print(f"{h}x{w}, torch threads {torch.get_num_threads()}, scan backend {algnet.ops.resolve_backend(None, 'cpu')}; {describe_cpu()}")
    seconds = {}
    for name in names:
        model = algnet.create_model(name).eval()
        t = time_models({"plain": model, "fused": algnet.fuse(model)}, x, args.repeats)
        seconds[name] = t["fused"]
        print(f"{name:<10} plain {t['plain']:8.2f} s   fused {t['fused']:8.2f} s   ({t['plain'] / t['fused']:.2f}x)   "
              f"peak RSS so far {peak_rss_gb():.2f} GB", flush=True)
    if len(names) == 2:
        print(f"ratio {names[0]}/{names[1]}, fused: {seconds[names[0]] / seconds[names[1]]:.2f}")
    if args.json:
        result = dict(size=[h, w], torch_threads=torch.get_num_threads(), repeats=args.repeats,
                      scan_backend=algnet.ops.resolve_backend(None, "cpu"), seconds=seconds, **cpu_info())
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        model = algnet.fuse(algnet.create_model(names[0]))
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
