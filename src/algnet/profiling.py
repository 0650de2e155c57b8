"""Parameters, multiply-accumulates (MACs), latency and peak memory of restoration models.

Two MAC counts, because the papers' numbers hide most of the Mamba layers:

``paper``
    What ptflops (module hooks, its classic mode) and thop report, the convention of the "FLOPs"
    columns in this field: forward hooks on ``nn.Conv1d/2d/3d`` and transposed convolutions
    (``prod(kernel) * C_in/groups * C_out`` per output position, plus one per output element
    for the bias), ``nn.Linear`` (``numel(input) * out_features``, plus ``out_features`` once for
    the bias, as ptflops does), ``nn.BatchNorm/InstanceNorm/GroupNorm/LayerNorm`` (numel of the
    input, twice if affine), activations ``ReLU/PReLU/ELU/LeakyReLU/ReLU6/GELU`` (numel),
    pooling modules (numel of the input) and ``nn.Upsample`` (numel of the output). Functional
    calls and tensor arithmetic (custom LayerNorm2d, SimpleGate, F.interpolate, the global mean of
    channel attention, ``*`` and ``+``) are invisible to hooks and count 0. A Mamba layer counts 0
    as a whole: with mamba_ssm's fused path (``mamba_inner_fn``) none of its projections, its
    convolution or its scan is a module call, which is why the paper's 17 G "counts almost none
    of the Mamba layers".

``full``
    ``paper`` plus every Mamba layer computed in full, per token (L tokens, model width D,
    E = expand * D, N = d_state, R = dt_rank, K = d_conv):
    in_proj ``D * 2E``, causal depthwise conv1d ``E * K`` (+ ``E`` bias), x_proj ``E * (R + 2N)``,
    dt_proj ``R * E`` (+ ``E`` bias), out_proj ``E * D``, and the selective scan
    ``3 * E * N + 3 * E``: per state element one multiply ``(dt u) * B_n``, one multiply-add
    ``a * h + ...`` and one multiply-add ``y += C_n * h``; per channel ``dt * u``, ``D * u`` and
    the ``silu(z)`` gate. Transcendentals (exp of ``dt A``, softplus, SiLU) are not MACs and are
    not counted.

MACs are counted with fake tensors (shapes, no data; the ``meta`` device would be simpler but
``torch.autocast`` refuses it) and each Mamba layer replaced by a shape-only stand-in, so no scan
runs and no memory is used: counting ALGNet-B at 256x256 takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import types
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from .errors import AlgnetError

PROFILE_MODELS = ("algnet", "algnet_b", "algnet_nafnet_layout", "nafnet32")
# Paper Table 6 (1280x720 runtime on its GPU, MACs at 256x256); only ALGNet is given there.
PAPER_TABLE6 = {"algnet": {"macs_g": 17.0, "latency_s": 0.237}}

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)
_ACTIVATIONS = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.GELU)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveMaxPool1d,
          nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def module_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one module call under the ptflops/thop hook convention (0 for unknown modules)."""
    if isinstance(module, _CONVS):
        per_position = math.prod(module.kernel_size) * module.in_channels * (module.out_channels // module.groups)
        positions = out.shape[0] * math.prod(out.shape[2:])
        bias = module.out_channels * positions if module.bias is not None else 0
        return per_position * positions + bias
    if isinstance(module, nn.Linear):
        return inp.numel() * out.shape[-1] + (out.shape[-1] if module.bias is not None else 0)
    if isinstance(module, _NORMS):
        affine = getattr(module, "affine", False) or getattr(module, "elementwise_affine", False)
        return inp.numel() * (2 if affine else 1)
    if isinstance(module, _ACTIVATIONS):
        return out.numel()
    if isinstance(module, _POOLS):
        return inp.numel()
    if isinstance(module, nn.Upsample):
        return out.numel()
    return 0


def is_mamba(module: nn.Module) -> bool:
    """Mamba-1 layers by their parameter names (ours, mamba_ssm's, or any with the same layout)."""
    return all(hasattr(module, a) for a in ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj", "A_log"))


def mamba_macs(module: nn.Module, batch: int, length: int) -> dict[str, int]:
    """Full MACs of one Mamba-1 layer on (batch, length, d_model) tokens, by part (see module doc)."""
    d = module.in_proj.in_features
    e = module.in_proj.out_features // 2
    n = module.A_log.shape[1]
    r = module.dt_proj.in_features
    k = module.conv1d.kernel_size[0]
    tokens = batch * length
    bias = lambda layer, width: width if getattr(layer, "bias", None) is not None else 0  # noqa: E731
    return {
        "in_proj": tokens * (d * 2 * e + bias(module.in_proj, 2 * e)),
        "conv1d": tokens * (e * k + bias(module.conv1d, e)),
        "x_proj": tokens * (e * (r + 2 * n) + bias(module.x_proj, r + 2 * n)),
        "dt_proj": tokens * (r * e + e),
        "scan": tokens * (3 * e * n + 3 * e),
        "out_proj": tokens * (e * d + bias(module.out_proj, d)),
    }


@dataclass
class MacCount:
    """MACs of one forward pass; ``parts`` splits ``full - paper`` into the Mamba layers' pieces."""

    paper: int
    full: int
    parts: dict[str, int] = field(default_factory=dict)


def fake_mode():
    """Context in which new tensors are fake: shapes and dtypes, no storage, no compute."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # private, but stable since torch 2.1

    return FakeTensorMode()


@contextlib.contextmanager
def _mamba_stand_ins(model: nn.Module, tally: dict[str, int]):
    """Temporarily replaces each Mamba layer's forward by a shape-only function adding its MACs."""

    def stand_in(self, hidden_states, *args, **kwargs):
        for part, macs in mamba_macs(self, hidden_states.shape[0], hidden_states.shape[1]).items():
            tally[part] = tally.get(part, 0) + macs
        return torch.zeros_like(hidden_states, dtype=torch.float32)

    layers = [m for m in model.modules() if is_mamba(m)]
    for m in layers:
        m.forward = types.MethodType(stand_in, m)
    try:
        yield layers
    finally:
        for m in layers:
            del m.forward


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 256, 256)) -> MacCount:
    """Counts MACs of ``model(torch.zeros(input_shape))`` in both conventions (module docstring).

    Runs on the device of the model's parameters; build and count the model inside
    :func:`fake_mode` to count without memory or compute.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tally: dict[str, int] = {}
    hooked = {"paper": 0}
    inside_mamba = {id(sub) for m in model.modules() if is_mamba(m) for sub in m.modules()}

    def hook(module, inputs, output):
        if id(module) not in inside_mamba and inputs and isinstance(output, torch.Tensor):
            hooked["paper"] += module_macs(module, inputs[0], output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with _mamba_stand_ins(model, tally):
            model(torch.zeros(input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return MacCount(paper=hooked["paper"], full=hooked["paper"] + sum(tally.values()), parts=tally)


# ---------------------------------------------------------------------------- latency and memory


@dataclass
class ProfileRow:
    """One model's numbers; latency/memory are None when not measured."""

    model: str
    params: int
    macs_paper: int
    macs_full: int
    mac_size: tuple[int, int]
    latency_s: float | None = None
    graph_latency_s: float | None = None  # CUDA: the forward replayed as one CUDA graph
    peak_memory_bytes: int | None = None
    weights_bytes: int | None = None
    size: tuple[int, int] | None = None
    device: str | None = None
    scan_backend: str | None = None
    threads: int | None = None
    parts: dict[str, int] = field(default_factory=dict)


