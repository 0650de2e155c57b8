"""Mamba-1 (S6) layer with mamba_ssm.Mamba's constructor, parameter names and shapes.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023
(https://arxiv.org/abs/2312.00752); interface of ``mamba_ssm/modules/mamba_simple.py``.
Checkpoints written for mamba_ssm.Mamba load into this module unchanged. The selective scan runs
through :func:`algnet.ops.selective_scan`, so the fast CPU and GPU backends need no compiled
extension; :func:`algnet.fuse` converts the layer for inference.

Glossary: B batch, L tokens, D d_model, E d_inner = expand * D, N d_state, R dt_rank, K d_conv.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import selective_scan

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
        self.use_fast_path = use_fast_path  # kept for interface parity with mamba_ssm
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
        # takes (B, E, L) *views* of that memory (the cpu and triton backends keep their strides and
        # return y channels-last), so the layer makes no transposed copy of any (B, L, E) tensor.
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

    def _conv_silu(self, x: torch.Tensor) -> torch.Tensor:
        """silu(causal depthwise conv1d) of channels-last tokens (B, L, E) -> (B, L, E): conv1d's
        function without its (B, E, L) copies in and out."""
        weight = self.conv1d.weight[:, 0, :]  # (E, K)
        k, length = self.d_conv, x.shape[1]
        xp = F.pad(x, (0, 0, k - 1, 0))  # (B, L + K - 1, E), causal left padding
        out = xp[:, k - 1 :] * weight[:, k - 1]
        for i in range(k - 1):
            out = out + xp[:, i : i + length] * weight[:, i]
        if self.conv1d.bias is not None:
            out = out + self.conv1d.bias
        return F.silu(out)
