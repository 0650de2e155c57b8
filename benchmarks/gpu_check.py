#!/usr/bin/env python3
"""GPU check: correctness of every GPU scan backend, scan throughput, whole-network latency.

Run on a machine with an NVIDIA GPU, torch and triton (``pip install -e .[gpu]``)::

    python benchmarks/gpu_check.py            # everything, under 8 minutes
    python benchmarks/gpu_check.py --quick    # smaller shapes and fewer repeats, ~2 minutes
    python benchmarks/gpu_check.py --cpu-interpret   # debugging: the correctness section only, on
                                                     # CPU tensors in Triton's interpreter, tiny shapes

Sections, each with its own time budget, so a failure or a hang in one still lets the others report:

1. correctness: the triton (both forward kernels: ``seq``, the default, and ``assoc``), cuda
   (mamba_ssm, when installed) and chunked backends against ``selective_scan_ref`` computed in
   float64 on the GPU: y and the gradients of all eight inputs, at several shapes (odd lengths,
   several chunks, |A| up to 32, L = 1) and input dtypes, and the default forward on the
   channels-last views the Mamba layer passes (``triton-cl``).
2. scan speed: the Triton scan forward and forward+backward at B=1, E=64, N=32, L=65,536 and
   921,600, in state updates per second (B*E*N*L / time), beside a memory-bandwidth floor: the bytes
   the scan must move (u, delta, z, B, C in, y out; plus dy in and du, ddelta, dz, dB, dC out for
   backward) divided by the bandwidth of a large device-to-device copy measured in the same run.
   The sequential and associative forwards run on the same inputs, channels-last views (as the
   network passes them; ``[cl]``) and contiguous tensors (``[contig]``), and the sequential one
   at other tiles; each row is guarded, so a failing one is reported and the rest still run.
3. network: ``algnet`` and ``nafnet32`` on one 1280x720 image, eval and no_grad, with the default
   Triton forward: fp32 eager and replayed as one CUDA graph (``algnet.CUDAGraphModel``), and bf16
   autocast as a graph: median latency after warm-up and peak GPU memory; then, if time remains,
   algnet fp32 eager with the associative forward for comparison.

Each section runs in its own process with a hard timeout (a hung or faulting kernel cannot silence
the others); budgets: 120 + 110 + 150 s (quick: 45 + 45 + 70 s), plus start-up. Rows come in order
of importance, and a section out of time skips the rest.

Exit status: 0 all passed; 1 a correctness check failed or the correctness section crashed; 2 the
checks passed but a timing section crashed or ran out of time. ``--json PATH`` also writes results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import time
import traceback
from typing import NamedTuple

DTYPE_RTOL = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 3e-2}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Exit status: 0 pass, 1 correctness failure, 2 timing error.")
    parser.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats (~2 minutes)")
    parser.add_argument("--cpu-interpret", action="store_true",
                        help="debugging smoke run: correctness section only, CPU tensors, TRITON_INTERPRET=1, tiny shapes")
    parser.add_argument("--sections", default="correctness,scan,network",
                        help="comma-separated subset of: correctness, scan, network")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # run sections in this process
    return parser.parse_args(argv)


class SectionTimeout(Exception):
    pass


class Results:
    def __init__(self):
        self.checks = []  # (name, passed, detail)
        self.section_errors = {}  # section -> message
        self.data = {}

    def check(self, name, passed, detail):
        self.checks.append((name, passed, detail))
        print(f"  {'PASS' if passed else 'FAIL'}  {name}: {detail}", flush=True)


def run_section(name, fn, budget_s, results):
    """Runs one section under a wall-clock alarm; records (not raises) its failure."""
    print(f"\n=== {name} (budget {budget_s:.0f} s) ===", flush=True)
    start = time.time()

    def on_alarm(signum, frame):
        raise SectionTimeout(f"{name} ran out of its {budget_s:.0f} s budget")

    use_alarm = hasattr(signal, "SIGALRM")
    if use_alarm:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        fn(start + budget_s * 0.9)
    except SectionTimeout as err:
        results.section_errors[name] = str(err)
        print(f"  ERROR {err}", flush=True)
    except Exception as err:  # report and move on: the other sections still run
        results.section_errors[name] = f"{type(err).__name__}: {err}"
        traceback.print_exc()
        print(f"  ERROR {name}: {type(err).__name__}: {err}", flush=True)
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
        _free_memory()
    print(f"  ({name} took {time.time() - start:.1f} s)", flush=True)


def _free_memory():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# 1. correctness


def make_scan_inputs(shape, device, a_max, delta_scale, seed):
    """Float64 inputs whose values are exactly representable in bfloat16, so one float64
    reference is the ground truth for every input dtype."""
    import torch

    batch, channels, nstate, length = shape
    g = torch.Generator(device="cpu").manual_seed(seed)

    def exact(t):
        return t.to(torch.bfloat16).to(torch.float64).to(device)

    return {
        "u": exact(torch.randn(batch, channels, length, generator=g)),
        "delta": exact((torch.rand(batch, channels, length, generator=g) - 0.3) * delta_scale),
        "A": exact(-(0.05 + torch.rand(channels, nstate, generator=g) * a_max)),
        "B": exact(torch.randn(batch, nstate, length, generator=g)),
        "C": exact(torch.randn(batch, nstate, length, generator=g)),
        "D": exact(torch.randn(channels, generator=g)),
        "z": exact(torch.randn(batch, channels, length, generator=g)),
        "delta_bias": exact(torch.rand(channels, generator=g) * 0.5),
    }


NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# Tensors cast to the activation dtype; A, D and delta_bias stay float32 as in the Mamba layer.
ACTIVATIONS = ("u", "delta", "B", "C", "z")
TRITON_FWD_ENV = "ALGNET_TRITON_FWD"  # algnet.ops.scan_triton.FWD_ENV_VAR
# Checked like backends: (backend, the triton forward it forces, channels-last inputs).
VARIANTS = {"triton-assoc": ("triton", "assoc", False), "triton-cl": ("triton", None, True)}


def channels_last(tensors, rank=2):
    """(B, E, L) tensors as the Mamba layer hands them to the scan: views of channels-last memory.

    u, delta and z become transposed (B, L, E) tensors; B and C become slices of one (B, L,
    rank + 2N) projection after ``rank`` leading columns (dt's rank; 2 at ALGNet's first level),
    so their rows are neither contiguous nor 16-byte aligned. Same values, same autograd leaves.
    """
    import torch

    out = dict(tensors)
    for k in ("u", "delta", "z"):
        out[k] = tensors[k].transpose(1, 2).contiguous().transpose(1, 2)
    batch, nstate, length = tensors["B"].shape
    pad = tensors["B"].new_zeros(batch, length, rank)
    x_dbl = torch.cat([pad, tensors["B"].transpose(1, 2), tensors["C"].transpose(1, 2)], dim=2)  # (B, L, R + 2N)
    out["B"] = x_dbl[:, :, rank:rank + nstate].transpose(1, 2)
    out["C"] = x_dbl[:, :, rank + nstate:].transpose(1, 2)
    return out


class forced_env:
    """Sets (or, for None, leaves alone) one environment variable inside a with-block."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __enter__(self):
        self.saved = os.environ.get(self.name)
        if self.value is not None:
            os.environ[self.name] = self.value

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.saved