def profile_macs(name: str, mac_size: tuple[int, int] = (256, 256), **overrides) -> ProfileRow:
    """Params and both MAC counts of a registered model, built with fake (shape-only) tensors."""
    from .models import create_model

    with fake_mode():
        model = create_model(name, **overrides).eval()
        macs = count_macs(model, (1, 3, *mac_size))
    return ProfileRow(model=name, params=count_params(model), macs_paper=macs.paper, macs_full=macs.full, mac_size=tuple(mac_size), parts=macs.parts)


def _rss_bytes(field_name: str) -> int | None:
    """VmRSS / VmHWM of this process from /proc (Linux), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so warm-up and model building do not count.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@torch.no_grad()
def measure(name: str, size: tuple[int, int], device: str, repeats: int = 5, overrides: dict | None = None, threads: int | None = None,
            fuse: bool = True, progress=None) -> dict:
    """Median latency and peak extra memory of one forward pass, in this process, of the model
    converted by :func:`algnet.fuse` (``fuse``) or as built.

    Peak memory is what inference adds on top of the loaded model: on CUDA
    ``max_memory_allocated`` minus the allocation before the first timed pass (after a warm-up
    at full size); on CPU the peak resident set (VmHWM) minus the resident set before the first
    full-size pass. CPU warm-up (numba compilation) runs on a 32x32 input, because the C allocator
    keeps freed pages resident and a full-size warm-up would hide the peak; the first full-size
    pass is untimed. ``progress(text)``, when given, hears each pass as it starts and ends.
    """
    import time

    say = progress or (lambda text: None)

    from .models import create_model
    from .ops import resolve_backend

    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, **(overrides or {})).to(dev).eval()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if fuse:
        from .deploy import fuse as fuse_model

        model = fuse_model(model)
    x = torch.rand(1, 3, *size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        model(x)  # cuDNN autotuning, allocator warm-up
        sync()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        say(f"{name}: warm-up at 32x32 (compiles the CPU kernels the first time on a machine)")
        model(torch.rand(1, 3, 32, 32))  # JIT compilation of the scan kernels
        base = _rss_bytes("VmRSS")
        resettable = _reset_peak_rss()
        say(f"{name}: first pass at {size[1]}x{size[0]} (untimed; peak memory)")
        model(x)
    times = []
    for i in range(max(1, repeats)):
        sync()
        t0 = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - t0)
        say(f"{name}: run {i + 1}/{max(1, repeats)}: {times[-1]:.3f} s")
    graph_s = None
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
        graph_s = _graph_latency(model, x, repeats)
    else:
        hwm = _rss_bytes("VmHWM") if resettable else None
        peak = hwm - base if hwm is not None and base is not None else None
    times.sort()
    return {
        "latency_s": times[len(times) // 2], "graph_latency_s": graph_s, "peak_memory_bytes": peak, "device": str(dev),
        "weights_bytes": weights, "fused": fuse,
        "scan_backend": resolve_backend(None, dev), "size": list(size), "threads": torch.get_num_threads(),
    }


def _graph_latency(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median time of the forward replayed as one CUDA graph (what ``algnet deblur`` runs on CUDA):
    eager PyTorch on a GPU is bound by the host launching each kernel."""
    import time

    from .cuda_graph import CUDAGraphModel

    net = CUDAGraphModel(model, capture_after=0)
    net(x)  # warm-up and capture
    times = []
    for _ in range(max(1, repeats)):
        torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        net(x)
        torch.cuda.synchronize(x.device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


_PROGRESS = "algnet-progress: "  # marks the measuring process's progress lines on its stderr


def measure_in_subprocess(name: str, size: tuple[int, int], device: str, repeats: int = 5, timeout: float | None = None,
                          overrides: dict | None = None, threads: int | None = None, fuse: bool = True, progress=None) -> dict:
    """Runs :func:`measure` in a fresh interpreter, so one model's memory does not hide another's;
    its progress lines (and the kernel-compile notice) reach ``progress`` as they are printed."""
    import collections
    import tempfile
    import threading

    from .ops.scan_cpu import _COMPILE_NOTICE

    args = json.dumps({"name": name, "size": list(size), "device": device, "repeats": repeats, "overrides": overrides or {}, "threads": threads,
                       "fuse": fuse})
    code = ("import json, sys; from algnet.profiling import measure, _PROGRESS; a = json.loads(sys.argv[1]); "
            "say = lambda t: print(_PROGRESS + t, file=sys.stderr, flush=True); "
            "print(json.dumps(measure(a['name'], tuple(a['size']), a['device'], a['repeats'], a['overrides'], a['threads'], a['fuse'], say)))")
    tail: collections.deque = collections.deque(maxlen=20)
    expired = []
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, args], stdout=out, stderr=subprocess.PIPE, text=True)
        timer = threading.Timer(timeout, lambda: (expired.append(True), proc.kill())) if timeout else None
        if timer:
            timer.start()
        try:
            for line in proc.stderr:
                if line.startswith(_PROGRESS) or line.startswith(_COMPILE_NOTICE[:30]):
                    if progress:
                        progress(line.removeprefix(_PROGRESS).rstrip())
                else:
                    tail.append(line.rstrip())
            proc.wait()
        finally:
            if timer:
                timer.cancel()
        out.seek(0)
        stdout = out.read()
    if expired:
        raise AlgnetError(f"{name}: timing at {size[1]}x{size[0]} on {device} took longer than {timeout:.0f} s; use a smaller --size or --no-latency")
    if proc.returncode != 0:
        last = ([t for t in tail if t.strip()] or ["(no output)"])[-1]
        raise AlgnetError(f"{name}: measuring on {device} failed: {last[:300]}")
    return json.loads(stdout.strip().splitlines()[-1])


