"""Selective-scan operators with interchangeable backends.

``selective_scan`` has the signature and semantics of mamba_ssm's ``selective_scan_fn``; every
backend computes the same function and is tested against :func:`selective_scan_ref`.

Backends:
    reference  sequential PyTorch, float64-capable (ground truth; slow)
    chunked    stable two-level chunked PyTorch, memory bounded by the chunk (any device)
    cpu        fused numba kernel, forward and backward (CPU tensors)
    triton     Triton kernel, forward and backward (CUDA tensors; TRITON_INTERPRET=1 on CPU)
    cuda       mamba_ssm's compiled kernel when importable (CUDA tensors)

``backend="auto"`` (default, or the ``ALGNET_SCAN_BACKEND`` environment variable) picks the
fastest available one for the tensors' device.
"""

from __future__ import annotations

import importlib
import os

import torch

from ..errors import AlgnetError
from .scan_ref import selective_scan_ref

BACKENDS = ("reference", "chunked", "cpu", "triton", "cuda")
_MODULES = {
    "reference": "algnet.ops.scan_ref",
    "chunked": "algnet.ops.scan_chunked",
    "cpu": "algnet.ops.scan_cpu",
    "triton": "algnet.ops.scan_triton",
    "cuda": "algnet.ops.scan_cuda",
}
_AUTO_ORDER = {"cpu": ("cpu", "chunked", "reference"), "cuda": ("cuda", "triton", "chunked", "reference")}
ENV_VAR = "ALGNET_SCAN_BACKEND"


class BackendUnavailable(AlgnetError, RuntimeError):
    """A requested scan backend is unknown or cannot run here; the message says why and what to do."""


def _module(name: str):
    try:
        return importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as err:
        if err.name == _MODULES[name]:
            return None
        raise


def backend_status(name: str, device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Returns (available, reason) for one backend on a device type."""
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; choose one of {', '.join(('auto',) + BACKENDS)}")
    if name == "reference":
        return True, ""
    mod = _module(name)
    if mod is None:
        return False, f"the {name} backend is not part of this installation"
    return mod.is_available(torch.device(device))


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can run on ``device``."""
    return [b for b in BACKENDS if backend_status(b, device)[0]]


def resolve_backend(backend: str | None, device: torch.device | str) -> str:
    """Turns ``auto``/None (or the environment override) into a concrete, available backend."""
    device = torch.device(device)
    name = (backend or os.environ.get(ENV_VAR) or "auto").lower()
    if name not in BACKENDS and name != "auto":
        source = f"{ENV_VAR}={name}" if not backend else repr(name)
        raise BackendUnavailable(f"unknown scan backend {source}; choose one of {', '.join(('auto',) + BACKENDS)}")
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device.type, ("chunked", "reference")):
            if backend_status(candidate, device)[0]:
                return candidate
        return "reference"
    ok, reason = backend_status(name, device)
    if not ok:
        raise BackendUnavailable(f"scan backend {name!r} is unavailable on {device.type}: {reason}")
    return name


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend=None):
    """Selective scan ``y = SSM(A, B, C, dt)(u) + D u``, optionally gated by ``silu(z)``.

    Args:
        u: input (B, E, L).
        delta: step size before bias and softplus (B, E, L).
        A: state matrix (E, N), negative real.
        B: input projection (B, N, L).
        C: output projection (B, N, L).
        D: skip (E,) or None.
        z: gate (B, E, L) or None.
        delta_bias: (E,) added to delta before softplus, or None.
        delta_softplus: apply softplus to delta.
        backend: "auto", "reference", "chunked", "cpu", "triton" or "cuda"; None reads
            ``ALGNET_SCAN_BACKEND`` and falls back to "auto".

    Returns:
        y (B, E, L) in u's dtype.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(backend, u.device)
    if name == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return _module(name).selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, channels, length), got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    n = A.shape[-1] if A.dim() == 2 else -1
    expected = {
        "delta": (delta, (batch, channels, length)),
        "A": (A, (channels, n)),
        "B": (B, (batch, n, length)),
        "C": (C, (batch, n, length)),
        "D": (D, (channels,)),
        "z": (z, (batch, channels, length)),
        "delta_bias": (delta_bias, (channels,)),
    }
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")


__all__ = ["selective_scan", "selective_scan_ref", "available_backends", "backend_status", "resolve_backend", "BackendUnavailable", "BACKENDS", "ENV_VAR"]
