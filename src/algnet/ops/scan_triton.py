"""Selective scan as Triton kernels, forward and backward: a GPU path with nothing to compile.

Same function as :func:`algnet.ops.selective_scan_ref` (DESIGN.md section 4). Triton is imported
lazily, so this module imports without it; ``is_available`` says how to install it.

Layout. Every program owns one batch item, a block of channels and one chunk of ``CHUNK`` tokens,
the way mamba_ssm's CUDA kernel owns a chunk of tokens per channel, so the (L, E, N) state is never
stored. Chunks are independent programs, which fills the GPU even at batch 1 and 64 channels (a
grid over batch and channel blocks alone, each streaming all L tokens, would be 8 programs on 132
SMs there, and the first ALGNet level is exactly that shape); the state entering each chunk comes
from the stable two-level form of DESIGN.md section 4, in three launches:

    1. LOCAL pass: the end state of each chunk started from zero,
       ``sum_t exp(A sum_{s>t} dt_s) dt_t u_t B_t``, and its step sum ``S_k = sum_t dt_t`` (the
       chunk's decay is ``exp(A S_k) <= 1``).
    2. ``carry``: walk the chunks, ``H_k = exp(A S_{k-1}) H_{k-1} + h_end_{k-1}``; these boundary
       states (one per CHUNK tokens) are what backward keeps.
    3. y pass: scan each chunk from its boundary state and write ``y``.

Two kernels implement passes 1 and 3; ``fwd=`` or the ALGNET_TRITON_FWD environment variable
(``seq`` or ``assoc``, read at each call) chooses, and both leave the same states for backward:

- ``seq`` (default), ``scan_seq``: ``SEQ_BLOCK_E`` = 32 channels, one per thread, each thread
  holding its channel's N states in registers and walking the chunk token by token: per update one
  exp2 (log2 e folded into A once) and two multiply-adds, the sum over n for y inside the thread.
  Compiled for sm_90 (N = 32, Triton 3.6 and 3.9): the y pass is ~275-300 instructions per token
  per warp for 1,024 updates, 35 of them on the exp unit, whose throughput (16 per clock per SM)
  then binds about as much as instruction issue; the local pass ~195 with 33; no spills, no
  shuffles. B_t and C_t are loaded once per block per token and u, delta, z, y
  are BLOCK_E values per token, contiguous in the channels-last views the Mamba layer passes,
  which this kernel reads in place (any strides); y comes back in u's layout.
- ``assoc``, ``scan_fwd``: tiles of ``BLOCK_E`` = 8 channels by CHUNK tokens; the time axis is
  parallel inside the tile (an associative scan of the affine maps ``h -> a_t h + b_t``, combined
  across threads) and the state axis a loop, so each update pays for combine steps besides its
  exp. Measured on an H200 (benchmarks/RESULTS.md, 2026-11-27): forward 0.65 ms at B=1, E=64,
  N=32, L=65,536, 2.08e11 updates/s, 32x its memory-bandwidth floor: compute-bound.

Measured side by side on an H200 (Triton 3.6, ``benchmarks/gpu_check.py --quick``, 2026-11-27),
B=1, E=64, N=32, L=65,536 forward: seq 32x128 0.568 ms on channels-last views (2.36e11 updates/s)
and 0.604 ms contiguous; assoc 0.936 ms on the views (it copies them) and 0.622 ms contiguous.
Inside ALGNet at 1280x720 (fp32, eager) the seq forward took the network from 196 to 135 ms (no
copies of the Mamba layer's views), and the wider carry (see SEQ_CARRY_GROUP) to 116 ms. A profile
then put the scan at ~27 ms of ~120 ms of GPU kernel time; the rest is PyTorch's own kernels.

No exponent is ever positive (products of ``a_t <= 1``; dt >= 0 and A <= 0), so large ``|A| * dt``
cannot overflow.

Backward (``ybar = dy * silu(z)``): ``g_t = ybar_t C_t + a_{t+1} g_{t+1}`` runs right to left, so
it gets the same treatment in reverse: ``grad_local`` (what each chunk sends to its left
neighbour from a zero start), a reverse ``carry``, then ``scan_bwd`` recomputes ``h`` inside its chunk from the saved boundary state (forward scan)
and ``g`` (reverse scan) and forms every gradient. It never needs ``h_{t-1}``: ``a_t h_{t-1}`` is
``h_t - dt_t u_t B_t`` exactly, which keeps the backward free of divisions by ``a_t``.

Determinism: dB and dC are sums over channels. Each channel block writes its partial sums to its own
slice of a buffer, and torch sums the slices afterwards; dA, dD and d delta_bias are reduced the same
way over chunks. No atomics, so two backward passes give bitwise-equal gradients.

Memory: the associative kernels and backward read contiguous tensors. The associative forward copies
its inputs; with the sequential forward, the copies are made in backward, only when one runs.

Precision: float32, bfloat16 and float16 inputs are computed in float32; if any input is float64 the
kernels compute in float64 (exact enough to serve as a second reference, slow on consumer GPUs).
Outputs and gradients come back in the inputs' dtypes.

Glossary: B batch, E channels (d_inner), N state size (d_state), L tokens, K chunks (ceil(L/CHUNK)).
"""