def reference_and_grads(inputs, dy):
    import torch

    from algnet.ops import selective_scan_ref

    args = [inputs[k].clone().requires_grad_() for k in NAMES]
    y = selective_scan_ref(*args, delta_softplus=True)
    return y.detach(), torch.autograd.grad(y, args, dy)


def relative_error(got, want) -> float:
    """max |got - want| over max |want|; over 1 where the reference is exactly zero.

    A reference that is exactly zero (dA at L = 1, where no earlier state exists) has no scale of
    its own; the inputs are O(1), so the absolute error is what is compared with the tolerance
    there. Without this, a kernel's last-bit rounding (1e-8, from a fused multiply-add) reads as a
    relative error of 1e22. NaN or infinity anywhere gives infinity.
    """
    diff = (got.double() - want.double()).abs().max().item()
    scale = want.double().abs().max().item()
    err = diff / scale if scale > 0 else diff
    return err if math.isfinite(err) else math.inf


def check_backend(backend, dtype_name, inputs, dy, y_ref, grads_ref, results, label):
    import torch

    from algnet.ops import selective_scan

    dtype = getattr(torch, dtype_name)
    side = torch.float64 if dtype == torch.float64 else torch.float32
    base, fwd, views = VARIANTS.get(backend, (backend, None, False))
    leaves = {k: inputs[k].to(dtype if k in ACTIVATIONS else side).requires_grad_() for k in NAMES}
    args = [(channels_last(leaves) if views else leaves)[k] for k in NAMES]
    with forced_env(TRITON_FWD_ENV, fwd):
        y = selective_scan(*args, delta_softplus=True, backend=base)
    grads = torch.autograd.grad(y, args, dy.to(y.dtype))
    rtol = DTYPE_RTOL[dtype_name]
    worst, worst_name = 0.0, ""
    for name, got, want in zip(("y",) + NAMES, (y, *grads), (y_ref, *grads_ref)):
        err = relative_error(got, want)
        if err > worst:
            worst, worst_name = err, name
    results.check(f"{backend:12s} {dtype_name:8s} {label}", worst <= rtol,
                  f"worst relative error {worst:.2e} ({'d' if worst_name != 'y' else ''}{worst_name}), tolerance {rtol:.0e}")


