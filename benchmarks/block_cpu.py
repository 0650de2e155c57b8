"""CPU inference glue of an ALGBlock: each numba kernel and fold of ``algnet.fuse`` against the PyTorch ops it replaces.

For one level of the network (channels c at a map size), times in one process, alternating, best of
``--repeats``:

- LayerNorm2d (both networks): PyTorch's passes, in place where possible, vs the numba kernel of
  ``glue_cpu.layernorm2d`` (which takes it from ``_NUMBA_NORM_MIN`` elements);
- token LayerNorm: ``F.layer_norm`` of the transposed map vs ``glue_cpu.layernorm_to_tokens``;
- aggregation: ``x + (g * F_G + w * F_L)`` (F_G a channels-last view) vs ``glue_cpu.aggregate_residual``;
- local branch (and NAFNet's SCA): ``conv2(x * s)`` vs s folded into conv2's weight;
- residual ``y + beta * conv5(x)`` (both networks) vs beta folded into conv5, the sum in place;
- causal conv1d + silu: torch's depthwise conv1d on a (B, E, L) copy vs ``glue_cpu.causal_conv1d_silu``;
- delta: ``dt @ W^T`` then the scan vs ``scan_cpu.selective_scan_inference`` forming it in the kernel.

    python benchmarks/block_cpu.py                   # c=32 at 720x1280, ALGNet's full-resolution level
    python benchmarks/block_cpu.py --channels 128 --size 180x320
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from algnet.ops import glue_cpu, scan_cpu
from algnet.sysinfo import cpu_info, describe_cpu


def best_of(fns: dict, repeats: int) -> dict:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cases(c: int, h: int, w: int) -> dict:
    g = torch.Generator().manual_seed(0)
    p, e, n, r, k = h * w, 2 * c, 32, -(-c // 16), 4
    x, local = torch.randn(1, c, h, w, generator=g), torch.randn(1, c, h, w, generator=g)
    tokens = torch.randn(1, p, c, generator=g)
    lw, lb, gs, ws = (torch.randn(c, generator=g) for _ in range(4))
    s, conv2 = torch.rand(1, c, 1, 1, generator=g), torch.randn(c, c, 1, 1, generator=g)
    conv5 = torch.nn.Conv2d(c, c, 1)
    xz = torch.randn(1, p, 2 * e, generator=g)
    u, z = xz.split(e, dim=-1)  # (1, P, E) views, as in the Mamba layer
    dt, B, C = torch.randn(1, p, r + 2 * n, generator=g).split([r, n, n], dim=-1)
    taps, cbias, dtw = torch.randn(e, k, generator=g), torch.randn(e, generator=g), 0.3 * torch.randn(e, r, generator=g)
    A, D, dbias = -4 * torch.rand(e, n, generator=g), torch.randn(e, generator=g), 0.1 * torch.randn(e, generator=g)
    scan = dict(A=A, B=B.transpose(1, 2), C=C.transpose(1, 2), D=D, z=z.transpose(1, 2), delta_bias=dbias, delta_softplus=True)

    def layernorm2d_torch():  # LayerNorm2d's in-place PyTorch form
        xc = x - x.mean(1, keepdim=True)
        var = xc.square().mean(1, keepdim=True)
        return xc.mul_(torch.rsqrt(var.add_(1e-6))).mul_(lw.view(1, -1, 1, 1)).add_(lb.view(1, -1, 1, 1))

    def conv_torch():
        out = F.conv1d(u.transpose(1, 2), taps[:, None], cbias, padding=k - 1, groups=e)[..., :p]
        return F.silu(out).transpose(1, 2).contiguous()

    return {
        "LayerNorm2d": (layernorm2d_torch, lambda: glue_cpu._layernorm(x, lw, lb, 1e-6, to_tokens=False).view(x.shape)),
        "token LayerNorm": (
            lambda: F.layer_norm(x.flatten(2).transpose(1, 2), (c,), lw, lb, 1e-5),
            lambda: glue_cpu.layernorm_to_tokens(x, lw, lb, 1e-5)),
        "aggregation + residual": (
            lambda: x + (gs.view(1, -1, 1, 1) * tokens.transpose(1, 2).reshape(1, c, h, w) + ws.view(1, -1, 1, 1) * local),
            lambda: glue_cpu.aggregate_residual(x, tokens, local, gs, ws)),
        "local branch conv2(x * s)": (
            lambda: F.conv2d(x * s, conv2),
            lambda: F.conv2d(x, conv2 * s.view(1, -1, 1, 1))),
        "residual y + beta * conv(x)": (
            lambda: local + gs.view(1, -1, 1, 1) * conv5(x),
            lambda: F.conv2d(x, conv5.weight * gs.view(-1, 1, 1, 1), conv5.bias * gs).add_(local)),
        "causal conv1d + silu": (conv_torch, lambda: glue_cpu.causal_conv1d_silu(u, taps, cbias)),
        "delta projection + scan": (
            lambda: scan_cpu.selective_scan(u.transpose(1, 2), (dt @ dtw.t()).transpose(1, 2), **scan),
            lambda: scan_cpu.selective_scan_inference(u.transpose(1, 2), dt.transpose(1, 2), dt_weight=dtw, **scan)),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", default="720x1280", help="HxW of the map at this level")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--json", metavar="PATH", help="also write the timings and the CPU to PATH as JSON")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    print(f"c={args.channels} at {h}x{w}, torch threads {torch.get_num_threads()}; {describe_cpu()}")
    rows = []
    print(f"{'step':<28}{'PyTorch ms':>12}{'fused ms':>10}{'speed-up':>10}{'max |diff|':>12}")
    with torch.no_grad():
        for name, (plain, fused) in cases(args.channels, h, w).items():
            diff = (plain() - fused()).abs().max().item()  # also the warm-up (numba compiles or loads)
            t = best_of({"plain": plain, "fused": fused}, args.repeats)
            print(f"{name:<28}{t['plain'] * 1e3:>12.1f}{t['fused'] * 1e3:>10.1f}{t['plain'] / t['fused']:>9.2f}x{diff:>12.1e}")
            rows.append(dict(step=name, pytorch_ms=t["plain"] * 1e3, fused_ms=t["fused"] * 1e3, max_abs_diff=diff))
    if args.json:
        result = dict(channels=args.channels, size=[h, w], torch_threads=torch.get_num_threads(), repeats=args.repeats,
                      rows=rows, **cpu_info())
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
