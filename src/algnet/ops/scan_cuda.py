"""Adapter to mamba_ssm's compiled selective-scan kernel (backend "cuda").

mamba_ssm (Gu and Dao, https://github.com/state-spaces/mamba) ships the original fused CUDA kernel,
``selective_scan_fn``, with the same signature and semantics as :func:`algnet.ops.selective_scan`.
Building it is the usual pain point of Mamba-based code (since mid-2026 its Mamba-1 extension is
opt-in at build time), so it is only used when it is already importable; the Triton backend covers
the GPU otherwise. Nothing is imported until a scan is requested.
"""

from __future__ import annotations

import importlib

import torch

INSTALL_HINT = (
    "pip install mamba-ssm --no-build-isolation (with its Mamba-1 selective-scan CUDA extension built), "
    "or use the triton backend"
)


def _selective_scan_fn():
    """Returns mamba_ssm's ``selective_scan_fn``, or raises ImportError naming what is missing."""
    try:
        interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except ImportError as err:
        missing = getattr(err, "name", None) or "mamba_ssm"
        if missing.startswith("mamba_ssm"):
            raise ImportError(f"mamba_ssm is not installed ({INSTALL_HINT})") from err
        if missing == "selective_scan_cuda":
            raise ImportError(f"mamba_ssm is installed without its compiled selective-scan extension "
                              f"'selective_scan_cuda' ({INSTALL_HINT})") from err
        raise ImportError(f"mamba_ssm is installed but cannot import {missing!r} ({INSTALL_HINT})") from err
    # mamba_ssm's interface imports the extension at the top; check anyway in case a build defers it.
    try:
        importlib.import_module("selective_scan_cuda")
    except ImportError as err:
        raise ImportError(
            f"mamba_ssm is installed without its compiled selective-scan extension 'selective_scan_cuda' ({INSTALL_HINT})"
        ) from err
    return interface.selective_scan_fn


def is_available(device: torch.device) -> tuple[bool, str]:
    """Returns (available, reason): CUDA tensors with mamba_ssm and its CUDA extension importable."""
    device = torch.device(device)
    if device.type != "cuda":
        return False, f"mamba_ssm's kernel runs on CUDA tensors only, got {device.type}"
    if not torch.cuda.is_available():
        return False, "no CUDA device is visible to torch"
    try:
        _selective_scan_fn()
    except ImportError as err:
        return False, str(err)
    return True, ""


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Runs mamba_ssm's ``selective_scan_fn``; differentiable through its own backward kernel.

    Shapes as :func:`algnet.ops.selective_scan`. mamba_ssm computes in float32 (inputs may be
    float32, float16 or bfloat16) and has no float64 path.
    """
    if any(t is not None and t.dtype == torch.float64 for t in (u, delta, A, B, C, D, z, delta_bias)):
        raise TypeError("mamba_ssm's selective scan has no float64 kernel; use backend='triton' or 'reference'")
    if not u.is_cuda:
        raise RuntimeError(f"the cuda scan backend needs CUDA tensors, got {u.device}")
    fn = _selective_scan_fn()
    # The kernel wants delta, B, C and z in u's dtype and A, D, delta_bias in float32; the casts are
    # no-ops in the Mamba layer and differentiable otherwise.
    delta, B, C = (t.to(u.dtype) for t in (delta, B, C))
    z = None if z is None else z.to(u.dtype)
    D = None if D is None else D.float()
    delta_bias = None if delta_bias is None else delta_bias.float()
    return fn(u, delta, A.float(), B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