def correctness_section(args, device, results):
    import torch

    from algnet.ops import backend_status

    if args.cpu_interpret:
        shapes = [((1, 6, 4, 37), 4.0, 1.0), ((1, 2, 2, 150), 32.0, 6.0), ((2, 3, 2, 1), 2.0, 1.0)]
        plan = {"triton": ("float64", "float32")}
        first_only = {"triton-assoc": ("float32",), "triton-cl": ("float32",)}
    elif args.quick:
        shapes = [((2, 40, 16, 300), 4.0, 1.0), ((1, 16, 32, 300), 32.0, 6.0), ((3, 8, 4, 1), 2.0, 1.0)]
        # Other dtypes and variants only at the first shape: every dtype and shape class is a Triton compile.
        plan = {"triton": ("float32",), "cuda": ("float32",), "chunked": ("float32",)}
        first_only = {"triton": ("float64", "bfloat16"), "triton-assoc": ("float32",), "triton-cl": ("float32",)}
    else:
        shapes = [((2, 40, 16, 1000), 4.0, 1.0), ((1, 64, 32, 2049), 8.0, 1.0), ((1, 16, 32, 700), 32.0, 6.0),
                  ((3, 8, 4, 1), 2.0, 1.0)]
        plan = {"triton": ("float64", "float32", "bfloat16"), "triton-assoc": ("float64", "float32"),
                "triton-cl": ("float32", "bfloat16"), "cuda": ("float32", "bfloat16"),
                "chunked": ("float64", "float32")}
        first_only = {}

    def run(deadline):
        usable = {}
        for backend in list(plan) + [b for b in first_only if b not in plan]:
            ok, reason = backend_status(VARIANTS.get(backend, (backend,))[0], device)
            print(f"  backend {backend}: {'available' if ok else 'skipped: ' + reason}", flush=True)
            if ok:
                usable[backend] = plan.get(backend, ())
        if "triton" not in usable:
            results.check("triton backend available", False, backend_status("triton", device)[1])
        for i, (shape, a_max, delta_scale) in enumerate(shapes):
            if time.time() > deadline:
                print(f"  skipped shape {shape}: out of time", flush=True)
                results.section_errors.setdefault("correctness", "ran out of time before every shape was checked")
                continue
            label = f"B,E,N,L={shape} |A|<={a_max:g}"
            inputs = make_scan_inputs(shape, device, a_max, delta_scale, seed=i)
            dy = torch.randn(shape[0], shape[1], shape[3], generator=torch.Generator().manual_seed(100 + i),
                             dtype=torch.float64).to(device)
            y_ref, grads_ref = reference_and_grads(inputs, dy)
            for backend, dtypes in usable.items():
                for dtype_name in dtypes + (first_only.get(backend, ()) if i == 0 else ()):
                    try:
                        check_backend(backend, dtype_name, inputs, dy, y_ref, grads_ref, results, label)
                    except SectionTimeout:
                        raise
                    except Exception as err:
                        traceback.print_exc()
                        results.check(f"{backend:8s} {dtype_name:8s} {label}", False, f"raised {type(err).__name__}: {err}")
        if time.time() > deadline:
            print("  skipped the fused glue kernels: out of time", flush=True)
            results.section_errors.setdefault("correctness", "ran out of time before the glue kernels were checked")
            return
        try:
            check_glue(device, results, tiny=args.cpu_interpret)
        except SectionTimeout:
            raise
        except Exception as err:
            traceback.print_exc()
            results.check("glue kernels", False, f"raised {type(err).__name__}: {err}")

    return run


