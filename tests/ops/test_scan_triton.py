"""Triton selective scan against the reference scan: outputs and every gradient.

There is no GPU in CI, so the kernels run in Triton's interpreter on CPU tensors. The interpreter has
to be chosen before triton is first imported (its standard library, ``tl.sum``, ``tl.cdiv``, ... is
jit-decorated at import time) and again when our kernels are defined (``algnet.ops.scan_triton``
defines them on first use). So this module imports triton with TRITON_INTERPRET=1 and then restores
the environment, so other test modules see it unchanged; the ``interpret`` fixture sets the variable
again for each test here. Checks that need the real compiler (kernels compiled for sm_80/sm_90, no
GPU needed; the GPU comparison) run in subprocesses with a clean environment. The interpreter runs
associative scans element by element in Python, so shapes stay tiny.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from algnet.ops import selective_scan, selective_scan_ref

if "triton" not in sys.modules:
    _saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    finally:
        if _saved is None:
            os.environ.pop("TRITON_INTERPRET")
        else:
            os.environ["TRITON_INTERPRET"] = _saved

triton = pytest.importorskip("triton")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from algnet.ops import scan_triton  # noqa: E402

INTERPRETER_READY = isinstance(triton.language.standard.sum, InterpretedFunction)
needs_interpreter = pytest.mark.skipif(
    not INTERPRETER_READY,
    reason="triton was imported in compiled mode before this module; run this file alone to use its interpreter",
)

# Worst-case error relative to the largest reference value, per compute dtype.
RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.fixture
def interpret(monkeypatch):
    if not INTERPRETER_READY:
        pytest.skip("triton was imported in compiled mode before this module; run this file alone")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(scan_triton.FWD_ENV_VAR, raising=False)


@pytest.fixture(params=scan_triton.FWD_KERNELS)
def fwd(request):
    """Both forward kernels: sequential in each chunk, and associative scan over each chunk."""
    return request.param


def make_inputs(batch, channels, nstate, length, dtype=torch.float64, a_max=2.0, delta_scale=1.0,
                with_d=True, with_z=True, with_bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    tensors = {
        "u": randn(batch, channels, length),
        "delta": (rand(batch, channels, length) - 0.3) * delta_scale,
        "A": -(0.05 + rand(channels, nstate) * a_max),
        "B": randn(batch, nstate, length),
        "C": randn(batch, nstate, length),
        "D": randn(channels) if with_d else None,
        "z": randn(batch, channels, length) if with_z else None,
        "delta_bias": rand(channels) * 0.5 if with_bias else None,
    }
    return {k: None if v is None else v.to(dtype).requires_grad_() for k, v in tensors.items()}


def channels_last(inputs, rank):
    """The inputs as the Mamba layer hands them over: (B, E, L) views of channels-last memory.

    u, delta and z become transposed (B, L, E) tensors; B and C become slices of one (B, L,
    rank + 2N) tensor after ``rank`` leading columns (dt's rank in the layer), so their rows are
    neither contiguous nor aligned. Gradients flow back to the original leaves.
    """
    out = dict(inputs)
    for k in ("u", "delta", "z"):
        if inputs[k] is not None:
            out[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
    batch, nstate, length = inputs["B"].shape
    pad = torch.zeros(batch, length, rank, dtype=inputs["B"].dtype)
    x_dbl = torch.cat([pad, inputs["B"].transpose(1, 2), inputs["C"].transpose(1, 2)], dim=2)  # (B, L, R + 2N)
    out["B"] = x_dbl[:, :, rank:rank + nstate].transpose(1, 2)
    out["C"] = x_dbl[:, :, rank + nstate:].transpose(1, 2)
    return out


def check_against_reference(inputs, softplus, dtype, **kwargs):
    """Compares y and all gradients with the float64 reference on the same (rounded) values.

    Gradients are taken with respect to the leaves of ``inputs`` (views are differentiated through).
    Returns y.
    """
    args = [inputs[k] for k in NAMES]
    y = scan_triton.selective_scan(*args, softplus, **kwargs)
    assert y.dtype == inputs["u"].dtype
    wide = [None if t is None else t.detach().double().requires_grad_() for t in args]
    y_ref = selective_scan_ref(*wide, delta_softplus=softplus)
    grad_out = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    present = [i for i, t in enumerate(args) if t is not None]
    grads = torch.autograd.grad(y, [args[i] for i in present], grad_out.to(y.dtype))
    grads_ref = torch.autograd.grad(y_ref, [wide[i] for i in present], grad_out)
    rtol = RTOL[dtype]
    _assert_close("y", y, y_ref, rtol)
    for i, got, want in zip(present, grads, grads_ref):
        assert got.dtype == args[i].dtype, NAMES[i]
        _assert_close("d" + NAMES[i], got, want, rtol)
    return y


def _assert_close(name, got, want, rtol):
    scale = want.abs().max().item() + 1e-12
    err = (got.double() - want).abs().max().item()
    assert err <= rtol * scale, f"{name}: max error {err:.3e} > {rtol:.0e} x max |ref| {scale:.3e}"


class TestAgainstReference:
    def test_float64_all_options_several_chunks(self, interpret, fwd):
        # Odd channel and state counts exercise the masks; L = 37 spans 3 chunks of 16; the
        # sequential forward runs two channel blocks of 4.
        inputs = make_inputs(2, 5, 3, 37)
        check_against_reference(inputs, True, torch.float64, fwd=fwd, chunk_size=16, block_e=4, seq_block_e=4)

    def test_float32_all_options(self, interpret, fwd):
        inputs = make_inputs(1, 6, 4, 29, dtype=torch.float32)
        check_against_reference(inputs, True, torch.float32, fwd=fwd, chunk_size=8, block_e=4)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_large_a_and_delta(self, interpret, fwd, dtype):
        # |A| up to 32 with dt up to ~5: exp(l) of the factored form would overflow after a few tokens.
        inputs = make_inputs(1, 4, 4, 45, dtype=dtype, a_max=32.0, delta_scale=6.0)
        check_against_reference(inputs, True, dtype, fwd=fwd, chunk_size=16, block_e=4)

    def test_long_sequence_many_chunks(self, interpret, fwd):
        inputs = make_inputs(1, 2, 2, 300, a_max=0.5, delta_scale=0.2)
        check_against_reference(inputs, True, torch.float64, fwd=fwd, chunk_size=32, block_e=2)

    def test_forward_carry_groups(self, interpret, fwd, monkeypatch):
        """The forward's walk over chunks with the sequential kernel's carry shape, shrunk (the
        module reads it at call time) so 5 chunks make 2 groups and 3 channels a partial block."""
        monkeypatch.setattr(scan_triton, "SEQ_CARRY_GROUP", 4)
        inputs = make_inputs(2, 3, 4, 70, a_max=0.5, delta_scale=0.3)
        with torch.no_grad():
            y = scan_triton.selective_scan(*[inputs[k] for k in NAMES], True, fwd=fwd, chunk_size=16)
        y_ref = selective_scan_ref(*[inputs[k] for k in NAMES], delta_softplus=True)
        _assert_close("y", y, y_ref, RTOL[torch.float64])

    @pytest.mark.parametrize("softplus", [True, False])
    def test_single_token(self, interpret, fwd, softplus):
        inputs = make_inputs(2, 3, 2, 1)
        check_against_reference(inputs, softplus, torch.float64, fwd=fwd, chunk_size=16)

    @pytest.mark.parametrize(
        "with_d, with_z, with_bias, softplus",
        [(False, False, False, False), (True, False, False, False), (False, True, False, True),
         (False, False, True, True), (True, True, False, False)],
    )
    def test_optional_arguments(self, interpret, fwd, with_d, with_z, with_bias, softplus):
        # Without softplus, delta must stay positive: shift it up.
        inputs = make_inputs(1, 3, 2, 21, with_d=with_d, with_z=with_z, with_bias=with_bias, seed=3)
        if not softplus:
            inputs["delta"] = (inputs["delta"].detach() + 0.4).requires_grad_()
        check_against_reference(inputs, softplus, torch.float64, fwd=fwd, chunk_size=8, block_e=2)

    def test_softplus_identity_above_20(self, interpret, fwd):
        inputs = make_inputs(1, 2, 2, 12, a_max=0.01)
        inputs["delta"] = (inputs["delta"].detach() * 10 + torch.tensor([[[15.0], [25.0]]],
                           dtype=torch.float64)).requires_grad_()
        check_against_reference(inputs, True, torch.float64, fwd=fwd, chunk_size=8)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_inputs_computed_in_float32(self, interpret, fwd, dtype):
        inputs = make_inputs(1, 3, 2, 20, dtype=torch.float32)
        for k in ("u", "delta", "B", "C", "z"):
            inputs[k] = inputs[k].detach().to(dtype).requires_grad_()
        check_against_reference(inputs, True, dtype, fwd=fwd, chunk_size=8)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_channels_last_views(self, interpret, fwd, dtype):
        # As the Mamba layer calls it: u, delta, z are (B, L, E) memory seen as (B, E, L), and B,
        # C are slices of one (B, L, R + 2N) projection. The sequential forward reads them in
        # place and returns y channels-last; the associative one copies them and returns y
        # contiguous. 17 tokens are 3 chunks of 8, the last one short.
        inputs = make_inputs(2, 5, 3, 17, dtype=dtype, seed=4)
        views = channels_last(inputs, rank=2)
        assert views["u"].stride(1) == 1 and views["B"].stride(1) == 1 and not views["B"].is_contiguous()
        y = check_against_reference(views, True, dtype, fwd=fwd, chunk_size=8, seq_block_e=4)
        assert y.stride(1) == (1 if fwd == "seq" else 17)


class TestDeterminism:
    def test_backward_twice_is_bitwise_equal(self, interpret):
        # Three channel blocks write dB/dC partial sums that are reduced in a fixed order.
        inputs = make_inputs(1, 12, 2, 24, dtype=torch.float32)
        args = [inputs[k] for k in NAMES]
        grad_out = torch.randn(1, 12, 24, generator=torch.Generator().manual_seed(5))
        runs = []
        for _ in range(2):
            y = scan_triton.selective_scan(*args, True, chunk_size=8, block_e=4)
            runs.append(torch.autograd.grad(y, args, grad_out))
        for name, first, second in zip(NAMES, *runs):
            assert torch.equal(first, second), name


class TestInterface:
    def test_mamba_layer_with_triton_backend(self, interpret):
        # The whole Mamba layer (as in every ALGBlock): output and parameter gradients match.
        from algnet import Mamba

        torch.manual_seed(0)
        layer = Mamba(4, d_state=4, scan_backend="triton")
        x = torch.randn(1, 19, 4)
        out = layer(x)
        grads = torch.autograd.grad(out.square().sum(), list(layer.parameters()))
        layer.scan_backend = "reference"
        out_ref = layer(x)
        grads_ref = torch.autograd.grad(out_ref.square().sum(), list(layer.parameters()))
        torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)

    def test_dispatch_by_name(self, interpret):
        inputs = make_inputs(1, 3, 2, 9, dtype=torch.float32)
        args = [inputs[k].detach() for k in NAMES]
        y = selective_scan(*args, delta_softplus=True, backend="triton")
        y_ref = selective_scan_ref(*args, delta_softplus=True)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)

    def test_non_contiguous_inputs(self, interpret):
        # The Mamba layer passes transposed views; the wrapper makes them contiguous.
        inputs = make_inputs(1, 3, 2, 10, dtype=torch.float32)
        u = inputs["u"].detach().transpose(1, 2).contiguous().transpose(1, 2)
        B = inputs["B"].detach().transpose(1, 2).contiguous().transpose(1, 2)
        assert not u.is_contiguous() and not B.is_contiguous()
        args = [inputs[k].detach() for k in NAMES]
        args[0], args[3] = u, B
        y = scan_triton.selective_scan(*args, True, chunk_size=4)
        torch.testing.assert_close(y, selective_scan_ref(*args, delta_softplus=True), rtol=1e-5, atol=1e-5)

    def test_available_under_interpreter(self, interpret):
        assert scan_triton.is_available(torch.device("cpu")) == (True, "")

    def test_cpu_needs_interpreter(self, monkeypatch):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        ok, reason = scan_triton.is_available(torch.device("cpu"))
        assert not ok and "TRITON_INTERPRET=1" in reason
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            scan_triton.selective_scan(*[t.detach() for t in make_inputs(1, 2, 2, 4).values()], True)

    def test_missing_triton_reported(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
        ok, reason = scan_triton.is_available(torch.device("cuda"))
        assert not ok and "pip install triton" in reason

    def test_module_imports_without_triton(self):
        code = "import sys; sys.modules['triton'] = None; import algnet.ops.scan_triton as m; print(m.is_available('cpu'))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "pip install triton" in out.stdout

    def test_chunk_must_be_power_of_two(self, interpret):
        args = [t.detach() for t in make_inputs(1, 2, 2, 4).values()]
        with pytest.raises(ValueError, match="power of two"):
            scan_triton.selective_scan(*args, True, chunk_size=12)
        with pytest.raises(ValueError, match="seq_block_e must be a power of two"):
            scan_triton.selective_scan(*args, True, seq_block_e=24)


class SpyKernels:
    """Counts the launches of each forward kernel, then runs it."""

    def __init__(self, monkeypatch):
        self.launches = []
        kernels = scan_triton._kernels(True)
        for name in ("scan_seq", "scan_fwd"):
            monkeypatch.setattr(kernels, name, self._wrap(name, getattr(kernels, name)))

    def _wrap(self, name, kernel):
        spy = self

        class Launcher:
            def __getitem__(self, grid):
                spy.launches.append(name)
                return kernel[grid]

        return Launcher()


class TestForwardSelection:
    def test_sequential_is_the_default(self, interpret, monkeypatch):
        spy = SpyKernels(monkeypatch)
        args = [t.detach() for t in make_inputs(1, 3, 2, 20, dtype=torch.float32).values()]
        y = scan_triton.selective_scan(*args, True, chunk_size=8)
        torch.testing.assert_close(y, selective_scan_ref(*args, delta_softplus=True), rtol=1e-5, atol=1e-5)
        assert spy.launches == ["scan_seq", "scan_seq"]  # the local pass and the y pass (3 chunks)

    def test_environment_variable_read_at_each_call(self, interpret, monkeypatch):
        spy = SpyKernels(monkeypatch)
        args = [t.detach() for t in make_inputs(1, 3, 2, 5, dtype=torch.float32).values()]
        monkeypatch.setenv(scan_triton.FWD_ENV_VAR, "assoc")
        scan_triton.selective_scan(*args, True)
        monkeypatch.setenv(scan_triton.FWD_ENV_VAR, "SEQ")
        scan_triton.selective_scan(*args, True)
        assert spy.launches == ["scan_fwd", "scan_seq"]

    def test_keyword_overrides_environment(self, interpret, monkeypatch):
        spy = SpyKernels(monkeypatch)
        args = [t.detach() for t in make_inputs(1, 3, 2, 5, dtype=torch.float32).values()]
        monkeypatch.setenv(scan_triton.FWD_ENV_VAR, "seq")
        scan_triton.selective_scan(*args, True, fwd="assoc")
        assert spy.launches == ["scan_fwd"]

    def test_unknown_kernel_is_an_error(self, interpret, monkeypatch):
        args = [t.detach() for t in make_inputs(1, 3, 2, 5).values()]
        with pytest.raises(ValueError, match="choose seq or assoc"):
            scan_triton.selective_scan(*args, True, fwd="parallel")
        monkeypatch.setenv(scan_triton.FWD_ENV_VAR, "fast")
        with pytest.raises(ValueError, match=scan_triton.FWD_ENV_VAR):
            scan_triton.selective_scan(*args, True)

    @pytest.mark.parametrize("seq_block_e, seq_warps", [(2, 1), (4, None), (8, 2)])
    def test_sequential_tile_overrides(self, interpret, seq_block_e, seq_warps):
        # Three, two and one channel blocks over E = 5 (the interpreter runs any warp count).
        inputs = make_inputs(1, 5, 3, 19, seed=6)
        args = [t.detach() for t in inputs.values()]
        y = scan_triton.selective_scan(*args, True, chunk_size=8, seq_block_e=seq_block_e, seq_warps=seq_warps)
        _assert_close("y", y, selective_scan_ref(*args, delta_softplus=True), RTOL[torch.float64])


def _run_clean(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=env)


COMPILE_ALL = """
    import os
    import re
    import subprocess
    import tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from algnet.ops import scan_triton as st

    fp32 = triton.language.float32
    kernels = st._kernels(False)
    flags = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, CHUNK=st.CHUNK, ACC=fp32)
    assoc = dict(flags, BLOCK_E=st.BLOCK_E)
    seq = dict(flags, BLOCK_E=st.SEQ_BLOCK_E, NP=32)
    # Strides equal to 1 are compile-time constants at launch: channels-last views (as the Mamba
    # layer passes them) and contiguous (B, E, L) / (B, N, L) tensors are different variants.
    unit_e = dict(su_e=1, sd_e=1, sz_e=1, sy_e=1, sB_n=1, sC_n=1)
    unit_l = dict(su_l=1, sd_l=1, sz_l=1, sy_l=1, sB_l=1, sC_l=1)
    warps, seq_warps = st._warps(st.BLOCK_E, st.CHUNK), max(1, st.SEQ_BLOCK_E // 32)
    launches = [(kernels.scan_fwd, dict(assoc, LOCAL=True), warps), (kernels.scan_fwd, dict(assoc, LOCAL=False), warps),
                (kernels.grad_local, assoc, warps), (kernels.scan_bwd, assoc, warps),
                (kernels.carry, dict(REVERSE=True, GROUP=st.CARRY_GROUP, BLOCK_E=st.BLOCK_E, NP=32, ACC=fp32), 4),
                (kernels.scan_seq, dict(seq, LOCAL=True, **unit_e), seq_warps),
                (kernels.scan_seq, dict(seq, LOCAL=False, **unit_e), seq_warps),
                (kernels.scan_seq, dict(seq, LOCAL=False, **unit_l), seq_warps),
                (kernels.carry, dict(REVERSE=False, GROUP=st.SEQ_CARRY_GROUP, BLOCK_E=st.SEQ_CARRY_BLOCK_E, NP=32, ACC=fp32), 4)]
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    try:
        for capability in (80, 90):  # A100, H100/H200
            for fn, const, num_warps in launches:
                sig = {n: "constexpr" if n in const else ("*fp32" if n.endswith("_ptr") else "i32") for n in fn.arg_names}
                c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const),
                                   target=GPUTarget("cuda", capability, 32), options=dict(num_warps=num_warps))
                assert c.asm["cubin"], fn
                if fn is kernels.scan_seq and os.path.exists(cuobjdump):
                    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                        f.write(c.asm["cubin"])
                        f.flush()
                        usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
                    # Spilled registers live in the stack frame (STACK), local arrays in LOCAL.
                    regs, stack, local = (int(re.search(key + r":(\\d+)", usage).group(1)) for key in ("REG", "STACK", "LOCAL"))
                    print("RESOURCES", capability, "LOCAL" if const["LOCAL"] else "Y", "registers", regs, "spill-bytes", stack + local)
            print("COMPILED", capability, len(launches))
    except FileNotFoundError as err:  # a triton build without NVIDIA's ptxas
        print("NO-TOOLCHAIN", err)
