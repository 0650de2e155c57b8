"""Fused CPU selective scan: numba kernels, forward and backward, nothing to compile by hand.

The (E-block, N) state stays in L1 while the kernel streams over tokens; jobs are (batch, block of
channels) pairs run with ``numba.prange``, one job per thread where the batch is small. Per token a
whole block of channels is stepped, so ``B_t`` and ``C_t`` (shared by all channels) are read once
per block rather than once per channel. Choices that each paid here (DESIGN.md section 4):

- exp(dt*A) for float32 is 2^(dt * A log2 e) with log2 e folded into A once per job: a rounding
  instruction, a degree-5 polynomial for 2^r on [-1/2, 1/2] (a near-minimax fit with p(0) = 1 exactly,
  2e-7 relative error; an unconstrained fit's bias of 1e-7 per step raised the gradients' error 10x)
  and the exponent added to the polynomial's bits. LLVM vectorises it across N; the library exp is a
  scalar call (numba's SVML is absent from the PyPI wheels). float64 keeps ``np.exp2``/``np.exp``:
  it is the accuracy path used by tests and gradcheck.
- dt*A log2 e is clamped at -120 (2^-120 is zero to the state anyway) and float32 denormals are
  flushed to zero (on x86 by the FTZ/DAZ bits of MXCSR, set for each job and restored after it; elsewhere states
  below 1e-30 in code), so no denormal is ever carried from token to token (|A| x 100 with dt ~ 5,
  or u = 0, run at the normal speed).
- Per-job scratch is allocated before the ``prange`` and indexed by job, and the loop bodies index
  arrays directly (no row views or slices): numba's alias analysis then finds no alias and marks the
  arrays noalias, so LLVM drops its runtime overlap checks and keeps B_t, C_t in registers.
- Work per token per channel that is not the N loop (delta gather, bias + softplus, dt*u, the D
  skip, the silu(z) gate and its gradient, du/ddelta) runs as flat loops over a tile of tokens
  (forward, ``_TILE``) or a chunk (backward) in contiguous token-major scratch, vectorised over
  tokens and channels, before or after the recurrence. Inline per token it cost as much as the
  recurrence itself (scalar softplus and sigmoid with divisions).
- u, delta, z, dout, B, C (and the outputs) may have any strides: the Mamba layer hands channels-last
  views ``(B, L, E).transpose(1, 2)`` and slices of x_proj's output. Each reaches the kernels as a
  flat 1-D view of the memory it spans plus its element strides, so the copies into scratch index
  with unit stride where the memory has it and compile to vector loads (a 3-D any-layout array made
  LLVM emit gathers: the copies cost a third of the forward). They walk memory in address order
  whichever layout comes (a (B, E, L) tensor read channel-inner strides by 2^k bytes and thrashed
  L1), and prefetch the next tile (``llvm.prefetch``).
- N is a compile-time constant (one cached kernel per state size) and the kernels are compiled
  with ``-force-vector-width=16`` (512-bit vectors on AVX-512 machines; LLVM otherwise prefers
  256): +20-25% on the recurrence.
- Backward saves the state at every ``_CHUNK``-th token in forward, recomputes the chunk's states
  in backward and walks it in reverse; dB/dC are reduced over channels in per-job partial buffers
  summed in a fixed order, and the delta-bias and D gradients are summed in the kernel, so
  gradients are deterministic. A chunk's dB/dC partials build up token-major in L1 and are written
  out laid out as B and C are, so autograd copies neither (for (B, N, L) inputs it made two
  transposing copies per backward, ~8% of it at L = 65,536).

- Backward: ybar = dL/dy * silu(z) needs no state, so dC (a sum over channels of ybar h) is formed
  while the chunk's states are recomputed; the reverse walk uses
  ``sum_n g (A a h_prev + u B) = sum_n A (g a h_prev) + u sum_n g B`` to share products with dA and du.
  One exp serves both softplus and its derivative.

Measured, one thread (B=1, E=64, N=32, L=65,536, float32, delta_softplus, z; side by side in one
process, the second core busy): forward 2.5e9 -> 3.0e9 state updates/s and forward+backward
0.54e9 -> 0.63e9 for the flat views, the 2^x exp and the backward rearrangement together. In one
thread's forward the recurrence takes ~33 ms of ~45 and the copies and flat loops the rest; in
backward, the copies into scratch and out of it cost ~35 ms of ~165, much of it first-touch page
faults on the freshly allocated outputs.

Glossary as in :mod:`.scan_ref`: B batch, E channels, N state size, L tokens.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import warnings

import torch

_CHUNK = 128  # tokens between saved states; the recomputed chunk (h and a) stays in L2
_TILE = 64  # tokens of B and C copied token-major at a time, so no (B, L, N) copy is made
_PREFETCH = 128  # tokens ahead
_FWD_BLOCK = 64  # channels stepped together per token in forward
_kernels: dict = {}


def is_available(device: torch.device) -> tuple[bool, str]:
    """The cpu backend runs on CPU tensors when numba imports."""
    if torch.device(device).type != "cpu":
        return False, "it runs on CPU tensors only"
    try:
        import numba  # noqa: F401
    except ImportError as err:
        return False, f"numba is not installed ({err}); pip install numba"
    return True, ""


def _select_threading_layer() -> None:
    """Uses numba's 'workqueue' threads unless the user chose a layer (NUMBA_THREADING_LAYER).

    Measured here: with numba's 'omp' layer, every torch conv2d after the first numba kernel ran
    100-250x slower (0.13 ms -> 19-38 ms for a small conv, one torch thread), and numba reset
    torch's thread count; 'workqueue' leaves torch's OpenMP pool alone and the scan as fast.
    """
    import numba

    if not os.environ.get("NUMBA_THREADING_LAYER"):
        numba.config.THREADING_LAYER = "workqueue"


_COMPILE_NOTICE = ("algnet: compiling CPU kernels, once per machine (a minute or two; later runs load them "
                   "from numba's cache) ...")
_notice = {"installed": False, "said": False, "on_cold": None, "stderr_fd": None}


def _say_when_compiling() -> None:
    """Prints :data:`_COMPILE_NOTICE` to stderr once per process, when numba starts compiling one of
    algnet's kernels: loading one from numba's on-disk cache says nothing."""
    from numba.core import event

    if _notice["installed"]:
        return

    class Listener(event.Listener):
        def on_start(self, ev):
            func = getattr((ev.data or {}).get("dispatcher"), "py_func", None)
            if not getattr(func, "__module__", "").startswith("algnet."):
                return
            if not _notice["said"]:
                _notice["said"] = True
                sys.stderr.flush()
                # fd 2 may be pointed at /dev/null for the compile (see _build): write to the real one.
                os.write(_notice["stderr_fd"] if _notice["stderr_fd"] is not None else 2, (_COMPILE_NOTICE + "\n").encode())
            on_cold, _notice["on_cold"] = _notice["on_cold"], None
            if on_cold is not None:
                on_cold()

        def on_end(self, ev):
            pass

    event.register("numba:compile", Listener())
    _notice["installed"] = True


def _build(dtype, nstate: int | None, kind: str):
    """Compiles (or loads from numba's cache) one kernel: ``kind`` ``fwd`` or ``bwd`` for one dtype
    and state size, or ``conv`` (``nstate=None``), the causal conv1d. Only what a call needs is
    built: inference never compiles the backward.

    The state size is a compile-time constant of the forward's inner loop (fully unrolled, no
    remainder loop).
    """
    import numba
    import numpy as np
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.extending import intrinsic, overload

    _select_threading_layer()
    _say_when_compiling()
    # LLVM vectorises a loop only if it needs at most 8 runtime pointer-overlap checks by default;
    # the backward's fused loop over N needs ~26, and scalar code there was 6x slower.
    import llvmlite.binding

    llvmlite.binding.set_option("", "-runtime-memory-check-threshold=64")
    width = os.environ.get("ALGNET_SCAN_VW", "16")
    if width:
        llvmlite.binding.set_option("", f"-force-vector-width={width}")

    @intrinsic
    def _as_float32(typingctx, bits):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    @intrinsic
    def _prefetch(typingctx, arr, i):  # hint: fetch the cache line of arr[i] (never faults)
        def codegen(context, builder, signature, args):
            from numba.core import cgutils

            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.gep(ary.data, [context.cast(builder, args[1], signature.args[1], types.intp)])
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(arr, i), codegen

    @intrinsic
    def _as_int32(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))

        return types.int32(types.float32), codegen

    def _exp2_neg(x):  # 2^x for x <= 0
        pass

    @overload(_exp2_neg, inline="always")
    def _exp2_neg_impl(x):
        if x == types.float32:
            # Near-minimax degree-5 fit of 2^r on [-1/2, 1/2]: 2.3e-7 relative error evaluated in float32.
            c0, c1, c2, c3, c4, c5 = (np.float32(c) for c in (1.0, 0.6931470036506653, 0.24022242426872253,
                                                               0.05550733581185341, 0.009671512991189957, 0.001326472731307149))
            lo = np.float32(-120.0)

            def impl(x):
                x = max(x, lo)  # 2^-120 ~ 8e-37: below it the state is zero to float32 anyway
                kf = np.rint(x)  # one rounding instruction, not a library call
                k = np.int32(kf)
                r = x - kf  # |r| <= 1/2, exactly
                p = c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * c5))))
                return _as_float32(_as_int32(p) + (k << np.int32(23)))  # p * 2^k, by the exponent bits

            return impl
        return lambda x: np.exp2(x)

    def _ln2_log2e(zero):  # (ln 2, log2 e) in zero's type
        pass

    @overload(_ln2_log2e, inline="always")
    def _ln2_log2e_impl(zero):
        ln2, log2e = math.log(2.0), 1.0 / math.log(2.0)
        if zero == types.float32:
            ln2_32, log2e_32 = np.float32(ln2), np.float32(log2e)
            return lambda zero: (ln2_32, log2e_32)
        return lambda zero: (ln2, log2e)

    def _exp_neg(x):  # exp of x <= 0
        pass

    @overload(_exp_neg, inline="always")
    def _exp_neg_impl(x):
        if x == types.float32:
            log2e = np.float32(1.4426950408889634)
            return lambda x: _exp2_neg(x * log2e)
        return lambda x: np.exp(x)

    def _log1p_unit(y):  # log(1 + y) for 0 <= y <= 1
        pass

    @overload(_log1p_unit, inline="always")
    def _log1p_unit_impl(y):
        if y == types.float32:
            two = np.float32(2.0)
            c0, c1, c2, c3, c4, c5, c6 = (np.float32(2.0 / k) for k in (1, 3, 5, 7, 9, 11, 13))

            def impl(y):
                s = y / (two + y)  # log(1+y) = 2 atanh(s), 0 <= s <= 1/3
                s2 = s * s
                return s * (c0 + s2 * (c1 + s2 * (c2 + s2 * (c3 + s2 * (c4 + s2 * (c5 + s2 * c6))))))

            return impl
        return lambda y: np.log1p(y)

    def _softplus_and_grad(x):  # (F.softplus(x), its derivative): identity above 20, one exp
        pass

    @overload(_softplus_and_grad, inline="always")
    def _softplus_and_grad_impl(x):
        twenty, zero, one = (np.float32(20.0), np.float32(0.0), np.float32(1.0)) if x == types.float32 else (20.0, 0.0, 1.0)

        def impl(x):  # typed constants: an integer one would promote float32 to float64
            e = _exp_neg(-abs(x))
            r = one / (one + e)  # sigmoid(|x|)
            sp = max(x, zero) + _log1p_unit(e)
            sg = e * r if x < zero else r
            if x > twenty:
                sp, sg = x, one
            return sp, sg

        return impl

    def _softplus(x):  # F.softplus: identity above 20
        pass

    @overload(_softplus, inline="always")
    def _softplus_impl(x):
        twenty, zero = (np.float32(20.0), np.float32(0.0)) if x == types.float32 else (20.0, 0.0)

        def impl(x):  # typed constants: an integer one would promote float32 to float64
            e = _exp_neg(-abs(x))
            return x if x > twenty else max(x, zero) + _log1p_unit(e)

        return impl

    def _sigmoid(x):
        pass

    @overload(_sigmoid, inline="always")
    def _sigmoid_impl(x):
        one = np.float32(1.0) if x == types.float32 else 1.0

        def impl(x):
            e = _exp_neg(-abs(x))
            r = one / (one + e)
            if x < 0:
                r = e * r
            return r

        return impl

    # float32 denormals: on x86 the kernels set the FTZ and DAZ bits of MXCSR for the duration of each
    # job (restored after it), so the hardware flushes them; elsewhere each state is flushed in code.
    ftz = platform.machine().lower() in ("x86_64", "amd64")

    def _flush(h):
        pass

    @overload(_flush, inline="always")
    def _flush_impl(h):
        if h == types.float32 and not ftz:
            tiny, zero = np.float32(1e-30), np.float32(0.0)
            return lambda h: h if abs(h) >= tiny else zero
        return lambda h: h

    def _mxcsr(builder, value=None):  # reads MXCSR, or writes value to it
        from numba.core import cgutils

        slot = cgutils.alloca_once(builder, ir.IntType(32))
        if value is not None:
            builder.store(value, slot)
        name = "llvm.x86.sse.stmxcsr" if value is None else "llvm.x86.sse.ldmxcsr"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [slot.type]), name)
        builder.call(fn, [slot])
        return builder.load(slot)

    @intrinsic
    def _ftz_enter(typingctx):  # sets FTZ | DAZ; returns the previous MXCSR
        def codegen(context, builder, signature, args):
            old = _mxcsr(builder)
            _mxcsr(builder, builder.or_(old, ir.Constant(ir.IntType(32), 0x8040)))
            return old

        return types.int32(), codegen

    @intrinsic
    def _ftz_leave(typingctx, old):
        def codegen(context, builder, signature, args):
            _mxcsr(builder, args[0])
            return context.get_dummy_value()

        return types.void(types.int32), codegen

    def _denormals_off(zero):
        pass

    @overload(_denormals_off, inline="always")
    def _denormals_off_impl(zero):
        if zero == types.float32 and ftz:
            return lambda zero: _ftz_enter()
        return lambda zero: np.int32(0)

    def _denormals_restore(zero, old):
        pass

    @overload(_denormals_restore, inline="always")
    def _denormals_restore_impl(zero, old):
        if zero == types.float32 and ftz:
            return lambda zero, old: _ftz_leave(old)
        return lambda zero, old: None

    # (B, E, L) and (B, N, L) tensors reach the kernels as flat 1-D views of their memory plus element
    # strides (rows of ``st``): the copies below then index with unit stride where the memory has it,
    # and LLVM emits plain vector loads (a 3-D 'A'-layout array made it emit gathers).
    def _gather(src, st, r, b, e0, t0, ne, nt, si, sj, dst, jb, tp):
        pass

    @overload(_gather, inline="always")
    def _gather_impl(src, st, r, b, e0, t0, ne, nt, si, sj, dst, jb, tp):
        # src[b, e0 + j, t0 + i] -> dst[jb, i * si + j * sj]; prefetches the same rows from token tp on
        # (a later tile: the memory latency, not the copy, was the cost). The scratch layout follows
        # u's memory (si == 1 for token-inner u), so the copy is contiguous on both sides.
        def impl(src, st, r, b, e0, t0, ne, nt, si, sj, dst, jb, tp):
            sb, se, sl = np.uint64(st[r, 0]), np.uint64(st[r, 1]), np.uint64(st[r, 2])
            usi, usj, une, unt = np.uint64(si), np.uint64(sj), np.uint64(ne), np.uint64(nt)
            base = np.uint64(b) * sb + np.uint64(e0) * se
            ut0, utp = np.uint64(t0), np.uint64(tp)
            if sl <= se:  # walk memory in order (a 2^k stride thrashes L1)
                for j in range(une):
                    row = base + j * se
                    for i in range(0, unt, 16):
                        _prefetch(src, row + (utp + i) * sl)
                    o = j * usj
                    if sl == 1 and si == 1:
                        for i in range(unt):
                            dst[jb, o + i] = src[row + ut0 + i]
                    else:
                        for i in range(unt):
                            dst[jb, o + i * usi] = src[row + (ut0 + i) * sl]
            else:
                for i in range(unt):
                    col = base + (ut0 + i) * sl
                    for j in range(0, une, 16):
                        _prefetch(src, base + (utp + i) * sl + j * se)
                    o = i * usi
                    if se == 1 and sj == 1:
                        for j in range(une):
                            dst[jb, o + j] = src[col + j]
                    else:
                        for j in range(une):
                            dst[jb, o + j * usj] = src[col + j * se]

        return impl

    def _scatter(dst, st, r, b, e0, t0, ne, nt, si, sj, src, jb, tp):
        pass

    @overload(_scatter, inline="always")
    def _scatter_impl(dst, st, r, b, e0, t0, ne, nt, si, sj, src, jb, tp):
        def impl(dst, st, r, b, e0, t0, ne, nt, si, sj, src, jb, tp):  # src[jb, i * si + j * sj] -> dst[b, e0 + j, t0 + i]
            sb, se, sl = np.uint64(st[r, 0]), np.uint64(st[r, 1]), np.uint64(st[r, 2])
            usi, usj, une, unt = np.uint64(si), np.uint64(sj), np.uint64(ne), np.uint64(nt)
            base = np.uint64(b) * sb + np.uint64(e0) * se
            ut0, utp = np.uint64(t0), np.uint64(tp)
            if sl <= se:
                for j in range(une):
                    row = base + j * se
                    for i in range(0, unt, 16):
                        _prefetch(dst, row + (utp + i) * sl)
                    o = j * usj
                    if sl == 1 and si == 1:
                        for i in range(unt):
                            dst[row + ut0 + i] = src[jb, o + i]
                    else:
                        for i in range(unt):
                            dst[row + (ut0 + i) * sl] = src[jb, o + i * usi]
            else:
                for i in range(unt):
                    col = base + (ut0 + i) * sl
                    for j in range(0, une, 16):
                        _prefetch(dst, base + (utp + i) * sl + j * se)
                    o = i * usi
                    if se == 1 and sj == 1:
                        for j in range(une):
                            dst[col + j] = src[jb, o + j]
                    else:
                        for j in range(une):
                            dst[col + j * se] = src[jb, o + j * usj]

        return impl

    def _project(src, st, b, e0, t0, ne, nt, si, sj, w, dst, jb):
        pass

    @overload(_project, inline="always")
    def _project_impl(src, st, b, e0, t0, ne, nt, si, sj, w, dst, jb):
        # dst[jb, i * si + j * sj] = sum_r src[b, r, t0 + i] * w[r, e0 + j]: the delta of a tile from
        # Mamba's low-rank dt (B, R, L) and dt_proj's weight (R, E), so the (B, E, L) delta is never stored.
        def impl(src, st, b, e0, t0, ne, nt, si, sj, w, dst, jb):
            sb, sr, sl = np.uint64(st[1, 0]), np.uint64(st[1, 1]), np.uint64(st[1, 2])
            usi, usj, une = np.uint64(si), np.uint64(sj), np.uint64(ne)
            ue0 = np.uint64(e0)
            for i in range(np.uint64(nt)):
                o = i * usi
                row = np.uint64(b) * sb + (np.uint64(t0) + i) * sl
                v = src[row]
                for j in range(une):
                    dst[jb, o + j * usj] = v * w[0, ue0 + j]
                for r in range(1, w.shape[0]):
                    v = src[row + np.uint64(r) * sr]
                    for j in range(une):
                        dst[jb, o + j * usj] += v * w[r, ue0 + j]

        return impl

    def _load_tile(Bm, Cm, st, b, t0, Btile, Ctile, jb, tp):
        pass

    @overload(_load_tile, inline="always")
    def _load_tile_impl(Bm, Cm, st, b, t0, Btile, Ctile, jb, tp):
        def impl(Bm, Cm, st, b, t0, Btile, Ctile, jb, tp):  # B, C (B, N, L) from token t0 into (jb, tile, N)
            nt = np.uint64(min(Btile.shape[1], st[9, 2] - t0))
            nN = np.uint64(Btile.shape[2])
            ub, ut0, utp = np.uint64(b), np.uint64(t0), np.uint64(tp)
            bb, bn, bl = ub * np.uint64(st[3, 0]), np.uint64(st[3, 1]), np.uint64(st[3, 2])
            cb, cn, cl = ub * np.uint64(st[4, 0]), np.uint64(st[4, 1]), np.uint64(st[4, 2])
            if bn < bl:  # token-major memory (the Mamba layer's x_proj split)
                for i in range(nt):
                    for n in range(nN):
                        Btile[jb, i, n] = Bm[bb + n * bn + (ut0 + i) * bl]
                        Ctile[jb, i, n] = Cm[cb + n * cn + (ut0 + i) * cl]
            else:
                for n in range(nN):
                    for i in range(0, nt, 16):
                        _prefetch(Bm, bb + n * bn + (utp + i) * bl)
                        _prefetch(Cm, cb + n * cn + (utp + i) * cl)
                    for i in range(nt):
                        Btile[jb, i, n] = Bm[bb + n * bn + (ut0 + i) * bl]
                    for i in range(nt):
                        Ctile[jb, i, n] = Cm[cb + n * cn + (ut0 + i) * cl]

        return impl

    def _write_part(part, loc, blk, b, t0, nt, jb, token_major):
        pass

    @overload(_write_part, inline="always")
    def _write_part_impl(part, loc, blk, b, t0, nt, jb, token_major):
        # A chunk's dB or dC partial (token-major scratch) into the channel block's partial, laid out as
        # B (or C) is: (blk, B, L, N) for token-major memory, else (blk, B, N, L), so autograd gets a
        # gradient in its input's layout and copies nothing.
        def impl(part, loc, blk, b, t0, nt, jb, token_major):
            nN = loc.shape[2]
            if token_major:
                for i in range(nt):
                    for n in range(nN):
                        part[blk, b, t0 + i, n] = loc[jb, i, n]
            else:
                for n in range(nN):
                    for i in range(nt):
                        part[blk, b, n, t0 + i] = loc[jb, i, n]

        return impl

    NCONST = nstate  # a closure constant: numba compiles (and caches) one kernel per value

    def fwd(u, delta, A, Bm, Cm, D, z, dbias, softplus, has_z, y, states, chunk, eb, zero, st, dtw, hs):
        nb, E, L = st[9, 0], st[9, 1], st[9, 2]
        N = A.shape[1]
        nN = NCONST
        _, log2e = _ln2_log2e(zero)
        nblk = (E + eb - 1) // eb
        njob = nb * nblk
        save = states.shape[1] > 0
        # Per-job scratch is allocated here and indexed by job, never through row views or slices:
        # then numba finds no alias in the prange body and marks the arrays noalias, and LLVM keeps
        # B_t, C_t in registers across channels instead of re-checking overlaps (+10-15%). The
        # (njob, m) scratch is np.empty, zeroed by each job: under parallel=True every np.zeros is a
        # parallel loop of its own, one more wake-up of the thread pool per array per call. (The
        # same for h, Ab, Btile, Ctile timed ~7% slower at L = 65,536, side by side in fresh
        # processes, for no reason found; they stay np.zeros.)
        m = _TILE * eb
        h = np.zeros((njob, eb, N), dtype=A.dtype)
        Ab = np.zeros((njob, eb, N), dtype=A.dtype)
        dts = np.empty((njob, m), dtype=A.dtype)  # (i * si + j * sj) scratch of the tile, laid out as u
        dtus = np.empty((njob, m), dtype=A.dtype)
        us = np.empty((njob, m), dtype=A.dtype)
        ys = np.empty((njob, m), dtype=A.dtype)
        zs = np.empty((njob, m), dtype=A.dtype)
        Dv = np.empty((njob, m), dtype=A.dtype)
        bias = np.empty((njob, m), dtype=A.dtype)
        Btile = np.zeros((njob, _TILE, N), dtype=A.dtype)  # token-major copies of B and C
        Ctile = np.zeros((njob, _TILE, N), dtype=A.dtype)
        for job in prange(njob):
            csr = _denormals_off(zero)
            for k in range(m):
                dts[job, k] = dtus[job, k] = us[job, k] = ys[job, k] = zs[job, k] = Dv[job, k] = bias[job, k] = zero
            b = job // nblk
            e0 = (job - b * nblk) * eb
            ne = min(e0 + eb, E) - e0
            si, sj = (1, _TILE) if st[0, 2] <= st[0, 1] else (eb, 1)  # scratch layout: u's
            for j in range(ne):
                for n in range(nN):
                    Ab[job, j, n] = A[e0 + j, n] * log2e  # exp(dt A) = 2^(dt A log2 e)
            if hs.shape[0] > 0:  # the state a previous piece of the sequence ended in
                for j in range(ne):
                    for n in range(nN):
                        h[job, j, n] = hs[b, e0 + j, n]
            for i in range(_TILE):
                for j in range(ne):
                    Dv[job, i * si + j * sj] = D[e0 + j]
                    bias[job, i * si + j * sj] = dbias[e0 + j]
            for t0 in range(0, L, _TILE):
                nt = min(_TILE, L - t0)
                if save and t0 % chunk == 0:
                    for j in range(ne):
                        for n in range(nN):
                            states[b, t0 // chunk, e0 + j, n] = h[job, j, n]
                tp = min(t0 + _PREFETCH, L - 1)
                _load_tile(Bm, Cm, st, b, t0, Btile, Ctile, job, tp)
                if dtw.shape[0] > 0:  # delta = dt_proj(low-rank dt), formed per tile
                    _project(delta, st, b, e0, t0, ne, nt, si, sj, dtw, dts, job)
                else:  # the tile's u, delta into contiguous scratch
                    _gather(delta, st, 1, b, e0, t0, ne, nt, si, sj, dts, job, tp)
                _gather(u, st, 0, b, e0, t0, ne, nt, si, sj, us, job, tp)
                if softplus:  # flat, branch-free loops: vectorised over tokens and channels
                    for k in range(m):
                        dt = _softplus(dts[job, k] + bias[job, k])
                        dts[job, k] = dt
                        dtus[job, k] = dt * us[job, k]
                else:
                    for k in range(m):
                        dt = dts[job, k] + bias[job, k]
                        dts[job, k] = dt
                        dtus[job, k] = dt * us[job, k]
                for i in range(nt):
                    for j in range(ne):
                        dt = dts[job, i * si + j * sj]
                        dtu = dtus[job, i * si + j * sj]
                        s = zero
                        for n in range(nN):
                            hv = _flush(_exp2_neg(dt * Ab[job, j, n]) * h[job, j, n] + dtu * Btile[job, i, n])
                            h[job, j, n] = hv
                            s += hv * Ctile[job, i, n]
                        ys[job, i * si + j * sj] = s
                if has_z:
                    _gather(z, st, 2, b, e0, t0, ne, nt, si, sj, zs, job, tp)
                    for k in range(m):
                        zz = zs[job, k]
                        ys[job, k] = (ys[job, k] + Dv[job, k] * us[job, k]) * zz * _sigmoid(zz)
                else:
                    for k in range(m):
                        ys[job, k] = ys[job, k] + Dv[job, k] * us[job, k]
                _scatter(y, st, 5, b, e0, t0, ne, nt, si, sj, ys, job, tp)
            if hs.shape[0] > 0:
                for j in range(ne):
                    for n in range(nN):
                        hs[b, e0 + j, n] = h[job, j, n]
            _denormals_restore(zero, csr)

    def bwd(u, delta, A, Bm, Cm, D, z, dbias, softplus, has_z, dout, states, chunk, eb, zero,
            du_out, ddelta_out, dz_out, dA_part, dD_part, dB_part, dC_part, dbias_part, st):
        nb, E, L = st[9, 0], st[9, 1], st[9, 2]
        N = A.shape[1]
        nN = NCONST
        nblk = (E + eb - 1) // eb
        njob = nb * nblk
        nchunks = (L + chunk - 1) // chunk
        one = zero + np.float32(1.0)  # the dtype of zero (an integer 1 would promote float32 to float64)
        ln2, log2e = _ln2_log2e(zero)
        # Per-job scratch indexed by job, no row views or slices in the prange body: numba then marks
        # every array noalias (see fwd). It is np.empty, zeroed by each job (except hbuf, whose rows
        # are written before they are read): under parallel=True every np.zeros is a parallel loop
        # of its own, one more wake-up of the thread pool per array per call (~0.15 ms each here).
        m = chunk * eb  # (i * si + j * sj) scratch of the chunk, laid out as u
        hbuf = np.empty((njob, chunk + 1, eb, N), dtype=A.dtype)  # hbuf[., i + 1] = h at token t0 + i
        Ab = np.empty((njob, eb, N), dtype=A.dtype)
        carry = np.empty((njob, eb, N), dtype=A.dtype)  # a_{t+1} * g_{t+1}
        dA_loc = np.empty((njob, eb, N), dtype=A.dtype)
        Btile = np.empty((njob, chunk, N), dtype=A.dtype)
        Ctile = np.empty((njob, chunk, N), dtype=A.dtype)
        dBl = np.empty((njob, chunk, N), dtype=A.dtype)  # the chunk's dB, dC partials, token-major in L1
        dCl = np.empty((njob, chunk, N), dtype=A.dtype)
        dts = np.empty((njob, m), dtype=A.dtype)
        dsp = np.empty((njob, m), dtype=A.dtype)  # softplus' (sigmoid of its input)
        us = np.empty((njob, m), dtype=A.dtype)
        dtus = np.empty((njob, m), dtype=A.dtype)
        ypre = np.empty((njob, m), dtype=A.dtype)  # y before the gate (for dz)
        gos = np.empty((njob, m), dtype=A.dtype)  # dL/dout, then dz
        zs = np.empty((njob, m), dtype=A.dtype)
        ybs = np.empty((njob, m), dtype=A.dtype)
        sgz = np.empty((njob, m), dtype=A.dtype)  # sigmoid(z)
        sgb = np.empty((njob, m), dtype=A.dtype)  # sum_n g*B, then du
        sdd = np.empty((njob, m), dtype=A.dtype)  # sum_n g*(A*a*h + u*B), then ddelta
        Dv = np.empty((njob, m), dtype=A.dtype)
        bias = np.empty((njob, m), dtype=A.dtype)
        dDv = np.empty((njob, m), dtype=A.dtype)
        dbv = np.empty((njob, m), dtype=A.dtype)  # ddelta summed over tokens: the delta bias' gradient
        for job in prange(njob):
            csr = _denormals_off(zero)
            for q in range(m):
                dts[job, q] = dsp[job, q] = us[job, q] = dtus[job, q] = ypre[job, q] = gos[job, q] = zero
                zs[job, q] = ybs[job, q] = sgz[job, q] = sgb[job, q] = sdd[job, q] = zero
                Dv[job, q] = bias[job, q] = dDv[job, q] = dbv[job, q] = zero
            for j in range(eb):
                for n in range(nN):
                    Ab[job, j, n] = carry[job, j, n] = dA_loc[job, j, n] = zero
            for i in range(chunk):
                for n in range(nN):
                    Btile[job, i, n] = Ctile[job, i, n] = dBl[job, i, n] = dCl[job, i, n] = zero
            b = job // nblk
            blk = job - b * nblk
            e0 = blk * eb
            ne = min(e0 + eb, E) - e0
            si, sj = (1, chunk) if st[0, 2] <= st[0, 1] else (eb, 1)  # scratch layout: u's
            for j in range(ne):
                for n in range(nN):
                    Ab[job, j, n] = A[e0 + j, n] * log2e  # exp(dt A) = 2^(dt A log2 e)
            for i in range(chunk):
                for j in range(ne):
                    Dv[job, i * si + j * sj] = D[e0 + j]
                    bias[job, i * si + j * sj] = dbias[e0 + j]
            for k in range(nchunks - 1, -1, -1):
                t0 = k * chunk
                nt = min(t0 + chunk, L) - t0
                tp = max(t0 - chunk, 0)  # prefetch the next chunk (walked in reverse)
                for j in range(ne):
                    for n in range(nN):
                        hbuf[job, 0, j, n] = states[b, k, e0 + j, n]
                _load_tile(Bm, Cm, st, b, t0, Btile, Ctile, job, tp)
                _gather(delta, st, 1, b, e0, t0, ne, nt, si, sj, dts, job, tp)
                _gather(u, st, 0, b, e0, t0, ne, nt, si, sj, us, job, tp)
                _gather(dout, st, 5, b, e0, t0, ne, nt, si, sj, gos, job, tp)
                if has_z:
                    _gather(z, st, 2, b, e0, t0, ne, nt, si, sj, zs, job, tp)
                if softplus:  # flat loops over the chunk: vectorised over tokens and channels
                    for q in range(m):
                        dt, dsp[job, q] = _softplus_and_grad(dts[job, q] + bias[job, q])
                        dts[job, q] = dt
                        dtus[job, q] = dt * us[job, q]
                else:
                    for q in range(m):
                        dt = dts[job, q] + bias[job, q]
                        dts[job, q] = dt
                        dsp[job, q] = one
                        dtus[job, q] = dt * us[job, q]
                if has_z:  # ybar = dL/dy * silu(z) needs no state: known before the recompute
                    for q in range(m):
                        zz = zs[job, q]
                        sg = _sigmoid(zz)
                        sgz[job, q] = sg
                        ybs[job, q] = gos[job, q] * zz * sg
                else:
                    for q in range(m):
                        ybs[job, q] = gos[job, q]
                for i in range(nt):  # recompute the chunk's states; dC needs only h and ybar
                    for n in range(nN):
                        dCl[job, i, n] = zero
                    for j in range(ne):
                        dt = dts[job, i * si + j * sj]
                        dtu = dtus[job, i * si + j * sj]
                        yb = ybs[job, i * si + j * sj]
                        acc = zero
                        for n in range(nN):
                            hv = _flush(_exp2_neg(dt * Ab[job, j, n]) * hbuf[job, i, j, n] + dtu * Btile[job, i, n])
                            hbuf[job, i + 1, j, n] = hv
                            acc += hv * Ctile[job, i, n]
                            dCl[job, i, n] += yb * hv
                        ypre[job, i * si + j * sj] = acc
                _write_part(dC_part, dCl, blk, b, t0, nt, job, st[4, 1] < st[4, 2])
                if has_z:  # the gate's gradient
                    for q in range(m):
                        zz = zs[job, q]
                        sg = sgz[job, q]
                        yp = ypre[job, q] + Dv[job, q] * us[job, q]
                        gos[job, q] = gos[job, q] * yp * sg * (one + zz * (one - sg))
                    _scatter(dz_out, st, 8, b, e0, t0, ne, nt, si, sj, gos, job, tp)
                for q in range(m):
                    dDv[job, q] += ybs[job, q] * us[job, q]
                for i in range(nt - 1, -1, -1):  # walk the chunk in reverse
                    for n in range(nN):
                        dBl[job, i, n] = zero
                    for j in range(ne):
                        q = i * si + j * sj
                        ybar = ybs[job, q]
                        dt = dts[job, q]
                        dtu = dtus[job, q]
                        s_gb = zero
                        s_ga = zero
                        for n in range(nN):
                            An = Ab[job, j, n]
                            g = ybar * Ctile[job, i, n] + carry[job, j, n]
                            a = _exp2_neg(dt * An)
                            gah = g * (a * hbuf[job, i, j, n])
                            s_ga += An * gah
                            s_gb += g * Btile[job, i, n]
                            dA_loc[job, j, n] += dt * gah
                            carry[job, j, n] = _flush(a * g)
                            dBl[job, i, n] += dtu * g
                        sgb[job, q] = s_gb
                        sdd[job, q] = s_ga
                _write_part(dB_part, dBl, blk, b, t0, nt, job, st[3, 1] < st[3, 2])
                for q in range(m):
                    s_gb = sgb[job, q]
                    sgb[job, q] = dts[job, q] * s_gb + Dv[job, q] * ybs[job, q]
                    sdd[job, q] = (ln2 * sdd[job, q] + us[job, q] * s_gb) * dsp[job, q]  # Ab holds A log2 e
                    dbv[job, q] += sdd[job, q]
                _scatter(du_out, st, 6, b, e0, t0, ne, nt, si, sj, sgb, job, tp)
                _scatter(ddelta_out, st, 7, b, e0, t0, ne, nt, si, sj, sdd, job, tp)
            for j in range(ne):
                acc = zero
                for i in range(chunk):
                    acc += dDv[job, i * si + j * sj]
                dD_part[b, e0 + j] = acc
                acc = zero
                for i in range(chunk):
                    acc += dbv[job, i * si + j * sj]
                dbias_part[b, e0 + j] = acc
                for n in range(nN):
                    dA_part[b, e0 + j, n] = dA_loc[job, j, n]
            _denormals_restore(zero, csr)

    def conv(x, sx, weight, bias, out, nb, L, tile):  # x[b * sx[0] + t * sx[1] + e]; out (B * L * E); weight (K, E)
        K, E = weight.shape
        nE = np.uint64(E)
        sb, sl = np.uint64(sx[0]), np.uint64(sx[1])
        ntiles = (L + tile - 1) // tile
        for job in prange(nb * ntiles):  # flat rows with unit stride over E: every loop below is vector code
            b = job // ntiles
            t0 = (job - b * ntiles) * tile
            for t in range(t0, min(t0 + tile, L)):
                o = np.uint64(b * L + t) * nE
                k0 = max(0, K - 1 - t)
                row = np.uint64(b) * sb + np.uint64(t - K + 1 + k0) * sl  # input row of tap k0
                for e in range(nE):
                    out[o + e] = bias[e] + weight[k0, e] * x[row + e]
                for k in range(k0 + 1, K):
                    row += sl
                    for e in range(nE):
                        out[o + e] += weight[k, e] * x[row + e]
                for e in range(nE):
                    v = out[o + e]
                    out[o + e] = v * _sigmoid(v)

    real = numba.from_dtype(np.dtype(dtype))
    arr3c, arr4c = types.Array(real, 3, "C"), types.Array(real, 4, "C")
    arr1, arr2 = types.Array(real, 1, "C"), types.Array(real, 2, "C")
    arr1a = types.Array(real, 1, "A")
    strides = types.Array(types.int64, 2, "C")
    common = (arr1, arr1, arr2, arr1, arr1, arr1a, arr1, arr1a, types.boolean, types.boolean)
    opts = dict(parallel=True, fastmath=True, cache=True, nogil=True)
    fwd_sig = types.void(*common, arr1, arr4c, types.intp, types.intp, real, strides, arr2, arr3c)
    bwd_sig = types.void(*common, arr1, arr4c, types.intp, types.intp, real, arr1, arr1, arr1, arr3c, arr2, arr4c, arr4c, arr2,
                         strides)
    with warnings.catch_warnings():  # numba's pedantic SSA note on the inlined branches; harmless
        warnings.simplefilter("ignore", numba.core.errors.NumbaIRAssumptionWarning)
        conv_sig = types.void(arr1, types.Array(types.int64, 1, "C"), arr2, arr1, arr1, types.intp, types.intp, types.intp)
        # A forced width makes LLVM print a 'loop not vectorized' remark to fd 2 for each loop that
        # keeps scalar code (allocations, strided copies): hide those while compiling.
        saved = os.dup(2) if width else None
        try:
            if saved is not None:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
                _notice["stderr_fd"] = saved
            func, sig = {"conv": (conv, conv_sig), "fwd": (fwd, fwd_sig), "bwd": (bwd, bwd_sig)}[kind]
            return njit(sig, **opts)(func)
        finally:
            if saved is not None:
                _notice["stderr_fd"] = None
                os.dup2(saved, 2)
                os.close(saved)
                llvmlite.binding.set_option("", "-force-vector-width=0")


def _get_kernel(dtype: torch.dtype, nstate: int | None, kind: str):
    """The ``fwd`` or ``bwd`` scan kernel for one dtype and state size, or (``nstate=None``) the
    ``conv`` kernel, which does not depend on it. Each is compiled on first use only: the forward
    and the backward take about a minute each on 2 cores the first time on a machine."""
    key = (dtype, nstate, kind)
    if key not in _kernels:
        import numpy as np

        _kernels[key] = _build(np.float32 if dtype == torch.float32 else np.float64, nstate, kind)
    return _kernels[key]


def prepare(model: torch.nn.Module) -> None:
    """Builds the kernels a model's CPU inference runs, before its first pass, two at a time.

    The forward scan for each state size of the model's Mamba layers is compiled (or loaded) here.
    When that is a cold compile (the first run on a machine), a second process compiles the causal
    conv1d and the block glue (:mod:`.glue_cpu`) at the same time into numba's cache, and this
    waits for it: the first pass then loads every kernel. Without the second process the compiles
    run one after the other, as the pass reaches them (about 50 s against 35 s on 2 cores).
    """
    from . import BackendUnavailable, resolve_backend

    def on_cpu_backend(layer) -> bool:
        try:
            return resolve_backend(layer.scan_backend, torch.device("cpu")) == "cpu"
        except BackendUnavailable:
            return False

    # Mamba layers and their deploy-time counterparts alike: whatever holds a d_state and a scan backend
    layers = [m for m in model.modules() if hasattr(m, "d_state") and hasattr(m, "scan_backend")]
    nstates = sorted({int(m.d_state) for m in layers if on_cpu_backend(m)})
    if not nstates or any(p.device.type != "cpu" for p in model.parameters()):
        return
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in model.parameters()) else torch.float32
    if all((dtype, n, "fwd") in _kernels for n in nstates):
        return
    import subprocess

    helper = []
    code = f"from algnet.ops.scan_cpu import _build_glue; _build_glue({str(dtype).split('.')[-1]!r})"
    _say_when_compiling()
    _notice["on_cold"] = lambda: helper.append(subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for n in nstates:
            _get_kernel(dtype, n, "fwd")
    finally:
        _notice["on_cold"] = None
        for proc in helper:  # if it failed, the pass compiles what is missing itself
            proc.wait()


def _build_glue(dtype_name: str) -> None:
    """Compiles (into numba's cache) the causal conv1d and the block glue kernels for one dtype, by
    running each once on a few numbers: :func:`prepare`'s second process."""
    from . import glue_cpu

    dtype = getattr(torch, dtype_name)
    x = torch.rand(1, 4, 3, 3, dtype=dtype)  # (B, C, H, W)
    w, b = torch.ones(4, dtype=dtype), torch.zeros(4, dtype=dtype)
    causal_conv1d_silu(torch.rand(1, 9, 4, dtype=dtype), torch.rand(4, 4, dtype=dtype), b)
    if glue_cpu.is_available()[0]:
        tokens = glue_cpu.layernorm_to_tokens(x, w, b, 1e-6)
        glue_cpu.layernorm2d(x, w, b, 1e-6)
        glue_cpu.aggregate_residual(x, tokens, x, w, w)


def _set_threads() -> None:
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _like_layout(u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An empty (B, E, L) tensor laid out channels-last when u is (a view of) (B, L, E) memory."""
    b, e, l = u.shape
    if u.stride(1) < u.stride(2):
        return torch.empty(b, l, e, dtype=dtype).transpose(1, 2)  # (B, E, L) view of (B, L, E)
    return torch.empty(b, e, l, dtype=dtype)


def _np(t: torch.Tensor | None):
    return None if t is None else t.detach().numpy()


def _flat(t: torch.Tensor):
    """A 1-D numpy view of the memory a (B, X, L) tensor spans, from its first element."""
    t = t.detach()
    if t.numel() == 0:
        return torch.zeros(1, dtype=t.dtype).numpy()
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return torch.as_strided(t, (span,), (1,)).numpy()


_STRIDE_ROWS = ("u", "delta", "z", "B", "C", "y", "du", "ddelta", "dz")


def _strides(nb: int, e: int, length: int, **tensors) -> "np.ndarray":
    """Element strides of each named (B, X, L) tensor as rows of an int64 array; the last row is (B, E, L)."""
    import numpy as np

    st = np.zeros((len(_STRIDE_ROWS) + 1, 3), dtype=np.int64)
    for name, t in tensors.items():
        st[_STRIDE_ROWS.index(name)] = t.stride() if t.dim() == 3 else (0, 0, 0)
    st[-1] = (nb, e, length)
    return st


def _prepare(u, delta, A, B, C, D, z, delta_bias, dtype):
    """Casts to the compute dtype; every (B, E, L) and (B, N, L) tensor keeps its strides."""
    e = u.shape[1]
    cast = lambda t: t if t.dtype == dtype else t.to(dtype)  # noqa: E731
    Bm, Cm = cast(B), cast(C)  # (B, N, L), any strides: the kernels copy token-major tiles
    D = cast(D) if D is not None else torch.zeros(e, dtype=dtype)
    bias = cast(delta_bias) if delta_bias is not None else torch.zeros(e, dtype=dtype)
    z = cast(z) if z is not None else torch.zeros(1, 1, 1, dtype=dtype)
    return cast(u), cast(delta), cast(A).contiguous(), Bm, Cm, D, z, bias


def _forward_blocks(nb: int, e: int) -> int:
    import numba

    threads = numba.get_num_threads()
    jobs = max(1, math.ceil(threads / nb))  # channel blocks per batch item: one job per thread
    return min(_FWD_BLOCK, 8 * math.ceil(e / (8 * jobs)))


def _compute_dtype(*tensors) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _run_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states: bool, dt_weight=None, state=None):
    """The forward kernel; with ``dt_weight`` (E, R), ``delta`` is the low-rank (B, R, L) dt and the
    kernel forms ``dt_weight @ delta`` tile by tile; ``state`` (B, E, N) is read and overwritten."""
    dtype = _compute_dtype(u, delta, A, B, C, D, z)
    fwd = _get_kernel(dtype, A.shape[1], "fwd")
    _set_threads()
    args = _prepare(u, delta, A, B, C, D, z, delta_bias, dtype)
    nb, e, length = u.shape
    n = A.shape[1]
    y = _like_layout(u, dtype)
    nchunks = math.ceil(length / _CHUNK) if save_states else 0
    states = torch.empty(nb, nchunks, e, n, dtype=dtype)  # state before each chunk's first token
    uu, dd, AA, Bm, Cm, DD, zz, bias = args
    st = _strides(nb, e, length, u=uu, delta=dd, z=zz, B=Bm, C=Cm, y=y)
    fwd(_flat(uu), _flat(dd), _np(AA), _flat(Bm), _flat(Cm), _np(DD), _flat(zz), _np(bias), bool(delta_softplus),
        z is not None, _flat(y), _np(states), _CHUNK, _forward_blocks(nb, e), _np(torch.zeros((), dtype=dtype))[()], st,
        _np(dt_weight.detach().to(dtype).t().contiguous() if dt_weight is not None else torch.zeros(0, e, dtype=dtype)),
        _np(state if state is not None else torch.zeros(0, e, n, dtype=dtype)))
    return y, states, args


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        y, states, args = _run_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states=True)
        ctx.delta_softplus, ctx.has_z, ctx.has_d, ctx.has_bias = delta_softplus, z is not None, D is not None, delta_bias is not None
        ctx.dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.save_for_backward(*args, states)
        return y.to(u.dtype)

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, Bm, Cm, D, z, bias, states = ctx.saved_tensors
        dtype = u.dtype
        bwd = _get_kernel(dtype, A.shape[1], "bwd")
        _set_threads()
        import numba

        nb, e, length = u.shape
        n = A.shape[1]
        # Few channel blocks: dB/dC partials cost (blocks x B x L x N) memory.
        nblk = max(1, min(math.ceil(e / 8), math.ceil(numba.get_num_threads() / nb)))  # one job per thread
        eb = math.ceil(e / nblk)
        nblk = math.ceil(e / eb)
        dout = dout.to(dtype)
        du, ddelta = _like_layout(u, dtype), _like_layout(u, dtype)
        dz = _like_layout(u, dtype) if ctx.has_z else torch.zeros(1, 1, 1, dtype=dtype)
        dA_part = torch.empty(nb, e, n, dtype=dtype)
        dD_part = torch.zeros(nb, e, dtype=dtype)
        dbias_part = torch.zeros(nb, e, dtype=dtype)
        # Each channel block's dB, dC partials, laid out as B and C are (token-major memory or (B, N, L)):
        # the kernel's test of the same strides picks the layout it writes.
        token_major = lambda t: t.stride(1) < t.stride(2)  # noqa: E731
        dB_part, dC_part = (torch.empty((nblk, nb, length, n) if token_major(t) else (nblk, nb, n, length), dtype=dtype)
                            for t in (Bm, Cm))
        st = _strides(nb, e, length, u=u, delta=delta, z=z, B=Bm, C=Cm, y=dout, du=du, ddelta=ddelta, dz=dz)
        bwd(_flat(u), _flat(delta), _np(A), _flat(Bm), _flat(Cm), _np(D), _flat(z), _np(bias), bool(ctx.delta_softplus),
            ctx.has_z, _flat(dout), _np(states), _CHUNK, eb, _np(torch.zeros((), dtype=dtype))[()],
            _flat(du), _flat(ddelta), _flat(dz), _np(dA_part), _np(dD_part), _np(dB_part), _np(dC_part), _np(dbias_part), st)
        for part in (dB_part, dC_part):  # channel blocks' partials summed in place, in a fixed order
            for k in range(1, nblk):
                part[0].add_(part[k])
        dB, dC = (p[0].transpose(1, 2) if token_major(t) else p[0] for p, t in ((dB_part, Bm), (dC_part, Cm)))  # (B, N, L)
        first = (lambda t: t[0]) if nb == 1 else (lambda t: t.sum(0))  # noqa: E731  (batch partials)
        grads = [du, ddelta, first(dA_part), dB, dC,
                 first(dD_part) if ctx.has_d else None,
                 dz if ctx.has_z else None,
                 first(dbias_part) if ctx.has_bias else None]
        grads = [g if g is None or dt is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (*grads, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Same contract as :func:`algnet.ops.selective_scan_ref`; u/delta/z may be any strided views."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    if needs_grad:
        return _SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    y, _, _ = _run_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states=False)
    return y.to(u.dtype)


def selective_scan_inference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *, dt_weight=None, state=None):
    """Inference-only :func:`selective_scan` with two extensions for the Mamba layer's CPU path.

    Args:
        u, A, B, C, D, z, delta_bias, delta_softplus: as for :func:`selective_scan`.
        delta: (B, E, L) as for :func:`selective_scan`, or with ``dt_weight`` Mamba's low-rank dt
            (B, R, L), any strides (e.g. a transposed slice of x_proj's output).
        dt_weight: (E, R) weight of Mamba's dt_proj (its bias is ``delta_bias``): the kernel forms
            ``delta = dt_weight @ dt`` per tile of tokens, so no (B, E, L) delta is written and re-read.
        state: (B, E, N) contiguous tensor of the compute dtype (float64 if any input is, else
            float32) holding the state before the first token; overwritten with the state after
            the last, so a sequence can be scanned in consecutive pieces.

    Returns:
        y (B, E, L), laid out as u.
    """
    nb, e, length = u.shape
    if dt_weight is not None and (delta.dim() != 3 or delta.shape[0] != nb or delta.shape[2] != length
                                  or delta.shape[1] == 0 or dt_weight.shape != (e, delta.shape[1])):
        raise ValueError(f"with dt_weight, delta must be the low-rank dt (B, R, L) = ({nb}, R, {length}), R >= 1, and "
                         f"dt_weight (E, R) = ({e}, R); got {tuple(delta.shape)} and {tuple(dt_weight.shape)}")
    if state is not None:
        dtype = _compute_dtype(u, delta, A, B, C, D, z)
        if state.shape != (nb, e, A.shape[1]) or state.dtype != dtype or not state.is_contiguous():
            raise ValueError(f"state must be a contiguous ({nb}, {e}, {A.shape[1]}) {dtype} tensor; "
                             f"got {tuple(state.shape)} {state.dtype}")
    y, _, _ = _run_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states=False, dt_weight=dt_weight,
                           state=None if state is None else state.detach())
    return y.to(u.dtype)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Inference-only ``silu(causal depthwise conv1d)`` on channels-last tokens, in one pass.

    Args:
        x: (B, L, E), any strides with unit stride over E (e.g. a slice of in_proj's output).
        weight: (E, K) taps; ``out[t] = bias + sum_k weight[:, k] * x[t - K + 1 + k]``.
        bias: (E,) or None.

    Returns:
        (B, L, E) contiguous. PyTorch's depthwise conv1d needs a (B, E, L) copy in and out and
        several passes; this is one pass over x.
    """
    import numpy as np

    dtype = x.dtype
    conv = _get_kernel(dtype, None, "conv")
    _set_threads()
    if x.stride(-1) != 1:
        x = x.contiguous()
    nb, length, e = x.shape
    bias = bias if bias is not None else torch.zeros(e, dtype=dtype)
    out = torch.empty(x.shape, dtype=dtype)
    if out.numel() == 0:
        return out
    sx = np.array(x.stride()[:2], dtype=np.int64)
    conv(_flat(x), sx, weight.detach().to(dtype).t().contiguous().numpy(), bias.detach().to(dtype).contiguous().numpy(),
         out.view(-1).numpy(), nb, length, 256)
    return out