def check_glue(device, results, tiny=False):
    """The Triton glue kernels (algnet.ops.glue_triton) against PyTorch's ops in float64, and one
    ALGBlock fused by ``algnet.fuse`` against the plain block."""
    import torch
    import torch.nn.functional as F

    from algnet import fuse
    from algnet.models.algnet import ALGBlock
    from algnet.ops import glue_triton

    g = torch.Generator().manual_seed(11)
    b, c, h, w = (1, 12, 5, 7) if tiny else (2, 48, 37, 53)  # odd sizes: partial tiles
    x = (torch.randn(b, c, h, w, generator=g) * 2 + 1).to(device)
    weight, bias = torch.randn(c, generator=g).to(device), torch.randn(c, generator=g).to(device)
    tokens_ref = F.layer_norm(x.double().flatten(2).transpose(1, 2), (c,), weight.double(), bias.double(), 1e-6)
    errors = {
        "layernorm2d": relative_error(glue_triton.layernorm2d(x, weight, bias, 1e-6), tokens_ref.transpose(1, 2).reshape(b, c, h, w)),
        "layernorm_to_tokens": relative_error(glue_triton.layernorm_to_tokens(x, weight, bias, 1e-6), tokens_ref),
    }
    tokens, local = torch.randn(b, h * w, c, generator=g).to(device), torch.randn(b, c, h, w, generator=g).to(device)
    want = x.double() + weight.double().view(1, c, 1, 1) * tokens.double().transpose(1, 2).reshape(b, c, h, w) \
        + bias.double().view(1, c, 1, 1) * local.double()
    errors["aggregate_residual"] = relative_error(glue_triton.aggregate_residual(x, tokens, local, weight, bias), want)
    e, length = (6, 19) if tiny else (96, 1001)
    xz = torch.randn(2, length, 2 * e, generator=g).to(device)
    taps, cbias = torch.randn(e, 4, generator=g).to(device), torch.randn(e, generator=g).to(device)
    conv = F.conv1d(xz[..., :e].double().transpose(1, 2), taps.double().unsqueeze(1), cbias.double(), padding=3, groups=e)[..., :length]
    errors["causal_conv1d_silu"] = relative_error(glue_triton.causal_conv1d_silu(xz[..., :e], taps, cbias), F.silu(conv).transpose(1, 2))
    y2 = torch.randn(b, 2 * c, h, w, generator=g).to(device)
    taps2, bias2 = torch.randn(2 * c, 1, 3, 3, generator=g).to(device), torch.randn(2 * c, generator=g).to(device)
    conv2 = F.conv2d(y2.double(), taps2.double(), bias2.double(), padding=1, groups=2 * c)
    errors["dwconv3x3_gate"] = relative_error(glue_triton.dwconv3x3_gate(y2, taps2, bias2), conv2[:, :c] * conv2[:, c:])
    pre = torch.randn(2 * c, generator=g).to(device)
    conv2 = F.conv2d(y2.double() + pre.double().view(1, -1, 1, 1), taps2.double(), bias2.double(), padding=1, groups=2 * c)
    errors["dwconv3x3_gate pre_bias"] = relative_error(glue_triton.dwconv3x3_gate(y2, taps2, bias2, pre_bias=pre),
                                                       conv2[:, :c] * conv2[:, c:])
    yb = y2.double() + bias2.double().view(1, -1, 1, 1)
    errors["gate"] = relative_error(glue_triton.gate(y2, bias2), yb[:, :c] * yb[:, c:])
    want = x.double() + local.double() + bias.double().view(1, c, 1, 1)
    errors["add_bias_residual_"] = relative_error(glue_triton.add_bias_residual_(x.clone(), local, bias), want)
    for name, err in errors.items():
        results.check(f"glue {name:24s} float32", err <= 1e-5, f"worst relative error {err:.2e}, tolerance 1e-05")
    if torch.device(device).type != "cuda":  # on CPU tensors fuse's "auto" routes the glue to numba, not these kernels
        return

    torch.manual_seed(0)
    block = ALGBlock(8 if tiny else 32, "fa", d_state=4 if tiny else 32).to(device).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
        xb = torch.randn(1, block.norm1.weight.numel(), 6 if tiny else 40, 9 if tiny else 56, device=device)
        # cuDNN's TF32 convolutions (PyTorch's default) round their inputs to 10 mantissa bits, which
        # turns last-bit differences of the glue into ~1e-4 ones: compare in full float32.
        saved, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        try:
            fused = fuse(block)(xb)
            plain = block(xb)
        finally:
            torch.backends.cudnn.allow_tf32 = saved
    err = relative_error(fused, plain)
    results.check("glue ALGBlock fused vs PyTorch float32", err <= 1e-5, f"worst relative error {err:.2e}, tolerance 1e-05")


# ---------------------------------------------------------------------------------------------
# 2. scan speed


