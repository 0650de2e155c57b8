"""Deploy-time conversion for inference: ``fuse(model)`` returns a fused, inference-only copy.

The models in :mod:`algnet.models` compute the paper's function in plain PyTorch, for training and
for reading. For inference, :func:`fuse` converts a copy once, the way RepVGG's
``repvgg_model_convert`` and timm's ``reparameterize_model`` do: every ALGBlock, NAFBlock,
LayerNorm2d and Mamba layer is replaced by a fused counterpart that

- folds the per-channel scales into the convolutions once, at conversion: beta (and NAFNet's
  gamma) into the last convolution of each residual branch, and ``-exp(A_log)`` of the scan;
- folds the channel attention (a per-image (1, C, 1, 1) scale) into the next convolution's weight
  at run time instead of scaling the map;
- runs the glue around the Mamba layer (LayerNorm2d, the token LayerNorm and its transpose, the
  aggregation and residual, the causal conv1d + SiLU) through one of the glue backends,
  :mod:`algnet.ops.glue_cpu` (numba) for CPU tensors or :mod:`algnet.ops.glue_triton` for CUDA
  tensors, and on the CPU scans the Mamba layer in pieces of tokens with the numba kernel.

The fused copy computes the same function (tests/test_fuse.py: within 1e-4 for every registered
variant, TLC included) without autograd: its parameters do not require gradients and its fused
modules raise :class:`InferenceOnlyError` when called with grad mode on an input that requires
one. Train, and compute gradients, with the plain model.

Usage::

    model = algnet.load_checkpoint("algnet-gopro.pt").eval()
    fast = algnet.fuse(model)          # model itself is left unchanged
    with torch.no_grad():
        restored = fast(blurred)[-1]

Glossary: B batch, C channels, P pixels (H * W), L tokens, E = expand * C Mamba channels,
N state size, R dt rank, K conv taps.
"""

from __future__ import annotations

import copy
import importlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import AlgnetError
from .models.algnet import ALGBlock, FeatureAggregation
from .models.layers import LayerNorm2d
from .models.mamba import Mamba
from .models.nafnet import NAFBlock

BACKENDS = ("auto", "reference", "cpu", "triton")

# Up to this dt rank the numba scan forms delta = dt_proj(dt) itself. Side by side
# (benchmarks/block_cpu.py, 2 cores) against the projection by matmul and the plain scan: rank 2
# 1.19x, 4 1.11x, 8 1.01x, 16 0.70x, 32 0.52x (R multiply-adds per element cost more than the store).
_KERNEL_DT_RANK = 4
_PIECE_BYTES = 16 << 20  # in_proj output per piece of tokens on the CPU


class InferenceOnlyError(AlgnetError, RuntimeError):
    """A fused model was asked for gradients."""


