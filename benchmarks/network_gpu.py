#!/usr/bin/env python3
"""Where ALGNet's GPU time goes at 1280x720, and what compiling and layouts change.

Run on a machine with an NVIDIA GPU (``PYTHONPATH=src python benchmarks/network_gpu.py``):

1. the Triton glue kernels (:mod:`algnet.ops.glue_triton`) against their PyTorch twins
   (:mod:`algnet.ops.glue_ref`), at the shapes of ALGNet's first level at 1280x720, side by side;
2. eager fp32 latency of ``algnet.fuse(model)`` against the plain ``model`` in the same process,
   alternating, median of a few runs after warm-up each, and how far the two outputs differ;
3. the same with TF32 matrix products (``torch.backends.cuda.matmul.allow_tf32``; cuDNN's
   convolutions use TF32 by default already), and replayed as one CUDA graph (no per-kernel
   launch cost on the host), also with the scan's chunk at 256 and 512 tokens; then GPU time per
   PyTorch op and input shapes;
4. a torch.profiler breakdown of one eager forward: GPU time per kernel name, largest first, and the
   share taken by the selective scan's Triton kernels, beside the forward's wall time;
5. eager with bf16 autocast, with and without channels-last input;
6. with ``--compile``: ``torch.compile`` of the whole model (the scan stays an opaque call), its
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
    parser.add_argument("--top", type=int, default=25, help="kernels listed in the profile")
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


def glue_rows(reps):
    """Each fused glue kernel against the PyTorch ops the model would run instead, ALGNet level 1 at 1280x720."""
    import torch

    from algnet.models.algnet import ALGBlock
    from algnet.ops import glue_ref, glue_triton

    block = ALGBlock(32).cuda().eval()
    x = torch.randn(1, 32, 720, 1280, device="cuda")
    toks = torch.randn(1, 720 * 1280, 32, device="cuda")
    xz = torch.randn(1, 720 * 1280, 128, device="cuda")
    y2 = torch.randn(1, 64, 720, 1280, device="cuda")
    mamba = block.g_layer.mamba
    taps = mamba.conv1d.weight[:, 0, :]

    norm, tnorm = block.norm1, block.g_layer.norm
    cases = [
        ("LayerNorm2d (1,32,720,1280)", lambda: glue_triton.layernorm2d(x, norm.weight, norm.bias, norm.eps), lambda: norm(x)),
        ("token LayerNorm -> (1,921600,32)", lambda: glue_triton.layernorm_to_tokens(x, tnorm.weight, tnorm.bias, tnorm.eps),
         lambda: tnorm(x.flatten(2).transpose(1, 2))),
        ("x + g*F_G^T + w*F_L", lambda: glue_triton.aggregate_residual(x, toks, x, block.aggregate.g, block.aggregate.w),
         lambda: x + block.aggregate(toks.transpose(1, 2).reshape(x.shape), x)),
        ("conv1d+silu (1,921600,64) of in_proj", lambda: glue_triton.causal_conv1d_silu(xz[..., :64], taps, mamba.conv1d.bias),
         lambda: mamba._conv_silu(xz[..., :64])),
        ("dw3x3 conv + SimpleGate (1,64,720,1280)", lambda: glue_triton.dwconv3x3_gate(y2, block.conv2.weight, block.conv2.bias),
         lambda: block.sg(block.conv2(y2))),
    ]
    print(f"  {'glue op':38s} {'fused ms':>9s} {'PyTorch ms':>11s} {'ratio':>6s}")
    with torch.no_grad():
        for label, fused, torch_ops in cases:
            a, b = timed(fused, reps), timed(torch_ops, reps)
            print(f"  {label:38s} {a * 1e3:9.3f} {b * 1e3:11.3f} {b / a:5.1f}x", flush=True)
    del x, toks, xz, y2


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
    launches = sum(v[1] for v in per_name.values())
    print(f"  {launches} kernel launches in one forward")
    scan = sum(v[0] for k, v in per_name.items() if k.startswith(("scan_seq", "scan_fwd", "carry")))
    print(f"  GPU kernel time in one forward: {total / 1e3:.1f} ms; selective scan (scan_seq/scan_fwd/carry): "
          f"{scan / 1e3:.1f} ms ({100 * scan / max(total, 1e-9):.0f}%)")
    print(f"  {'kernel':70s} {'calls':>6s} {'ms':>8s} {'share':>6s}")
    for name, (us, calls) in sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {name[:70]:70s} {calls:6d} {us / 1e3:8.2f} {100 * us / max(total, 1e-9):5.1f}%")


def profile_ops(model, x, top):
    """GPU time per PyTorch op and input shapes over one forward: which layers the kernels serve."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            model(x)
            torch.cuda.synchronize()
    averages = prof.key_averages(group_by_input_shape=True)
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(averages.table(sort_by=key, row_limit=top, max_name_column_width=36, max_shapes_column_width=90), flush=True)
            return
        except (AttributeError, KeyError, ValueError):
            continue


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
    plain = algnet.create_model(args.model).cuda().eval()
    model = algnet.fuse(plain)
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

    def tf32_latency(label, net, tf32=False):
        saved_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            latency(label, net, x, False)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved_tf32

    def output_difference():
        with torch.no_grad():
            diff = (model(x)[-1] - plain(x)[-1]).abs().max().item()
        print(f"  output, fuse(model) vs model: max |difference| {diff:.2e} (image values in [0, 1])", flush=True)

    def graph_latency(label, source=None, tf32=False, bf16=False, chunk=None):
        """The model as one CUDA graph (algnet.CUDAGraphModel), captured afresh for this row."""
        from algnet.cuda_graph import CUDAGraphModel
        from algnet.ops import scan_triton

        source = model if source is None else source
        saved_tf32 = torch.backends.cuda.matmul.allow_tf32
        saved_chunk = scan_triton.CHUNK
        torch.backends.cuda.matmul.allow_tf32 = tf32
        with torch.no_grad():
            default = model(x)[-1]  # eager, fp32, the default chunk
        scan_triton.CHUNK = chunk or saved_chunk
        try:
            net = CUDAGraphModel(source, capture_after=0)  # captured at its first call
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                out = net(x)[-1]
                diff = (out - source(x)[-1]).abs().max().item()
            latency(label, net, x, bf16)
            print(f"  {'':40s} (graph vs eager output: max |difference| {diff:.1e}; vs eager fp32 at the default "
                  f"settings {(out.float() - default).abs().max().item():.1e})", flush=True)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved_tf32
            scan_triton.CHUNK = saved_chunk

    print("fused glue kernels against PyTorch ops", flush=True)
    row("glue", lambda: glue_rows(args.reps))
    print("eager", flush=True)
    for _ in range(2):  # alternating, so drift on the machine shows as a difference between rounds
        row("fp32", lambda: tf32_latency("fp32, algnet.fuse(model)", model))
        row("fp32 plain", lambda: tf32_latency("fp32, plain model", plain))
    row("difference", output_difference)
    row("tf32", lambda: tf32_latency("fp32 + TF32 matmul, fused", model, tf32=True))
    print("one CUDA graph", flush=True)
    row("graph", lambda: graph_latency("fp32, fused glue"))
    row("graph plain", lambda: graph_latency("fp32, plain model", source=plain))
    row("graph tf32", lambda: graph_latency("fp32 + TF32 matmul, fused glue", tf32=True))
    row("graph bf16", lambda: graph_latency("bf16 autocast, fused glue", bf16=True))
    for chunk in (256, 512):  # tokens per scan program: fewer chunks, less carry and state traffic
        row(f"graph chunk {chunk}", lambda c=chunk: graph_latency(f"fp32, fused glue, scan chunk {c}", chunk=c))
    row("graph profile", lambda: profile_ops(model, x, args.top))
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