def cuda_time(fn, warmup, reps, deadline):
    """Median seconds of ``fn`` over CUDA events, after warm-up; fewer reps if time runs short."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
        if time.time() > deadline:
            break
    return statistics.median(times)


def copy_bandwidth(device):
    """Bytes per second of a 1 GiB device-to-device copy (read + write counted)."""
    import torch

    src = torch.empty(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = cuda_time(lambda: dst.copy_(src), warmup=3, reps=10, deadline=math.inf)
    del src, dst
    return 2 * 2**30 / t


class ScanRow(NamedTuple):
    """One timing row of the scan section."""

    backend: str  # "triton", another backend name, or "carry" (the Triton carry kernel alone)
    kwargs: dict  # keyword arguments of scan_triton.selective_scan (triton rows)
    layout: str  # "cl": channels-last views, as the Mamba layer passes them; "contig": (B, E, L)
    backward: bool  # also time forward+backward


# Sequential-forward tiles timed besides the default (SEQ_BLOCK_E channels, one warp, CHUNK
# tokens), forward only: (seq_block_e, seq_warps, chunk_size).
SEQ_TILES_QUICK = ((64, 1, None), (32, 1, 64))
SEQ_TILES_FULL = SEQ_TILES_QUICK + ((16, 1, None), (32, 1, 256), (64, 2, None))
ASSOC_TILES_FULL = ((4, 256), (16, 64), (8, 256), (16, 128))  # (block_e, chunk_size), forward+backward


def scan_plan(quick, other_backends, first_length):
    """The rows to time at one length, most important first (rows past the deadline are skipped).

    Both Triton forwards run on the same inputs side by side: as the network calls them
    (channels-last views, forward+backward) and on contiguous tensors (forward). Other tiles and
    other backends are timed at the first (shorter) length only; at the second, the carry kernel
    alone shows what the walk over chunks costs (K = L / CHUNK chunks).
    """
    seq, assoc = dict(fwd="seq"), dict(fwd="assoc")
    rows = [ScanRow("triton", seq, "cl", True), ScanRow("triton", assoc, "cl", first_length),
            ScanRow("triton", seq, "contig", False), ScanRow("triton", assoc, "contig", False)]
    if not first_length:
        return rows + [ScanRow("carry", {}, "contig", False)]
    rows += [ScanRow("triton", dict(seq, seq_block_e=b, seq_warps=w, chunk_size=c), "cl", False)
             for b, w, c in (SEQ_TILES_QUICK if quick else SEQ_TILES_FULL)]
    if not quick:
        rows += [ScanRow("triton", dict(assoc, block_e=b, chunk_size=c), "contig", True) for b, c in ASSOC_TILES_FULL]
    return rows + [ScanRow(b, {}, "contig", True) for b in other_backends]


def row_name(row, st):
    """A row's label, with the tile spelled out (defaults from the scan_triton module ``st``)."""
    if row.backend != "triton":
        return f"{row.backend} [{row.layout}]"
    kw = row.kwargs
    chunk = kw.get("chunk_size") or st.CHUNK
    if kw["fwd"] == "seq":
        block = kw.get("seq_block_e") or st.SEQ_BLOCK_E
        tile = f"{block}x{chunk} w{kw.get('seq_warps') or max(1, block // 32)}"
    else:
        tile = f"{kw.get('block_e') or st.BLOCK_E}x{chunk}"
    return f"triton {kw['fwd']} {tile} [{row.layout}]"


SCAN_SHAPE = (1, 64, 32)  # B, E, N: ALGNet's first level (w = 32) at batch 1
SCAN_LENGTHS = (65_536, 921_600)  # 256x256 and 1280x720 tokens