def profile(models=PROFILE_MODELS, size=(720, 1280), mac_size=(256, 256), device: str = "cpu", repeats: int = 5,
            latency: bool = True, timeout: float | None = None, threads: int | None = None, progress=None,
            fuse: bool = True) -> list[ProfileRow]:
    """Profiles each model: params and MACs always, latency and memory when ``latency``;
    ``progress(text)`` hears each step (one line each) as it starts. Latency is of the
    :func:`algnet.fuse` copy unless not ``fuse``."""
    say = progress or (lambda text: None)
    rows = []
    for i, name in enumerate(models):
        say(f"[{i + 1}/{len(models)}] {name}: params and MACs at {mac_size[1]}x{mac_size[0]}")
        row = profile_macs(name, mac_size)
        if latency:
            m = measure_in_subprocess(name, size, device, repeats, timeout, threads=threads, fuse=fuse, progress=say)
            row.latency_s, row.peak_memory_bytes, row.weights_bytes = m["latency_s"], m["peak_memory_bytes"], m["weights_bytes"]
            row.graph_latency_s = m.get("graph_latency_s")
            row.size, row.device, row.scan_backend, row.threads = tuple(size), m["device"], m["scan_backend"], m["threads"]
            say(f"[{i + 1}/{len(models)}] {name}: median {row.latency_s:.3f} s")
        rows.append(row)
    return rows