from __future__ import annotations

import contextlib
import functools
import os
from types import SimpleNamespace
from typing import NamedTuple

import torch

INSTALL_HINT = "pip install triton"

# Tile shape: 8 x 128 at 8 warps is 4 elements per thread. Compiled for sm_90 (Triton 3.9) that is
# 93 registers for the forward and ~170 for the backward without spills; 16 x 128 spilled in the
# backward. The dB/dC partial buffers hold E/BLOCK_E copies of B's size during backward.
BLOCK_E = 8
CHUNK = 128
CARRY_GROUP = 8  # chunks combined per step of the sequential walk over chunks
# The sequential forward's walk over chunks. Profiled on an H200 inside ALGNet at 1280x720, the
# carry with backward's shape (8 channels per program: 8 programs for 64 channels, 7,200 chunks in
# groups of 8) took 15 ms against scan_seq's 19 ms; with 2 channels and 32 chunks per step (4x the
# programs, 1/4 the dependent steps) the network went from 134.6 to 116.4 ms. Longer chunks (fewer
# to walk) did not pay: 116.3 ms at 256 tokens, 122.5 at 512 (fewer programs for scan_seq).
SEQ_CARRY_BLOCK_E = 2
SEQ_CARRY_GROUP = 32
# Sequential forward: one channel per thread at SEQ_BLOCK_E = 32 * warps. With N = 32, compiled for
# sm_80 and sm_90 by Triton 3.6 and 3.9: 121-150 registers, no spills (tests check the spills).
# 64 channels on one warp (two per thread) also fits; 64 on two warps broadcasts B_t, C_t with
# 64 loads per thread per token instead of through shared memory.
SEQ_BLOCK_E = 32
FWD_KERNELS = ("seq", "assoc")
FWD_ENV_VAR = "ALGNET_TRITON_FWD"  # seq (default) or assoc, read at each call


