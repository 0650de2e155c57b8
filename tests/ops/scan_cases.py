"""Inputs and the reference comparison shared by the scan backends' tests."""

import json
import os
import subprocess
import sys

import torch

from algnet.ops import selective_scan_ref

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
TOL = {torch.float32: dict(rtol=6e-4, atol=2e-3), torch.float64: dict(rtol=1e-9, atol=1e-9)}


def make_inputs(b, e, n, l, dtype, seed=0, large=False):
    """Random inputs; ``large`` gives |A| up to ~33 and dt up to ~8, so dt*|A| exceeds 100."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    A = -torch.exp(torch.rand(e, n, generator=g, dtype=dtype) * 3.5)
    delta = r(b, e, l) + (3.0 if large else -1.0)
    return dict(u=r(b, e, l), delta=delta, A=A, B=r(b, n, l), C=r(b, n, l), D=r(e), z=r(b, e, l), delta_bias=r(e) * 0.5)


def compare(fn, inputs, options, dtype):
    """Runs fn and the reference on the same leaves and compares y and every gradient."""
    kwargs = {k: v for k, v in inputs.items() if k in ("u", "delta", "A", "B", "C") or options.get(k, False)}
    softplus = options.get("softplus", False)
    if not softplus:  # the scan's contract: dt = delta + delta_bias > 0 (A < 0), as softplus guarantees
        kwargs["delta"] = torch.nn.functional.softplus(kwargs["delta"])
        if "delta_bias" in kwargs:  # a negative bias is lifted back out of delta
            kwargs["delta"] = kwargs["delta"] + (-kwargs["delta_bias"]).clamp(min=0)[:, None]
    outs = []
    for f in (fn, selective_scan_ref):
        leaves = {k: v.clone().requires_grad_() for k, v in kwargs.items()}
        y = f(**leaves, delta_softplus=softplus)
        grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        grads = torch.autograd.grad(y, list(leaves.values()), grad_out)
        outs.append((y, dict(zip(leaves, grads))))
    (y, grads), (y_ref, grads_ref) = outs
    assert y.dtype == inputs["u"].dtype
    scale = lambda t: max(1.0, t.abs().max().item())  # noqa: E731
    tol = TOL[dtype]
    torch.testing.assert_close(y, y_ref, rtol=tol["rtol"], atol=tol["atol"] * scale(y_ref))
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=tol["rtol"], atol=tol["atol"] * scale(grads_ref[name]), msg=lambda m: f"d{name}: {m}")


OPTIONS = [
    dict(D=True, z=True, delta_bias=True, softplus=True),
    dict(),
    dict(D=True, softplus=True),
    dict(z=True, delta_bias=True),
]


MEMORY_SCRIPT = """
import json, resource, sys, torch
from algnet.ops import {module} as m
e, n, l = 64, 32, int(sys.argv[1])
torch.manual_seed(0)
x = dict(u=torch.randn(1, e, l), delta=torch.randn(1, e, l) - 1, A=-torch.rand(e, n) - 0.5, B=torch.randn(1, n, l),
         C=torch.randn(1, n, l), D=torch.randn(e), z=torch.randn(1, e, l), delta_bias=torch.randn(e))
y = m.selective_scan(**{{k: v[..., :8] if v.dim() == 3 else v for k, v in x.items()}}, delta_softplus=True)  # compile
# VmHWM, reset here: ru_maxrss keeps the high-water mark of the process that started this one (a
# big pytest process), and then a forward's peak did not show at all.
from algnet.profiling import _reset_peak_rss, _rss_bytes
assert _reset_peak_rss(), "cannot reset the peak RSS (/proc/self/clear_refs)"
before = _rss_bytes("VmRSS")
y = m.selective_scan(**x, delta_softplus=True)
peak = _rss_bytes("VmHWM")
extra = (peak - before) / 2**20 - y.numel() * y.element_size() / 2**20
print(json.dumps(dict(extra_mb=extra, finite=bool(torch.isfinite(y).all()))))
"""


def peak_extra_mb(module: str, length: int) -> float:
    """Peak RSS growth (MB) of one no-grad forward, beyond inputs and one output, in a fresh process."""
    # A fixed mmap threshold makes glibc return freed blocks at once, so the peak RSS measures
    # live tensors rather than what the allocator keeps cached.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    script = MEMORY_SCRIPT.format(module=module)
    out = subprocess.run([sys.executable, "-c", script, str(length)], capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["finite"]
    return result["extra_mb"]


HALF_INPUTS = ("u", "delta", "z")


def half_inputs(seed: int = 6, length: int = 64, dtype=torch.bfloat16) -> dict:
    """u, delta, z in a half dtype (as autocast hands them), the rest float32."""
    x = make_inputs(1, 4, 8, length, torch.float32, seed=seed)
    return {k: v.to(dtype) if k in HALF_INPUTS else v for k, v in x.items()}


def assert_computed_in_float32(y: torch.Tensor, inputs: dict) -> None:
    """y (in the inputs' half dtype) must be a float64 scan of the same inputs rounded once: every
    element within one unit in the last place of that dtype (plus float32 noise). A scan that steps
    its state in bfloat16 rounds at every token and misses this by several units (see
    test_scan_chunked.test_precision_check_rejects_a_bfloat16_scan)."""
    ref = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True)
    mantissa = torch.finfo(y.dtype).eps  # one unit in the last place at 1.0
    ulp = mantissa * torch.exp2(torch.floor(torch.log2(ref.abs().clamp_min(1e-30))))
    err = (y.double() - ref).abs()
    bound = ulp + 1e-6 * ref.abs().max()
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"error up to {worst:.2f} x one {y.dtype} ulp of a float64 scan"


def scan_in_dtype(inputs: dict, dtype) -> torch.Tensor:
    """A deliberately wrong scan that keeps its state in ``dtype`` (the failure the check above must catch)."""
    x = {k: v.to(dtype) for k, v in inputs.items()}
    dt = torch.nn.functional.softplus(x["delta"] + x["delta_bias"][:, None])  # (B, E, L)
    h = torch.zeros(x["u"].shape[0], x["u"].shape[1], x["A"].shape[1], dtype=dtype)  # (B, E, N)
    ys = []
    for t in range(x["u"].shape[-1]):
        h = torch.exp(dt[..., t, None] * x["A"]) * h + (dt[..., t] * x["u"][..., t])[..., None] * x["B"][:, None, :, t]
        ys.append((h * x["C"][:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1) + x["u"] * x["D"][:, None]
    return y * torch.nn.functional.silu(x["z"])