def fuse(model: nn.Module, backend: str = "auto", scan_backend: str | None = None) -> nn.Module:
    """Returns an inference-only copy of ``model`` with fused blocks; ``model`` is left unchanged.

    Args:
        model: an ALGNet or NAFNet (any registered variant, TLC-converted or not), or any module
            holding ALGBlocks, NAFBlocks, LayerNorm2d or Mamba layers.
        backend: the glue kernels: "auto" (numba for CPU tensors, Triton for CUDA tensors, PyTorch
            otherwise), "cpu", "triton" (CPU tensors only under TRITON_INTERPRET=1) or "reference"
            (the PyTorch twins of :mod:`algnet.ops.glue_ref`).
        scan_backend: the Mamba layers' selective-scan backend (see :func:`algnet.ops.selective_scan`);
            default: "cpu" or "triton" with those glue backends, else each layer's own.

    Returns:
        The fused copy, in eval mode, with no parameter requiring gradients.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fused = copy.deepcopy(model)
    if scan_backend is not None:
        for m in fused.modules():
            if isinstance(m, Mamba):
                m.scan_backend = scan_backend
    elif backend in ("cpu", "triton"):
        for m in fused.modules():
            if isinstance(m, Mamba):
                m.scan_backend = backend
    if isinstance(fused, (ALGBlock, NAFBlock, LayerNorm2d, Mamba)):
        fused = _fused(fused, backend)
    else:
        _replace_children(fused, backend)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused.eval()


def _fused(module: nn.Module, backend: str) -> nn.Module:
    kinds = ((ALGBlock, FusedALGBlock), (NAFBlock, FusedNAFBlock), (LayerNorm2d, FusedLayerNorm2d), (Mamba, FusedMamba))
    return next(fused(module, backend) for plain, fused in kinds if isinstance(module, plain))


def _replace_children(parent: nn.Module, backend: str) -> None:
    for name, child in parent.named_children():
        if isinstance(child, (ALGBlock, NAFBlock, LayerNorm2d, Mamba)):
            setattr(parent, name, _fused(child, backend))
        else:
            _replace_children(child, backend)


def _glue(x: torch.Tensor, backend: str):
    """The glue module for x: the conversion's backend, or with "auto" the one for x's device."""
    if backend == "auto":
        if x.device.type == "cuda" and _available("glue_triton"):
            backend = "triton"
        elif x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and _available("glue_cpu"):
            backend = "cpu"
        else:
            backend = "reference"
    elif backend == "cpu" and (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64)):
        backend = "reference"  # numba serves float32/float64 CPU tensors only
    return importlib.import_module(f"algnet.ops.glue_{'ref' if backend == 'reference' else backend}")


def _available(name: str) -> bool:
    return importlib.import_module(f"algnet.ops.{name}").is_available()[0]


def _defers_bias(glue) -> bool:
    """cuDNN adds a convolution's bias in a pass of its own; the Triton glue adds it as it reads the
    output instead. On the CPU the convolution adds it in the same loop: nothing to save."""
    return glue.__name__.endswith("glue_triton")


def _refuse_grad(x: torch.Tensor) -> None:
    if torch.is_grad_enabled() and x.requires_grad:
        raise InferenceOnlyError("a fused model computes no gradients: call it under torch.no_grad() or "
                                 "torch.inference_mode(), and train or differentiate the plain model instead")


def _frozen(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone()


def _scaled_conv(x: torch.Tensor, s: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv1x1(x * s)``; a (1, C, 1, 1) channel attention s is folded into the weight instead of
    scaling the map (TLC's per-pixel windowed mean, or a batch of images, scales x)."""
    if s.shape[0] == 1 and s.shape[-2:] == (1, 1):
        return F.conv2d(x, weight * s.view(1, -1, 1, 1), bias)
    return F.conv2d(x * s, weight, bias)