def is_available(device: torch.device) -> tuple[bool, str]:
    """Returns (available, reason): CUDA tensors with triton, or CPU tensors under TRITON_INTERPRET=1."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False, f"triton is not installed ({INSTALL_HINT})"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible to torch"
        return True, ""
    if device.type == "cpu":
        if _interpret():
            return True, ""
        return False, "Triton runs CPU tensors only in its interpreter; set TRITON_INTERPRET=1 (slow, for tests)"
    return False, f"Triton kernels need CUDA tensors, got a {device.type} tensor"


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    fwd: str | None = None,
    chunk_size: int | None = None,
    block_e: int | None = None,
    seq_block_e: int | None = None,
    seq_warps: int | None = None,
) -> torch.Tensor:
    """Selective scan on the Triton kernels; differentiable in every tensor argument.

    Args:
        u, delta, z: (B, E, L), any strides (channels-last views are read in place by the
            sequential forward). A: (E, N). B, C: (B, N, L), any strides. D, delta_bias: (E,).
        delta_softplus: apply softplus (identity above 20) to ``delta + delta_bias``.
        fwd: forward kernel, "seq" (token by token inside each chunk) or "assoc" (associative scan
            over each chunk); None reads ALGNET_TRITON_FWD, default "seq". Backward is the same.
        chunk_size: tokens per program and between saved states, in every kernel (a power of two;
            default CHUNK).
        block_e: channels per program of the associative kernels and of backward (a power of two;
            default BLOCK_E, capped at E's next power).
        seq_block_e: channels per program of the sequential forward (a power of two; default
            SEQ_BLOCK_E, capped at E's next power).
        seq_warps: warps per program of the sequential forward (a power of two; default
            seq_block_e // 32, at least 1: one thread per channel).

    Returns:
        y (B, E, L) in u's dtype and u's layout (channels-last when u is), computed in float32
        (float64 if any input is float64).
    """
    ok, reason = is_available(u.device)
    if not ok:
        raise RuntimeError(f"the triton scan backend cannot run here: {reason}")
    fwd = (fwd or os.environ.get(FWD_ENV_VAR) or "seq").lower()
    if fwd not in FWD_KERNELS:
        raise ValueError(f"unknown triton forward kernel {fwd!r} (fwd= or {FWD_ENV_VAR}); choose seq or assoc")
    channels = _next_pow2(u.shape[1])
    seq_block = _pow2("seq_block_e", seq_block_e or min(SEQ_BLOCK_E, channels))
    cfg = _Config(
        chunk=_pow2("chunk_size", chunk_size or CHUNK),
        block=_pow2("block_e", block_e or min(BLOCK_E, channels)),
        fwd=fwd,
        seq_block=seq_block,
        seq_warps=_pow2("seq_warps", seq_warps or max(1, seq_block // 32)),
    )
    return _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), cfg)


class _Config(NamedTuple):
    chunk: int  # tokens per program and between saved states
    block: int  # channels per program: associative kernels, backward, carry
    fwd: str  # "seq" or "assoc"
    seq_block: int  # channels per program of the sequential forward
    seq_warps: int


def _pow2(name: str, value: int) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two, got {value}")
    return int(value)


def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, cfg):
        # The sequential kernel takes any strides of the (B, E, L) and (B, N, L) tensors; the
        # associative ones and backward need them contiguous. A, D and the bias are tiny.
        big = (u, delta, B, C, z)
        if cfg.fwd == "assoc":
            u, delta, B, C, z = (None if t is None else t.contiguous() for t in big)
        A, D, delta_bias = (None if t is None else t.contiguous() for t in (A, D, delta_bias))
        with torch.cuda.device(u.device) if u.is_cuda else contextlib.nullcontext():
            y, hin, dtsum = _forward(u, delta, A, B, C, D, z, delta_bias, softplus, cfg)
        # Saved as given: the copies for backward are made there, only when a backward runs.
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, hin, dtsum)
        ctx.cfg = (softplus, cfg.chunk, cfg.block)
        return y

    @staticmethod
    def backward(ctx, dy):
        *tensors, hin, dtsum = ctx.saved_tensors
        tensors = [None if t is None else t.contiguous() for t in tensors]
        with torch.cuda.device(dy.device) if dy.is_cuda else contextlib.nullcontext():
            grads = _backward(*tensors, hin, dtsum, dy.contiguous(), *ctx.cfg)
        return (*grads, None, None)


def _acc_dtype(*tensors):
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _forward(u, delta, A, B, C, D, z, delta_bias, softplus, cfg):
    """Runs the three forward passes; returns y, the states entering each chunk and the step sums."""
    k = _kernels(_interpret())
    batch, channels, length = u.shape
    nstate = A.shape[1]
    acc = _acc_dtype(u, delta, A, B, C, D, z, delta_bias)
    y = _empty_in_layout(u)
    n_chunks = max(1, -(-length // cfg.chunk))
    hin = u.new_zeros(batch, n_chunks, channels, nstate, dtype=acc)  # (B, K, E, N)
    dtsum = u.new_zeros(batch, n_chunks, channels, dtype=acc)  # (B, K, E)
    if length == 0:
        return y, hin, dtsum
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                 CHUNK=cfg.chunk, ACC=_tl_dtype(acc))
    dummy = hin  # stands in for absent optional tensors; never read when its flag is off
    args = (u, delta, A, B, C, _or(D, dummy), _or(z, dummy), _or(delta_bias, dummy), y)
    if cfg.fwd == "seq":
        grid = (n_chunks, -(-channels // cfg.seq_block), batch)
        z_strides = z.stride() if z is not None else (0, 0, 0)
        strides = (*u.stride(), *delta.stride(), *z_strides, *y.stride(), *B.stride(), *C.stride())

        def scan(hend, local):
            k.scan_seq[grid](*args, hin, hend, dtsum, channels, length, nstate, *strides, LOCAL=local,
                             BLOCK_E=cfg.seq_block, NP=_next_pow2(nstate), num_warps=cfg.seq_warps, **flags)
    else:
        grid = (n_chunks, -(-channels // cfg.block), batch)

        def scan(hend, local):
            k.scan_fwd[grid](*args, hin, hend, dtsum, channels, length, nstate, LOCAL=local, BLOCK_E=cfg.block,
                             num_warps=_warps(cfg.block, cfg.chunk), **flags)
    if n_chunks > 1:
        hend = torch.empty_like(hin)
        scan(hend, local=True)
        block, group = (SEQ_CARRY_BLOCK_E, SEQ_CARRY_GROUP) if cfg.fwd == "seq" else (cfg.block, CARRY_GROUP)
        k.carry[(-(-channels // block), batch)](
            A, dtsum, hend, hin, channels, n_chunks, nstate, REVERSE=False, GROUP=group, BLOCK_E=block,
            NP=_next_pow2(nstate), ACC=_tl_dtype(acc), num_warps=4)
    scan(hin, local=False)
    return y, hin, dtsum


def _empty_in_layout(u: torch.Tensor) -> torch.Tensor:
    """An empty (B, E, L) tensor laid out like u: channels-last when u's channel stride is the smaller."""
    batch, channels, length = u.shape
    if u.stride(1) < u.stride(2):
        return u.new_empty(batch, length, channels).transpose(1, 2)
    return u.new_empty(batch, channels, length)


def _backward(u, delta, A, B, C, D, z, delta_bias, hin, dtsum, dy, softplus, chunk, block):
    """Returns the gradients of (u, delta, A, B, C, D, z, delta_bias), None for absent ones."""
    k = _kernels(_interpret())
    batch, channels, length = u.shape
    nstate = A.shape[1]
    acc = hin.dtype
    n_chunks = hin.shape[1]
    n_blocks = -(-channels // block)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    # Partial sums, reduced below in a fixed order (deterministic, no atomics).
    db_part = u.new_empty(batch, n_blocks, nstate, length, dtype=acc)  # (B, E/BLOCK_E, N, L)
    dc_part = torch.empty_like(db_part)
    da_part = u.new_empty(batch, n_chunks, channels, nstate, dtype=acc)  # (B, K, E, N)
    dd_part = u.new_zeros(batch, n_chunks, channels, dtype=acc)  # (B, K, E)
    dbias_part = torch.zeros_like(dd_part)
    gin = torch.zeros_like(hin)  # gradient entering each chunk from its right
    if length > 0:
        grid = (n_chunks, n_blocks, batch)
        common = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                      BLOCK_E=block, CHUNK=chunk, ACC=_tl_dtype(acc), num_warps=_warps(block, chunk))
        dummy = hin
        args = (u, delta, A, B, C, _or(D, dummy), _or(z, dummy), _or(delta_bias, dummy))
        if n_chunks > 1:
            q = torch.empty_like(hin)
            k.grad_local[grid](*args, dy, q, channels, length, nstate, **common)
            k.carry[(n_blocks, batch)](A, dtsum, q, gin, channels, n_chunks, nstate, REVERSE=True, GROUP=CARRY_GROUP,
                                       BLOCK_E=block, NP=_next_pow2(nstate), ACC=_tl_dtype(acc), num_warps=4)
        k.scan_bwd[grid](*args, dy, hin, gin, du, ddelta, _or(dz, dummy), db_part, dc_part, da_part, dd_part,
                         dbias_part, channels, length, nstate, **common)
    else:
        db_part.zero_(), dc_part.zero_(), da_part.zero_()
    dA = da_part.sum((0, 1)).to(A.dtype)
    dB = db_part.sum(1).to(B.dtype)
    dC = dc_part.sum(1).to(C.dtype)
    dD = dd_part.sum((0, 1)).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, dB, dC, dD, dz, dbias


def _or(t, fallback):
    return fallback if t is None else t


def _warps(block: int, chunk: int) -> int:
    # 4 tile elements per thread: the backward keeps ~40 values per element live without spilling.
    return max(1, min(8, block * chunk // 128))


def _tl_dtype(dtype: torch.dtype):
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


@functools.lru_cache(maxsize=2)
def _define_kernels(interpret: bool):
    """Defines the kernels on first use, so importing this module needs no triton.

    ``triton.jit`` decides at definition time, from the environment, whether a kernel runs in the
    interpreter (TRITON_INTERPRET=1) or compiles for the GPU, hence one cached set per mode.

    The helpers and ``tl`` are module globals, not closure variables, so the kernels refer to them
    by global name (see ``_kernels``).
    """
    global tl, _affine, _softplus, _tile, _next_dt
    import triton
    import triton.language as tl

    # One compiled variant whatever the channel and state counts; L keeps Triton's divisibility
    # specialisation, which lets loads along the sequence vectorise.
    SHAPE_ARGS = ["E", "N"]

    @triton.jit
    def _affine(a1, b1, a2, b2):
        # Compose h -> a1 h + b1, then h -> a2 h + b2 (the earlier token on the left).
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _softplus(x):
        return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))

    @triton.jit
    def _tile(u_ptr, delta_ptr, bias_ptr, pid_k, pid_e, pid_b, E, L,
              HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr,
              ACC: tl.constexpr):
        """Offsets, masks, u and dt of one (BLOCK_E, CHUNK) tile; dt is 0 outside the sequence."""
        offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        offs_t = pid_k * CHUNK + tl.arange(0, CHUNK)
        mask_e = offs_e < E
        mask_t = offs_t < L
        mask = mask_e[:, None] & mask_t[None, :]
        base = pid_b.to(tl.int64) * E * L
        offs = base + offs_e[:, None].to(tl.int64) * L + offs_t[None, :]  # (BLOCK_E, CHUNK), u/delta/z/y
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(ACC)
        dt_raw = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(ACC)
        if HAS_BIAS:
            dt_raw += tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)[:, None]
        dt = dt_raw
        if SOFTPLUS:
            dt = _softplus(dt_raw)
        dt = tl.where(mask, dt, 0.0)
        return offs_e, offs_t, mask_e, mask_t, mask, offs, u, dt_raw, dt

    @triton.jit
    def _next_dt(delta_ptr, bias_ptr, offs, offs_e, offs_t, mask_e, L,
                 HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr):
        """dt_{t+1} inside the chunk, 0 at its last token (whose successor is the chunk carry)."""
        inner = (offs_t + 1 < L) & (tl.arange(0, CHUNK) < CHUNK - 1)
        mask = mask_e[:, None] & inner[None, :]
        dt = tl.load(delta_ptr + offs + 1, mask=mask, other=0.0).to(ACC)
        if HAS_BIAS:
            dt += tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        return tl.where(mask, dt, 0.0)

    @triton.jit(do_not_specialize=SHAPE_ARGS)
    def scan_fwd(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, hin_ptr, hend_ptr,
                 dtsum_ptr, E, L, N,
                 LOCAL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                 SOFTPLUS: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr):
        """LOCAL: end state of each chunk scanned from zero, and its step sum. Else: y from hin."""
        pid_k, pid_e, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_e, offs_t, mask_e, mask_t, mask, offs, u, dt_raw, dt = _tile(
            u_ptr, delta_ptr, bias_ptr, pid_k, pid_e, pid_b, E, L, HAS_BIAS, SOFTPLUS, BLOCK_E, CHUNK, ACC)
        n_chunks = tl.cdiv(L, CHUNK)
        state_offs = ((pid_b.to(tl.int64) * n_chunks + pid_k) * E + offs_e) * N  # (BLOCK_E,) in (B, K, E, N)
        bc_offs = pid_b.to(tl.int64) * N * L + offs_t  # (CHUNK,) in (B, N, L)
        dtu = dt * u
        y = tl.zeros([BLOCK_E, CHUNK], dtype=ACC)
        if LOCAL:
            # Only the end state is needed: h_end = sum_t exp(A * sum_{s>t} dt_s) dt_t u_t B_t, with
            # every exponent <= 0, so one exp and a sum per element instead of a scan.
            after = tl.cumsum(dt, axis=1, reverse=True) - dt  # (BLOCK_E, CHUNK) steps after token t
        for n in range(N):
            a_n = tl.load(A_ptr + offs_e * N + n, mask=mask_e, other=0.0).to(ACC)  # (BLOCK_E,)
            b_n = tl.load(B_ptr + bc_offs + n * L, mask=mask_t, other=0.0).to(ACC)  # (CHUNK,)
            if LOCAL:
                hend = tl.sum(tl.exp(after * a_n[:, None]) * dtu * b_n[None, :], axis=1)
                tl.store(hend_ptr + state_offs + n, hend, mask=mask_e)
            else:
                decay, h = tl.associative_scan((tl.exp(dt * a_n[:, None]), dtu * b_n[None, :]), 1, _affine)
                h0 = tl.load(hin_ptr + state_offs + n, mask=mask_e, other=0.0)
                c_n = tl.load(C_ptr + bc_offs + n * L, mask=mask_t, other=0.0).to(ACC)
                y += (h + decay * h0[:, None]) * c_n[None, :]
        if LOCAL:
            tl.store(dtsum_ptr + (pid_b.to(tl.int64) * n_chunks + pid_k) * E + offs_e, tl.sum(dt, axis=1),
                     mask=mask_e)
        else:
            if HAS_D:
                y += tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)[:, None] * u
            if HAS_Z:
                zv = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
                y = y * zv * tl.sigmoid(zv)
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=SHAPE_ARGS + ["L"])
    def scan_seq(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, hin_ptr, hend_ptr, dtsum_ptr,
                 E, L, N, su_b, su_e, su_l, sd_b, sd_e, sd_l, sz_b, sz_e, sz_l, sy_b, sy_e, sy_l,
                 sB_b, sB_n, sB_l, sC_b, sC_n, sC_l,
                 LOCAL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                 SOFTPLUS: tl.constexpr, BLOCK_E: tl.constexpr, NP: tl.constexpr, CHUNK: tl.constexpr,
                 ACC: tl.constexpr):
        """scan_fwd's two passes, walking the chunk token by token with the state tile in registers.

        LOCAL: end state of the chunk from zero, and its step sum. Else: y from the entering state.
        The state is an (NP, BLOCK_E) tile, states down and channels across, in the compiler's
        default layout: one channel per thread with all its states, so the sum over n for y stays
        inside a thread. Per token, u/delta/z/y are BLOCK_E values (contiguous when the tensors
        are channels-last) and B_t, C_t are N values shared by the block (the compiler
        broadcasts them through shared memory); they are loaded one token ahead, so their latency
        overlaps the update.
        """
        pid_k, pid_e, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        offs_n = tl.arange(0, NP)
        mask_e = offs_e < E
        mask_n = offs_n < N
        t0 = pid_k * CHUNK
        n_tok = tl.minimum(L - t0, CHUNK)
        row = pid_b.to(tl.int64) * tl.cdiv(L, CHUNK) + pid_k
        state_row = (row * E + offs_e) * N  # (BLOCK_E,) in (B, K, E, N)
        # The (NP, BLOCK_E) tiles of A and of the entering state are assembled from one row per
        # state, not loaded as tiles: a tile load is contiguous along n, and the compiler may then
        # (Triton 3.6 does) spread n over a warp's lanes, which turns the sum over n for y into
        # 160 shuffles per token (sm_90). Selecting row n costs nothing: every register's n is
        # known at compile time. Masked states get A = 0 and h = 0, and B = C = 0 keeps them 0.
        A2 = tl.zeros([NP, BLOCK_E], dtype=ACC)
        h = tl.zeros([NP, BLOCK_E], dtype=ACC)
        for n in tl.static_range(NP):
            is_n = offs_n[:, None] == n
            m = mask_e & ((offs_e * 0 + n) < N)  # a vector comparison: the interpreter mishandles scalar masks
            A2 = tl.where(is_n, tl.load(A_ptr + offs_e * N + n, mask=m, other=0.0).to(ACC)[None, :], A2)
            if not LOCAL:
                h = tl.where(is_n, tl.load(hin_ptr + state_row + n, mask=m, other=0.0)[None, :], h)
        A2 = A2 * 1.4426950408889634  # exp(dt A) = exp2(dt A log2(e)): one multiply fewer per update
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)
        if HAS_D:
            d = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)
        b64, t64 = pid_b.to(tl.int64), t0.to(tl.int64)
        u_p = u_ptr + b64 * su_b + t64 * su_l + offs_e * su_e  # (BLOCK_E,) pointers at token t0
        d_p = delta_ptr + b64 * sd_b + t64 * sd_l + offs_e * sd_e
        z_p = z_ptr + b64 * sz_b + t64 * sz_l + offs_e * sz_e
        y_p = y_ptr + b64 * sy_b + t64 * sy_l + offs_e * sy_e
        B_p = B_ptr + b64 * sB_b + t64 * sB_l + offs_n * sB_n  # (NP,)
        C_p = C_ptr + b64 * sC_b + t64 * sC_l + offs_n * sC_n
        u_nx = tl.load(u_p, mask=mask_e, other=0.0)
        d_nx = tl.load(d_p, mask=mask_e, other=0.0)
        B_nx = tl.load(B_p, mask=mask_n, other=0.0)
        if not LOCAL:
            C_nx = tl.load(C_p, mask=mask_n, other=0.0)
            if HAS_Z:
                z_nx = tl.load(z_p, mask=mask_e, other=0.0)
        dtsum = tl.zeros([BLOCK_E], dtype=ACC)
        for i in tl.range(0, n_tok):
            u, dt, b = u_nx.to(ACC), d_nx.to(ACC), B_nx.to(ACC)
            if not LOCAL:
                c = C_nx.to(ACC)
                if HAS_Z:
                    zv = z_nx.to(ACC)
            # Next token's inputs; the last token loads itself again rather than leave the chunk.
            nxt = tl.minimum(i + 1, n_tok - 1)
            u_nx = tl.load(u_p + nxt * su_l, mask=mask_e, other=0.0)
            d_nx = tl.load(d_p + nxt * sd_l, mask=mask_e, other=0.0)
            B_nx = tl.load(B_p + nxt * sB_l, mask=mask_n, other=0.0)
            if not LOCAL:
                C_nx = tl.load(C_p + nxt * sC_l, mask=mask_n, other=0.0)
                if HAS_Z:
                    z_nx = tl.load(z_p + nxt * sz_l, mask=mask_e, other=0.0)
            if HAS_BIAS:
                dt += bias
            if SOFTPLUS:
                dt = _softplus(dt)
            dt = tl.where(mask_e, dt, 0.0)
            # dt >= 0 and A <= 0: the exponent is never positive.
            h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * b[:, None]
            if LOCAL:
                dtsum += dt
            else:
                y = tl.sum(h * c[:, None], axis=0)  # (BLOCK_E,)
                if HAS_D:
                    y += d * u
                if HAS_Z:
                    y = y * zv * tl.sigmoid(zv)
                tl.store(y_p + i * sy_l, y.to(y_ptr.dtype.element_ty), mask=mask_e)
        if LOCAL:
            for n in tl.static_range(NP):
                m = mask_e & ((offs_e * 0 + n) < N)
                tl.store(hend_ptr + state_row + n, tl.sum(tl.where(offs_n[:, None] == n, h, 0.0), axis=0), mask=m)
            tl.store(dtsum_ptr + row * E + offs_e, dtsum, mask=mask_e)

    @triton.jit(do_not_specialize=SHAPE_ARGS + ["K"])
    def carry(A_ptr, dtsum_ptr, val_ptr, out_ptr, E, K, N,
              REVERSE: tl.constexpr, GROUP: tl.constexpr, BLOCK_E: tl.constexpr, NP: tl.constexpr,
              ACC: tl.constexpr):
        """out[k] = carry entering chunk k, X <- exp(A S_k) X + val[k] over k (or in reverse).

        The walk over chunks is sequential, so it takes GROUP chunks per step: their loads are
        independent and an associative scan over the group combines them, which divides the
        chain of dependent memory round trips by GROUP (K is 7,200 for one 1280x720 layer).
        """
        pid_e, pid_b = tl.program_id(0), tl.program_id(1)
        offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        offs_n = tl.arange(0, NP)
        offs_g = tl.arange(0, GROUP)
        mask_en = (offs_e < E)[:, None] & (offs_n < N)[None, :]  # (BLOCK_E, NP)
        A = tl.load(A_ptr + offs_e[:, None] * N + offs_n[None, :], mask=mask_en, other=0.0).to(ACC)
        step = -1 if REVERSE else 1
        first = K - 1 if REVERSE else 0
        rows_base = pid_b.to(tl.int64) * K
        en = offs_e[:, None] * N + offs_n[None, :]  # (BLOCK_E, NP) offsets inside one (E, N) slice
        x = tl.zeros([BLOCK_E, NP], dtype=ACC)
        tl.store(out_ptr + (rows_base + first) * E * N + en, x, mask=mask_en)
        for g0 in range(0, K, GROUP):
            k = first + step * (g0 + offs_g)  # (GROUP,) chunks in walking order
            valid = (g0 + offs_g) < K
            rows = rows_base + k
            m3 = valid[:, None, None] & mask_en[None, :, :]
            tile = rows[:, None, None] * E * N + en[None, :, :]  # (GROUP, BLOCK_E, NP)
            s = tl.load(dtsum_ptr + rows[:, None] * E + offs_e[None, :], mask=valid[:, None] & (offs_e < E)[None, :],
                        other=0.0)  # (GROUP, BLOCK_E)
            decay = tl.exp(A[None, :, :] * s[:, :, None])
            v = tl.load(val_ptr + tile, mask=m3, other=0.0)
            # Out-of-range chunks load s = 0 and v = 0: identity maps that pass the state through.
            decay, v = tl.associative_scan((decay, v), 0, _affine)
            after = decay * x[None, :, :] + v  # state after each chunk of the group
            # The state after chunk k is the one entering the next chunk in walking order.
            nxt = (g0 + offs_g + 1) < K
            tl.store(out_ptr + tile + step * E * N, after, mask=nxt[:, None, None] & mask_en[None, :, :])
            x = tl.sum(tl.where((offs_g == GROUP - 1)[:, None, None], after, 0.0), axis=0)

    @triton.jit(do_not_specialize=SHAPE_ARGS)
    def grad_local(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dy_ptr, q_ptr, E, L, N,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                   BLOCK_E: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr):
        """q[k] = a_{t0} g_{t0}, with g run right to left from zero inside chunk k (t0 its first token).

        That is ``sum_t exp(A * sum_{s<=t} dt_s) ybar_t C_t``: one exp and a sum per element.
        """
        pid_k, pid_e, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_e, offs_t, mask_e, mask_t, mask, offs, u, dt_raw, dt = _tile(
            u_ptr, delta_ptr, bias_ptr, pid_k, pid_e, pid_b, E, L, HAS_BIAS, SOFTPLUS, BLOCK_E, CHUNK, ACC)
        ybar = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
        if HAS_Z:
            zv = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
            ybar = ybar * zv * tl.sigmoid(zv)
        n_chunks = tl.cdiv(L, CHUNK)
        state_offs = ((pid_b.to(tl.int64) * n_chunks + pid_k) * E + offs_e) * N
        bc_offs = pid_b.to(tl.int64) * N * L + offs_t
        upto = tl.cumsum(dt, axis=1)  # (BLOCK_E, CHUNK) steps up to and including token t
        for n in range(N):
            a_n = tl.load(A_ptr + offs_e * N + n, mask=mask_e, other=0.0).to(ACC)[:, None]
            c_n = tl.load(C_ptr + bc_offs + n * L, mask=mask_t, other=0.0).to(ACC)
            q = tl.sum(tl.exp(upto * a_n) * ybar * c_n[None, :], axis=1)
            tl.store(q_ptr + state_offs + n, q, mask=mask_e)

    @triton.jit(do_not_specialize=SHAPE_ARGS)
    def scan_bwd(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dy_ptr, hin_ptr, gin_ptr,
                 du_ptr, ddelta_ptr, dz_ptr, db_ptr, dc_ptr, da_ptr, dd_ptr, dbias_ptr, E, L, N,
                 HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                 BLOCK_E: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr):
        """All gradients of one tile; dB/dC/dA/dD/d bias as partial sums (per channel block or chunk)."""
        pid_k, pid_e, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_e, offs_t, mask_e, mask_t, mask, offs, u, dt_raw, dt = _tile(
            u_ptr, delta_ptr, bias_ptr, pid_k, pid_e, pid_b, E, L, HAS_BIAS, SOFTPLUS, BLOCK_E, CHUNK, ACC)
        dt_next = _next_dt(delta_ptr, bias_ptr, offs, offs_e, offs_t, mask_e, L, HAS_BIAS, SOFTPLUS, CHUNK, ACC)
        ybar = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
        if HAS_Z:
            zv = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
            ybar = ybar * zv * tl.sigmoid(zv)
        n_chunks = tl.cdiv(L, CHUNK)
        row = pid_b.to(tl.int64) * n_chunks + pid_k
        state_offs = (row * E + offs_e) * N  # (BLOCK_E,) in (B, K, E, N)
        bc_offs = pid_b.to(tl.int64) * N * L + offs_t  # (CHUNK,) in (B, N, L)
        part_offs = (pid_b.to(tl.int64) * tl.num_programs(1) + pid_e) * N * L + offs_t  # (CHUNK,) in (B, E/BLOCK_E, N, L)
        dtu = dt * u
        y = tl.zeros([BLOCK_E, CHUNK], dtype=ACC)  # C h before the D skip and the gate, for dz
        du = tl.zeros([BLOCK_E, CHUNK], dtype=ACC)
        ddt = tl.zeros([BLOCK_E, CHUNK], dtype=ACC)
        for n in range(N):
            a_n = tl.load(A_ptr + offs_e * N + n, mask=mask_e, other=0.0).to(ACC)[:, None]
            b_n = tl.load(B_ptr + bc_offs + n * L, mask=mask_t, other=0.0).to(ACC)[None, :]
            c_n = tl.load(C_ptr + bc_offs + n * L, mask=mask_t, other=0.0).to(ACC)[None, :]
            x = dtu * b_n
            decay, h = tl.associative_scan((tl.exp(dt * a_n), x), 1, _affine)
            h += decay * tl.load(hin_ptr + state_offs + n, mask=mask_e, other=0.0)[:, None]
            back, g = tl.associative_scan((tl.exp(dt_next * a_n), ybar * c_n), 1, _affine, reverse=True)
            g += back * tl.load(gin_ptr + state_offs + n, mask=mask_e, other=0.0)[:, None]
            y += h * c_n
            gdt = g * dt
            prev = h - x  # a_t h_{t-1}, exactly, without dividing by a_t
            du += gdt * b_n
            ddt += g * (a_n * prev + u * b_n)
            tl.store(dc_ptr + part_offs + n * L, tl.sum(ybar * h, axis=0), mask=mask_t)
            tl.store(db_ptr + part_offs + n * L, tl.sum(gdt * u, axis=0), mask=mask_t)
            tl.store(da_ptr + state_offs + n, tl.sum(gdt * prev, axis=1), mask=mask_e)
        if HAS_D:
            d = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)[:, None]
            y += d * u
            du += d * ybar
            tl.store(dd_ptr + row * E + offs_e, tl.sum(ybar * u, axis=1), mask=mask_e)
        if HAS_Z:
            # Reloaded rather than kept live through the state loop: registers are the bottleneck.
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
            zv = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
            sig_z = tl.sigmoid(zv)
            dz = dy * y * sig_z * (1.0 + zv * (1.0 - sig_z))
            tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
        if SOFTPLUS:
            ddt = tl.where(dt_raw > 20.0, ddt, ddt * tl.sigmoid(dt_raw))
        ddt = tl.where(mask, ddt, 0.0)
        if HAS_BIAS:
            tl.store(dbias_ptr + row * E + offs_e, tl.sum(ddt, axis=1), mask=mask_e)
        tl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddelta_ptr + offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)

    helpers = dict(tl=tl, _affine=_affine, _softplus=_softplus, _tile=_tile, _next_dt=_next_dt)
    return SimpleNamespace(scan_fwd=scan_fwd, scan_seq=scan_seq, carry=carry, grad_local=grad_local, scan_bwd=scan_bwd,
                           helpers=helpers)


def _kernels(interpret: bool):
    """The kernels for the current mode, with their helpers published in this module's globals.

    The interpreter re-executes each kernel's source against the module's globals and ignores
    closures; so does torch.compile (Inductor copies a user kernel, and the jit functions its code
    loads as globals, into a module of its own: a helper seen as a closure variable was left out,
    and the copy failed with a NameError, on an H200). Both must find ``tl`` and the helpers as
    globals, and a process that uses both modes must see the current mode's.
    """
    kernels = _define_kernels(interpret)
    globals().update(kernels.helpers)
    return kernels