"""


def test_kernels_compile_for_gpu_without_one():
    """Every kernel variant compiles for sm_80 and sm_90 (Triton's compiler and the ptxas in its
    wheel), and the sequential forward's state tile fits in registers: no spills."""
    out = _run_clean(COMPILE_ALL)
    assert out.returncode == 0, out.stderr[-3000:]
    if "NO-TOOLCHAIN" in out.stdout:
        pytest.skip(out.stdout.strip())
    assert "COMPILED 80 9" in out.stdout and "COMPILED 90 9" in out.stdout
    resources = [line.split() for line in out.stdout.splitlines() if line.startswith("RESOURCES")]
    assert all(r[-1] == "0" for r in resources), resources


GPU_CHECK = """
    import torch
    from algnet.ops import selective_scan_ref, scan_triton

    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        g = torch.Generator(device="cuda").manual_seed(0)
        b, e, n, l = 2, 40, 16, 1000
        u, z = (torch.randn(b, e, l, device="cuda", generator=g, dtype=torch.float64) for _ in range(2))
        delta = torch.rand(b, e, l, device="cuda", generator=g, dtype=torch.float64) - 0.3
        A = -(0.05 + 8 * torch.rand(e, n, device="cuda", generator=g, dtype=torch.float64))
        B, C = (torch.randn(b, n, l, device="cuda", generator=g, dtype=torch.float64) for _ in range(2))
        D, bias = torch.randn(e, device="cuda", dtype=torch.float64), torch.rand(e, device="cuda", dtype=torch.float64)
        args = [t.to(dtype).requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
        wide = [t.detach().double().requires_grad_() for t in args]
        y = scan_triton.selective_scan(*args, True)
        y_ref = selective_scan_ref(*wide, delta_softplus=True)
        dy = torch.randn(y_ref.shape, device="cuda", dtype=torch.float64)
        pairs = [(y, y_ref)] + list(zip(torch.autograd.grad(y, args, dy.to(dtype)), torch.autograd.grad(y_ref, wide, dy)))
        for name, (got, want) in zip(["y", "u", "delta", "A", "B", "C", "D", "z", "bias"], pairs):
            err = (got.double() - want).abs().max().item() / want.abs().max().item()
            assert err < rtol, (dtype, name, err)
    print("GPU-OK")
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_on_gpu_against_reference():
    out = _run_clean(GPU_CHECK)
    assert out.returncode == 0 and "GPU-OK" in out.stdout, out.stderr[-3000:]


GPU_CHECK_SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "gpu_check.py")


def test_gpu_check_help():
    out = subprocess.run([sys.executable, GPU_CHECK_SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--cpu-interpret" in out.stdout and "--quick" in out.stdout


def test_gpu_check_cpu_interpret_smoke():
    """Smoke test: the GPU check's correctness section, on CPU in Triton's interpreter, passes."""
    out = _run_clean(f"import runpy, sys; sys.argv = ['gpu_check.py', '--cpu-interpret']; "
                     f"runpy.run_path({GPU_CHECK_SCRIPT!r}, run_name='__main__')")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "RESULT: PASS" in out.stdout and "correctness: 16/16 checks passed" in out.stdout  # 8 scan, 8 glue kernels
    assert out.stdout.count("PASS  glue ") == 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_gpu_check_without_gpu_fails_clearly():
    out = _run_clean(f"import runpy, sys; sys.argv = ['gpu_check.py', '--quick']; "
                     f"runpy.run_path({GPU_CHECK_SCRIPT!r}, run_name='__main__')")
    assert out.returncode == 1
    assert "no CUDA device visible" in out.stdout and "RESULT: FAIL" in out.stdout


NETWORK_GPU_SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "network_gpu.py")


def test_network_gpu_help():
    out = subprocess.run([sys.executable, NETWORK_GPU_SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--compile" in out.stdout and "--budget" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_network_gpu_without_gpu_fails_clearly():
    out = _run_clean(f"import runpy, sys; sys.argv = ['network_gpu.py']; "
                     f"runpy.run_path({NETWORK_GPU_SCRIPT!r}, run_name='__main__')")
    assert out.returncode == 1, out.stderr[-2000:]
    assert "no CUDA device visible" in out.stdout