def rows_to_json(rows: list[ProfileRow]) -> str:
    from .sysinfo import cpu_info

    return json.dumps({"models": [asdict(r) for r in rows], "paper_table6": PAPER_TABLE6, "cpu": cpu_info(),
                       "conventions": {"macs_paper": "ptflops/thop module hooks; Mamba layers invisible (fused kernel)",
                                       "macs_full": "macs_paper + Mamba projections, conv1d and 3EN+3E scan MACs per token"}}, indent=2)


def format_table(rows: list[ProfileRow]) -> str:
    """A fixed-width table, one model per line."""
    mac = rows[0].mac_size if rows else (256, 256)
    timed = next((r for r in rows if r.latency_s is not None), None)
    head = f"{'model':<22}{'params (M)':>11}{'MACs paper (G)':>16}{'MACs full (G)':>15}"
    unit = f"{'':<22}{'':>11}{f'@{mac[1]}x{mac[0]}':>16}{f'@{mac[1]}x{mac[0]}':>15}"
    graphed = any(r.graph_latency_s is not None for r in rows)
    if timed:
        head += f"{'latency (s)':>13}" + (f"{'graph (s)':>11}" if graphed else "") + f"{'peak mem (MiB)':>16}"
        unit += f"{f'@{timed.size[1]}x{timed.size[0]}':>13}" + (f"{'':>11}" if graphed else "") + f"{timed.device:>16}"
    lines = [head, unit]
    for r in rows:
        line = f"{r.model:<22}{r.params / 1e6:>11.2f}{r.macs_paper / 1e9:>16.2f}{r.macs_full / 1e9:>15.2f}"
        if timed:
            lat = f"{r.latency_s:.3f}" if r.latency_s is not None else "-"
            graph = f"{r.graph_latency_s:.3f}" if r.graph_latency_s is not None else "-"
            mem = f"{r.peak_memory_bytes / 2**20:.0f}" if r.peak_memory_bytes is not None else "-"
            line += f"{lat:>13}" + (f"{graph:>11}" if graphed else "") + f"{mem:>16}"
        lines.append(line)
    ref = PAPER_TABLE6["algnet"]
    lines.append(f"paper Table 6: ALGNet {ref['macs_g']:.0f} G MACs at 256x256, {ref['latency_s']} s at 1280x720 on its GPU")
    if timed:
        lines.append(f"scan backend: {timed.scan_backend}; {timed.threads} CPU threads; latency: median of the timed runs"
                     + ("; graph: the same forward replayed as one CUDA graph (algnet.CUDAGraphModel)" if graphed else "")
                     + "; peak mem: extra over the loaded model")
        from .sysinfo import describe_cpu

        lines.append(describe_cpu())
    return "\n".join(lines)