class FusedLayerNorm2d(nn.Module):
    """LayerNorm2d through the glue backend's ``layernorm2d``."""

    def __init__(self, norm: LayerNorm2d, backend: str = "auto"):
        super().__init__()
        self.backend, self.eps = backend, norm.eps
        self.register_buffer("weight", _frozen(norm.weight))
        self.register_buffer("bias", _frozen(norm.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _refuse_grad(x)
        return _glue(x, self.backend).layernorm2d(x, self.weight, self.bias, self.eps)


class FusedMamba(nn.Module):
    """The Mamba layer with its conv + SiLU from the glue backend, and on the CPU the numba scan run in
    pieces of tokens; (B, L, D) -> (B, L, D) float32, as :class:`algnet.models.Mamba`."""

    def __init__(self, mamba: Mamba, backend: str = "auto"):
        super().__init__()
        self.backend = backend
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = mamba.d_inner, mamba.d_state, mamba.d_conv, mamba.dt_rank
        self.scan_backend = mamba.scan_backend
        self.in_proj, self.x_proj, self.out_proj = mamba.in_proj, mamba.x_proj, mamba.out_proj
        self.register_buffer("conv_weight", _frozen(mamba.conv1d.weight[:, 0, :]))  # (E, K)
        self.register_buffer("conv_bias", _frozen(mamba.conv1d.bias))
        self.register_buffer("dt_weight", _frozen(mamba.dt_proj.weight))  # (E, R)
        self.register_buffer("dt_bias", _frozen(mamba.dt_proj.bias).float())
        self.register_buffer("A", -torch.exp(mamba.A_log.detach().float()))  # (E, N)
        self.register_buffer("D", _frozen(mamba.D).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _refuse_grad(x)
        with torch.autocast(x.device.type, enabled=False):  # float32: the scan diverges in half
            x = x.float()
            glue = _glue(x, self.backend)
            if glue.__name__.endswith("glue_cpu") and self._scan(x) == "cpu":
                return self._forward_pieces(x)
            return self._forward(x, glue)

    def _scan(self, x: torch.Tensor) -> str:
        from .ops import resolve_backend

        return resolve_backend(self.scan_backend, x.device)

    def _forward(self, x: torch.Tensor, glue) -> torch.Tensor:
        from .ops import selective_scan

        xz = self.in_proj(x)  # (B, L, 2E)
        u = glue.causal_conv1d_silu(xz[..., : self.d_inner], self.conv_weight, self.conv_bias)  # (B, L, E)
        z = xz[..., self.d_inner :]  # (B, L, E) view
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ self.dt_weight.t()  # (B, L, E); bias and softplus are fused into the scan
        y = selective_scan(u.transpose(1, 2), dt.transpose(1, 2), self.A, B.transpose(1, 2), C.transpose(1, 2), self.D,
                           z=z.transpose(1, 2), delta_bias=self.dt_bias, delta_softplus=True, backend=self.scan_backend)  # (B, E, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)

    def _forward_pieces(self, x: torch.Tensor) -> torch.Tensor:
        """The same function in pieces of tokens, for the numba scan.

        The scan's state and the conv's last K - 1 inputs carry over from piece to piece, and each
        piece's intermediates stay near _PIECE_BYTES: the allocator then reuses them from its heap
        instead of mapping fresh pages (first-touch faults cost ~0.15 ms/MB here) and they stay in
        cache. For a low dt rank the scan kernel forms dt_proj itself.
        """
        from .ops import glue_cpu
        from .ops.scan_cpu import selective_scan_inference

        nb, length, _ = x.shape
        e, k = self.d_inner, self.d_conv
        step = max(1, _PIECE_BYTES // (8 * e))  # tokens per piece: in_proj writes 2E floats per token
        in_kernel = self.dt_rank <= _KERNEL_DT_RANK
        state = torch.zeros(nb, e, self.d_state)  # (B, E, N)
        out = torch.empty(nb, length, self.out_proj.out_features)
        for start in range(0, length, step):
            lo = max(0, start - (k - 1))  # the conv's inputs before the piece, recomputed
            xz = self.in_proj(x[:, lo : start + step])  # (B, l, 2E)
            u = glue_cpu.causal_conv1d_silu(xz[..., :e], self.conv_weight, self.conv_bias)[:, start - lo :]  # (B, l', E)
            z = xz[:, start - lo :, e:]
            dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
            if not in_kernel:
                dt = dt @ self.dt_weight.t()  # (B, l', E)
            y = selective_scan_inference(
                u.transpose(1, 2), dt.transpose(1, 2), self.A, B.transpose(1, 2), C.transpose(1, 2), self.D,
                z=z.transpose(1, 2), delta_bias=self.dt_bias, delta_softplus=True,
                dt_weight=self.dt_weight if in_kernel else None, state=state,
            )  # (B, E, l')
            out[:, start : start + step] = self.out_proj(y.transpose(1, 2))
        return out


class _FusedBlock(nn.Module):
    """What ALGBlock and NAFBlock share: ``sg(dw3x3(conv1(norm1(x))))`` and the channel mix
    ``y + scale * conv5(sg(conv4(norm2(y))))`` with the scale folded into conv5."""

    def _take_common(self, block: nn.Module, scale: torch.Tensor, backend: str) -> None:
        self.backend = backend
        self.norm1, self.norm2 = FusedLayerNorm2d(block.norm1, backend), FusedLayerNorm2d(block.norm2, backend)
        for name in ("conv1", "conv2", "conv4"):
            conv = getattr(block, name)
            self.register_buffer(f"{name}_weight", _frozen(conv.weight))
            self.register_buffer(f"{name}_bias", _frozen(conv.bias))
        s = scale.detach().reshape(-1)
        self.register_buffer("conv5_weight", block.conv5.weight.detach() * s.view(-1, 1, 1, 1))  # scale * conv5, folded once
        self.register_buffer("conv5_bias", block.conv5.bias.detach() * s)

    def _spatial(self, x: torch.Tensor, glue, defer: bool) -> torch.Tensor:
        y = F.conv2d(self.norm1(x), self.conv1_weight, None if defer else self.conv1_bias)  # (B, 2C, H, W)
        return glue.dwconv3x3_gate(y, self.conv2_weight, self.conv2_bias, pre_bias=self.conv1_bias if defer else None)

    def _channel_mix(self, y: torch.Tensor, glue, defer: bool) -> torch.Tensor:
        h = glue.gate(F.conv2d(self.norm2(y), self.conv4_weight, None if defer else self.conv4_bias), self.conv4_bias if defer else None)
        out = F.conv2d(h, self.conv5_weight, None if defer else self.conv5_bias).contiguous()
        return glue.add_bias_residual_(out, y, self.conv5_bias if defer else None)


class FusedALGBlock(_FusedBlock):
    """ALGBlock for inference: beta folded into conv5; the global branch's token LayerNorm and the
    aggregation with the residual each one transposing pass of the glue backend."""

    def __init__(self, block: ALGBlock, backend: str = "auto"):
        super().__init__()
        self._take_common(block, block.beta, backend)
        self.aggregation = block.aggregation
        if block.g_layer is not None:
            norm = block.g_layer.norm
            self.token_eps = norm.eps
            self.register_buffer("token_weight", _frozen(norm.weight))
            self.register_buffer("token_bias", _frozen(norm.bias))
            self.mamba = FusedMamba(block.g_layer.mamba, backend)
        if block.l_layer is not None:
            self.pool, self.attention = block.l_layer.pool, block.l_layer.conv1  # (B, C, 1, 1) attention; per pixel under TLC
            self.register_buffer("local_weight", _frozen(block.l_layer.conv2.weight))
            self.register_buffer("local_bias", _frozen(block.l_layer.conv2.bias))
        fa = isinstance(block.aggregate, FeatureAggregation)
        ones = torch.ones(block.beta.numel())
        self.register_buffer("g", _frozen(block.aggregate.g).reshape(-1) if fa else ones)
        self.register_buffer("w", _frozen(block.aggregate.w).reshape(-1) if fa else ones.clone())
        self.concat = block.aggregate.conv if self.aggregation == "concat" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _refuse_grad(x)
        glue = _glue(x, self.backend)
        defer = _defers_bias(glue)
        xs = self._spatial(x, glue, defer)  # spatial features X^s
        y = self._residual(x, xs, glue, defer)  # x + F_A
        return self._channel_mix(y, glue, defer)

    def _residual(self, x: torch.Tensor, xs: torch.Tensor, glue, defer: bool) -> torch.Tensor:
        if self.aggregation == "local":
            return x + self._local(xs, False)
        tokens = glue.layernorm_to_tokens(xs, self.token_weight, self.token_bias, self.token_eps,
                                          out_dtype=torch.promote_types(xs.dtype, torch.float32))  # (B, P, C)
        f_g = self.mamba(tokens)  # (B, P, C) float32
        if self.aggregation in ("fa", "sum"):
            return glue.aggregate_residual(x, f_g, self._local(xs, defer), self.g, self.w,
                                           local_bias=self.local_bias if defer else None)
        f_g = f_g.transpose(1, 2).reshape(xs.shape)  # (B, C, H, W)
        if self.aggregation == "global":
            return x + f_g
        return x + self.concat(torch.cat([f_g, self._local(xs, False)], dim=1))

    def _local(self, xs: torch.Tensor, defer: bool) -> torch.Tensor:
        """F_L = conv(xs * attention), without the convolution's bias when ``defer``."""
        return _scaled_conv(xs, self.attention(self.pool(xs)), self.local_weight, None if defer else self.local_bias)


class FusedNAFBlock(_FusedBlock):
    """NAFBlock for inference: beta folded into conv3 and gamma into conv5; the simplified channel
    attention folded into conv3's weight at run time."""

    def __init__(self, block: NAFBlock, backend: str = "auto"):
        super().__init__()
        self._take_common(block, block.gamma, backend)
        self.sca = block.sca  # Sequential(pool, conv): TLC replaces the pool
        beta = block.beta.detach().reshape(-1)
        self.register_buffer("conv3_weight", block.conv3.weight.detach() * beta.view(-1, 1, 1, 1))
        self.register_buffer("conv3_bias", block.conv3.bias.detach() * beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _refuse_grad(x)
        glue = _glue(x, self.backend)
        defer = _defers_bias(glue)
        xs = self._spatial(x, glue, defer)
        out = _scaled_conv(xs, self.sca(xs), self.conv3_weight, None if defer else self.conv3_bias).contiguous()
        y = glue.add_bias_residual_(out, x, self.conv3_bias if defer else None)  # x + beta * conv3(xs * sca(xs))
        return self._channel_mix(y, glue, defer)  # y + gamma * conv5(sg(conv4(norm2(y))))
