"""Mamba-1 (S6) layer with mamba_ssm.Mamba's constructor, parameter names and shapes.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023
(https://arxiv.org/abs/2312.00752); interface of ``mamba_ssm/modules/mamba_simple.py``.
Checkpoints written for mamba_ssm.Mamba load into this module unchanged. The selective scan runs
through :func:`algnet.ops.selective_scan`, so the fast CPU and GPU backends need no compiled
extension.

Glossary: B batch, L tokens, D d_model, E d_inner = expand * D, N d_state, R dt_rank, K d_conv.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import selective_scan
from .layers import glue_kernels, unobserved

# Up to this dt rank the cpu kernel forms delta = dt_proj(dt) itself on CPU inference. Side by side
# (benchmarks/block_cpu.py, 2 cores) against the projection by matmul and the plain scan: rank 2
# 1.19x, 4 1.11x, 8 1.01x, 16 0.70x, 32 0.52x (R multiply-adds per element cost more than the store).
_KERNEL_DT_RANK = 4
_PIECE_BYTES = 16 << 20  # in_proj output per piece of tokens on CPU inference


class Mamba(nn.Module):
    """Selective state-space layer, (B, L, D) -> (B, L, D), computed in float32 under autocast."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
        scan_backend: str | None = None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx
        self.use_fast_path = use_fast_path  # kept for interface parity; every path here is fused
        self.scan_backend = scan_backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

        # dt_proj initialisation of mamba_ssm: weights keep dt's variance, bias = softplus^-1(dt)
        # with dt log-uniform in [dt_min, dt_max].
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            elif dt_init == "random":
                self.dt_proj.weight.uniform_(-std, std)
            else:
                raise ValueError(f"dt_init must be 'constant' or 'random', got {dt_init!r}")
            dt = torch.exp(torch.rand(self.d_inner, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)  # (E, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Maps (B, L, D) to (B, L, D); returns float32 whatever the autocast state."""
        with torch.autocast(hidden_states.device.type, enabled=False):
            return self._forward(hidden_states.float())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last throughout: every projection reads and writes (B, L, *) rows, and the scan
        # takes (B, E, L) *views* of that memory (the cpu backend and the triton backend's default
        # forward keep their strides and return y channels-last), so the layer makes no transposed
        # copy of any (B, L, E) tensor.
        if self._cpu_inference(x):
            return self._forward_cpu_pieces(x)
        xz = self.in_proj(x)  # (B, L, 2E)
        x, z = xz.split(self.d_inner, dim=-1)  # (B, L, E) views
        x = self._conv_silu(x)  # (B, L, E)
        x_dbl = self.x_proj(x)  # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ self.dt_proj.weight.t()  # (B, L, E); bias and softplus are fused into the scan
        A = -torch.exp(self.A_log.float())  # (E, N)
        y = selective_scan(
            x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(),
            z=z.transpose(1, 2), delta_bias=self.dt_proj.bias.float(), delta_softplus=True, backend=self.scan_backend,
        )  # (B, E, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)

    def _forward_cpu_pieces(self, x: torch.Tensor) -> torch.Tensor:
        """CPU inference, the same function as :meth:`_forward`'s plain path, in pieces of tokens.

        The scan's state and the conv's last K - 1 inputs carry over from piece to piece, and each
        piece's intermediates stay near _PIECE_BYTES: the allocator then reuses them from its heap
        instead of mapping fresh pages (first-touch faults cost ~0.15 ms/MB here) and they stay in
        cache. Fused kernels do the conv + silu in one pass and, for a low dt rank, dt_proj inside the scan.
        """
        from ..ops.scan_cpu import causal_conv1d_silu, selective_scan_inference

        nb, length, _ = x.shape
        e, k = self.d_inner, self.d_conv
        step = max(1, _PIECE_BYTES // (8 * e))  # tokens per piece: in_proj writes 2E floats per token
        A = -torch.exp(self.A_log.float())  # (E, N)
        taps = self.conv1d.weight[:, 0, :]  # (E, K)
        in_kernel = self.dt_rank <= _KERNEL_DT_RANK
        state = torch.zeros(nb, e, self.d_state)  # (B, E, N)
        out = torch.empty(nb, length, self.d_model)
        for start in range(0, length, step):
            lo = max(0, start - (k - 1))  # the conv's inputs before the piece, recomputed
            xz = self.in_proj(x[:, lo : start + step])  # (B, l, 2E)
            u = causal_conv1d_silu(xz[..., :e], taps, self.conv1d.bias)[:, start - lo :]  # (B, l', E)
            z = xz[:, start - lo :, e:]
            dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
            if not in_kernel:
                dt = dt @ self.dt_proj.weight.t()  # (B, l', E)
            y = selective_scan_inference(
                u.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(),
                z=z.transpose(1, 2), delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                dt_weight=self.dt_proj.weight if in_kernel else None, state=state,
            )  # (B, E, l')
            out[:, start : start + step] = self.out_proj(y.transpose(1, 2))
        return out

    def _cpu_inference(self, x: torch.Tensor) -> bool:
        """No gradient is needed and the scan resolves to the numba kernels: the fused paths apply."""
        if type(x) is not torch.Tensor or x.device.type != "cpu":  # fake or subclassed tensors: the plain path
            return False
        if not unobserved(self.in_proj, self.x_proj, self.out_proj):  # hooks would see one call per piece
            return False
        if (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))):
            return False
        from ..ops import BackendUnavailable, resolve_backend

        try:
            return resolve_backend(self.scan_backend, x.device) == "cpu"
        except BackendUnavailable:  # the plain path raises the same clear error
            return False

    def _conv_silu(self, x: torch.Tensor) -> torch.Tensor:
        """silu(causal depthwise conv1d) of channels-last tokens (B, L, E) -> (B, L, E)."""
        weight = self.conv1d.weight[:, 0, :]  # (E, K)
        if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
            from ..ops import block_triton

            if glue_kernels(x) is block_triton:  # one pass instead of a padded copy and 2K + 2 passes
                return block_triton.causal_conv1d_silu(x, weight, self.conv1d.bias)
        k, length = self.d_conv, x.shape[1]
        xp = F.pad(x, (0, 0, k - 1, 0))  # (B, L + K - 1, E), causal left padding
        out = xp[:, k - 1 :] * weight[:, k - 1]
        for i in range(k - 1):
            out = out + xp[:, i : i + length] * weight[:, i]
        if self.conv1d.bias is not None:
            out = out + self.conv1d.bias
        return F.silu(out)