def scan_section(args, device, results):
    import torch

    from algnet.ops import backend_status, scan_triton

    lengths = SCAN_LENGTHS
    reps = 3 if args.quick else 10
    batch, channels, nstate = SCAN_SHAPE

    def inputs(length, requires_grad, layout):
        g = torch.Generator(device=device).manual_seed(0)
        t = {
            "u": torch.randn(batch, channels, length, device=device, generator=g),
            "delta": torch.randn(batch, channels, length, device=device, generator=g) * 0.5 - 2,
            "A": -torch.arange(1, nstate + 1, device=device, dtype=torch.float32).repeat(channels, 1),
            "B": torch.randn(batch, nstate, length, device=device, generator=g),
            "C": torch.randn(batch, nstate, length, device=device, generator=g),
            "D": torch.ones(channels, device=device),
            "z": torch.randn(batch, channels, length, device=device, generator=g),
            "delta_bias": torch.full((channels,), -3.0, device=device),
        }
        t = {k: v.requires_grad_(requires_grad) for k, v in t.items()}
        if layout == "cl":
            t = channels_last(t)  # made once, outside the timed calls
        return [t[k] for k in NAMES]

    def run(deadline):
        bandwidth = copy_bandwidth(device)
        print(f"  device-to-device copy bandwidth: {bandwidth / 1e9:.0f} GB/s", flush=True)
        results.data["copy_bandwidth_GBps"] = bandwidth / 1e9
        rows = results.data["scan"] = []  # filled as it goes, so a timeout keeps what was measured
        others = [b for b in ("cuda", "chunked") if backend_status(b, device)[0]]
        for length in lengths:
            updates = batch * channels * nstate * length
            fwd_bytes = 4 * (4 * batch * channels * length + 2 * batch * nstate * length)  # u, delta, z, y; B, C
            bwd_bytes = 4 * (7 * batch * channels * length + 4 * batch * nstate * length)  # + dy, du, ddelta, dz; dB, dC
            for plan_row in scan_plan(args.quick, others, length == lengths[0]):
                name = row_name(plan_row, scan_triton)
                if time.time() > deadline:
                    print(f"  skipped {name} L={length}: out of time", flush=True)
                    continue
                try:
                    if plan_row.backend == "carry":
                        row = _time_carry(length, reps, deadline)
                    else:
                        row = _time_scan(plan_row, inputs, length, reps, deadline)
                except SectionTimeout:
                    raise
                except Exception as err:
                    traceback.print_exc()
                    print(f"  {name} L={length}: ERROR {type(err).__name__}: {err}", flush=True)
                    results.section_errors.setdefault("scan", f"{name} L={length}: {type(err).__name__}: {err}")
                    _free_memory()
                    continue
                row.update(name=name, L=length)
                if plan_row.backend == "carry":
                    rows.append(row)
                    print(f"  {name:32s} L={length:>7d}  {row['fwd_s'] * 1e3:8.3f} ms "
                          f"({row['chunks']} chunks of {scan_triton.CHUNK})", flush=True)
                    continue
                row.update(fwd_updates_per_s=updates / row["fwd_s"], fwd_floor_s=fwd_bytes / bandwidth,
                           fwdbwd_floor_s=(fwd_bytes + bwd_bytes) / bandwidth)
                if row.get("fwdbwd_s"):
                    row["fwdbwd_updates_per_s"] = updates / row["fwdbwd_s"]
                rows.append(row)
                print(f"  {name:32s} L={length:>7d}  fwd {row['fwd_s'] * 1e3:8.3f} ms ({row['fwd_updates_per_s']:.2e} upd/s, "
                      f"floor {row['fwd_floor_s'] * 1e3:.2f} ms)  fwd+bwd "
                      + (f"{row['fwdbwd_s'] * 1e3:8.2f} ms ({row['fwdbwd_updates_per_s']:.2e} upd/s, floor {row['fwdbwd_floor_s'] * 1e3:.2f} ms)"
                         if row.get("fwdbwd_s") else "-"), flush=True)
                _free_memory()

    def _time_scan(plan_row, inputs, length, reps, deadline):
        from algnet.ops import selective_scan

        if plan_row.backend == "triton":
            def scan(*a):
                return scan_triton.selective_scan(*a, True, **plan_row.kwargs)
        else:
            def scan(*a):
                return selective_scan(*a, delta_softplus=True, backend=plan_row.backend)
        row = {}
        with torch.no_grad():
            a = inputs(length, False, plan_row.layout)
            row["fwd_s"] = cuda_time(lambda: scan(*a), warmup=2, reps=reps, deadline=deadline)
            del a
        if not plan_row.backward:
            return row
        a = inputs(length, True, plan_row.layout)
        dy = torch.randn(batch, length, channels, device=device).transpose(1, 2)  # as out_proj's backward gives it
        if plan_row.layout == "contig":
            dy = dy.contiguous()

        def fwd_bwd():
            torch.autograd.grad(scan(*a), a, dy)

        torch.cuda.reset_peak_memory_stats()
        row["fwdbwd_s"] = cuda_time(fwd_bwd, warmup=1, reps=reps, deadline=deadline)
        row["fwdbwd_peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        return row

    def _time_carry(length, reps, deadline):
        # The forward's carry launch (scan_triton._forward), alone, on states of the right shape.
        import triton.language as tl

        k = scan_triton._kernels(False)
        n_chunks = -(-length // scan_triton.CHUNK)
        A = -torch.arange(1, nstate + 1, device=device, dtype=torch.float32).repeat(channels, 1)
        dtsum = torch.rand(batch, n_chunks, channels, device=device)
        hend = torch.randn(batch, n_chunks, channels, nstate, device=device)
        hin = torch.empty_like(hend)
        block = scan_triton.BLOCK_E

        def carry():
            k.carry[(-(-channels // block), batch)](
                A, dtsum, hend, hin, channels, n_chunks, nstate, REVERSE=False, GROUP=scan_triton.CARRY_GROUP,
                BLOCK_E=block, NP=scan_triton._next_pow2(nstate), ACC=tl.float32, num_warps=4)

        return dict(fwd_s=cuda_time(carry, warmup=2, reps=reps, deadline=deadline), chunks=n_chunks)

    return run


# ---------------------------------------------------------------------------------------------
# 3. network


NETWORK_SIZE = (720, 1280)
# (model, precision, Triton forward kernel or None where the model has no scan, optional row, CUDA graph)
NETWORK_PLAN = (("algnet", "fp32", "seq", False, False), ("algnet", "fp32", "seq", False, True),
                ("algnet", "bf16", "seq", False, True), ("nafnet32", "fp32", None, False, False),
                ("nafnet32", "fp32", None, False, True), ("nafnet32", "bf16", None, False, True),
                ("algnet", "fp32", "assoc", True, False))


def network_section(args, device, results):
    import torch

    import algnet
    from algnet.cuda_graph import CUDAGraphModel
    from algnet.ops import resolve_backend

    reps = 3 if args.quick else 7

    def run(deadline):
        scan_backend = resolve_backend(None, device)
        print(f"  scan backend (auto): {scan_backend}; cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
              f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}", flush=True)
        x = torch.rand(1, 3, *NETWORK_SIZE, device=device)
        rows = []
        results.data["network"] = dict(scan_backend=scan_backend, rows=rows)
        model, model_name = None, None
        for name, precision, fwd, optional, graphed in NETWORK_PLAN:
            if scan_backend != "triton":
                if optional:
                    continue  # the comparison of Triton forwards means nothing on another backend
                fwd = None
            label = f"{name} {precision}" + (f" triton fwd={fwd}" if fwd else "") + (" graph" if graphed else "")
            if time.time() > deadline:
                print(f"  skipped {label}: out of time", flush=True)
                if not optional:
                    results.section_errors.setdefault("network", "ran out of time before every model was timed")
                continue
            try:
                if model_name != name:
                    model = model_name = None
                    _free_memory()
                    model = algnet.create_model(name).to(device).eval()
                    model_name = name
                params = sum(p.numel() for p in model.parameters()) / 1e6
                net = CUDAGraphModel(model, capture_after=0) if graphed else model  # captured at its first call below
                with forced_env(TRITON_FWD_ENV, fwd), torch.no_grad(), \
                        torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    torch.cuda.reset_peak_memory_stats()
                    out = net(x)[-1]
                    finite = bool(torch.isfinite(out).all())
                    del out
                    seconds = cuda_time(lambda: net(x), warmup=1, reps=reps, deadline=deadline)
                    del net
                peak = torch.cuda.max_memory_allocated() / 2**30
            except SectionTimeout:
                raise
            except Exception as err:
                traceback.print_exc()
                results.section_errors.setdefault("network", f"{label}: {type(err).__name__}: {err}")
                print(f"  {label}: ERROR {type(err).__name__}: {err}", flush=True)
                _free_memory()
                continue
            rows.append(dict(model=name, precision=precision, triton_fwd=fwd, cuda_graph=graphed, params_M=params,
                             seconds=seconds, peak_GiB=peak, finite=finite))
            print(f"  {label:34s}: {seconds * 1e3:8.1f} ms  peak {peak:5.2f} GiB  "
                  f"({params:.1f} M params, output finite: {finite})", flush=True)
            _free_memory()
        del model
        _free_memory()
        print("\n  model      precision  triton fwd  CUDA graph  latency (ms)  peak GPU memory (GiB)   [1280x720, batch 1, median]")
        for r in rows:
            print(f"  {r['model']:9s}  {r['precision']:9s}  {r['triton_fwd'] or '-':10s}  {'yes' if r['cuda_graph'] else 'no':10s}"
                  f"  {r['seconds'] * 1e3:12.1f}  {r['peak_GiB']:21.2f}")

    return run


# ---------------------------------------------------------------------------------------------


BUDGETS = {"correctness": 120, "scan": 110, "network": 150}
QUICK_BUDGETS = {"correctness": 45, "scan": 45, "network": 70}
STARTUP_S = 30  # allowance for a child's imports and CUDA start-up, on top of its section budget
SECTIONS = ("correctness", "scan", "network")


def main(argv=None) -> int:
    args = parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        print(f"gpu_check: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
        return 2
    if args.cpu_interpret:
        # Triton picks its interpreter when it is first imported, so this must precede every import.
        os.environ["TRITON_INTERPRET"] = "1"
        args.child = True
    if not args.child:
        return run_children(args, wanted)
    return run_here(args, wanted)


def run_children(args, wanted) -> int:
    """Runs each section in its own process under a hard timeout.

    A hung kernel cannot be interrupted from Python, and a faulting one poisons the CUDA context for
    the rest of the process; a child per section keeps either from silencing the other sections.
    """
    import subprocess
    import tempfile

    import torch

    results = Results()
    wall = time.time()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; use --cpu-interpret for a CPU smoke run", flush=True)
        results.checks.append(("CUDA device visible", False, "torch.cuda.is_available() is False"))
        return summarise(args, results, wall)
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    for name in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            out_json = os.path.join(tmp, "section.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--sections", name, "--json", out_json]
            cmd += ["--quick"] if args.quick else []
            try:
                proc = subprocess.run(cmd, timeout=budgets[name] + STARTUP_S)
                if os.path.exists(out_json):
                    with open(out_json) as f:
                        child = json.load(f)
                    results.checks += [tuple(c) for c in child["checks"]]
                    results.section_errors.update(child["section_errors"])
                    results.data.update({k: v for k, v in child.items() if k not in ("checks", "section_errors", "status")})
                else:
                    results.section_errors[name] = f"the section's process exited with status {proc.returncode} without results"
            except subprocess.TimeoutExpired:
                results.section_errors[name] = f"killed after {budgets[name] + STARTUP_S} s (hung?)"
                print(f"  ERROR {name}: killed after {budgets[name] + STARTUP_S} s", flush=True)
    return summarise(args, results, wall)


def run_here(args, wanted) -> int:
    try:
        import algnet  # noqa: F401
    except ImportError:  # run from a checkout that is not installed
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    import torch

    import algnet

    results = Results()
    wall = time.time()
    if args.cpu_interpret:
        device = torch.device("cpu")
        print("gpu_check --cpu-interpret: SMOKE RUN of the correctness section on CPU tensors in Triton's "
              "interpreter (tiny shapes, no timings)", flush=True)
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device visible to torch; use --cpu-interpret for a CPU smoke run", flush=True)
            results.section_errors["setup"] = "no CUDA device"
            results.checks.append(("CUDA device visible", False, "torch.cuda.is_available() is False"))
            return summarise(args, results, wall)
        device = torch.device("cuda")
        props = torch.cuda.get_device_properties(device)
        print(f"[{','.join(wanted)}] on {props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}", flush=True)
    try:
        import triton

        print(f"triton {triton.__version__}; algnet from {os.path.dirname(algnet.__file__)}", flush=True)
    except ImportError:
        print(f"triton: not installed; algnet from {os.path.dirname(algnet.__file__)}", flush=True)

    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    sections = {"correctness": correctness_section, "scan": scan_section, "network": network_section}
    for name in wanted:
        if args.cpu_interpret and name != "correctness":
            print(f"\n=== {name}: skipped (--cpu-interpret runs the correctness section only) ===", flush=True)
            continue
        run_section(name, sections[name](args, device, results), budgets[name] if not args.cpu_interpret else 300, results)
    return summarise(args, results, wall)


def summarise(args, results, wall) -> int:
    """Prints the verdict (and writes --json); returns the exit status."""
    failed = [c for c in results.checks if not c[1]]
    correctness_broken = bool(failed) or "correctness" in results.section_errors or "setup" in results.section_errors
    status = 1 if correctness_broken else (2 if results.section_errors else 0)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(checks=results.checks, section_errors=results.section_errors, status=status, **results.data),
                      f, indent=2)
    if args.child and not args.cpu_interpret:
        return status  # the parent prints the summary
    print(f"\n=== summary ({time.time() - wall:.0f} s) ===")
    print(f"correctness: {len(results.checks) - len(failed)}/{len(results.checks)} checks passed")
    for name, _, detail in failed:
        print(f"  FAILED {name}: {detail}")
    for name, message in results.section_errors.items():
        print(f"  section {name}: {message}")
    print("RESULT: " + {0: "PASS", 1: "FAIL (correctness)", 2: "PASS with section errors"}[status], flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
