"""Fused Triton glue kernels (algnet.ops.glue_triton) against PyTorch's ops, in Triton's interpreter.

No GPU in CI: the kernels run on CPU tensors under TRITON_INTERPRET=1 (tests/conftest.py sets it
before triton is imported). References are computed in float64 with PyTorch's own LayerNorm,
conv1d and SiLU, so the kernels are checked against well-kept implementations, not against a copy
of their own arithmetic. tests/ops/test_glue.py compares every function with
:mod:`algnet.ops.glue_ref`, and tests/test_fuse.py the fused networks with the plain ones.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from algnet.ops import glue_triton  # noqa: E402

pytestmark = pytest.mark.skipif(
    not isinstance(triton.language.standard.sum, InterpretedFunction),
    reason="triton was imported in compiled mode; these tests need its interpreter",
)

TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _params(c, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, generator=g), torch.randn(c, generator=g)


def _close(got, want, dtype):
    # bfloat16 outputs are one rounding of a float32 result: compare relative to the values' scale
    tol = TOL[dtype] * max(1.0, want.abs().max().item())
    assert (got.double() - want.double()).abs().max().item() <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 20, 9, 7), (1, 3, 1, 1), (1, 48, 3, 5)])
def test_layernorm2d_and_tokens_match_layer_norm(dtype, shape):
    b, c, h, w = shape
    g = torch.Generator().manual_seed(c)
    x = (torch.randn(shape, generator=g) * 3 + 2).to(dtype)
    weight, bias = _params(c, 1)
    tokens_ref = F.layer_norm(x.double().flatten(2).transpose(1, 2), (c,), weight.double(), bias.double(), 1e-6)
    map_ref = tokens_ref.transpose(1, 2).reshape(shape)

    got = glue_triton.layernorm2d(x, weight, bias, 1e-6)
    assert got.dtype == dtype and got.shape == shape and got.is_contiguous()
    _close(got, map_ref, dtype)

    tokens = glue_triton.layernorm_to_tokens(x, weight, bias, 1e-6, out_dtype=torch.promote_types(dtype, torch.float32))
    assert tokens.shape == (b, h * w, c) and tokens.dtype == torch.promote_types(dtype, torch.float32)
    _close(tokens, tokens_ref, torch.float32 if dtype == torch.bfloat16 else dtype)


def test_layernorm_reads_strided_input_and_wide_channels():
    """A non-contiguous (channels-last) map and C = 512 (ALGNet's middle blocks, one 512-row tile)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, 5, 512, generator=g).permute(0, 3, 1, 2)  # (1, 512, 6, 5), not contiguous
    weight, bias = _params(512, 4)
    ref = F.layer_norm(x.double().permute(0, 2, 3, 1), (512,), weight.double(), bias.double(), 1e-5).permute(0, 3, 1, 2)
    _close(glue_triton.layernorm2d(x, weight, bias, 1e-5), ref, torch.float32)


def test_constant_pixel_gives_the_bias():
    weight, bias = _params(5, 5)
    got = glue_triton.layernorm2d(torch.full((1, 5, 2, 3), 4.0), weight, bias, 1e-6)
    torch.testing.assert_close(got, bias.view(1, 5, 1, 1).expand(1, 5, 2, 3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_aggregate_residual_matches_pytorch(dtype):
    g = torch.Generator().manual_seed(7)
    b, c, h, w = 2, 70, 3, 11  # 70 channels: three blocks of 32 channels, the last partial
    x = torch.randn(b, c, h, w, generator=g).to(dtype)
    local = torch.randn(b, c, h, w, generator=g).to(dtype)
    tokens = torch.randn(b, h * w, c, generator=g)  # the global branch's float32 output
    scale_g, scale_w = torch.randn(1, c, 1, 1, generator=g), torch.randn(1, c, 1, 1, generator=g)
    want = x + (scale_g * tokens.transpose(1, 2).reshape(b, c, h, w) + scale_w * local)
    got = glue_triton.aggregate_residual(x, tokens, local, scale_g, scale_w)
    assert got.dtype == want.dtype and got.shape == want.shape
    ref = x.double() + scale_g.double() * tokens.double().transpose(1, 2).reshape(b, c, h, w) + scale_w.double() * local.double()
    _close(got, ref, torch.float64 if dtype == torch.float64 else torch.float32)
    local_bias = torch.randn(c, generator=g)  # the local conv's bias, added here instead of in the conv
    got = glue_triton.aggregate_residual(x, tokens, local, scale_g, scale_w, local_bias=local_bias)
    _close(got, ref + scale_w.double() * local_bias.double().view(1, c, 1, 1), torch.float64 if dtype == torch.float64 else torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length,taps,bias", [(37, 4, True), (1, 4, True), (5, 1, False), (130, 3, True)])
def test_causal_conv1d_silu_matches_conv1d(dtype, length, taps, bias):
    """On a slice of a wider tensor (as x is a view of in_proj's output), against F.conv1d + silu."""
    g = torch.Generator().manual_seed(length)
    e = 20
    xz = torch.randn(2, length, 2 * e, generator=g, dtype=dtype)
    x = xz[..., :e]
    weight = torch.randn(e, taps, generator=g, dtype=dtype)
    b = torch.randn(e, generator=g, dtype=dtype) if bias else None
    conv = F.conv1d(x.double().transpose(1, 2), weight.double().unsqueeze(1), None if b is None else b.double(),
                    padding=taps - 1, groups=e)[..., :length]
    want = F.silu(conv).transpose(1, 2)
    got = glue_triton.causal_conv1d_silu(x, weight, b)
    assert got.shape == (2, length, e) and got.is_contiguous() and got.dtype == dtype
    _close(got, want, dtype)


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(ValueError, match="4 dimensions"):
        glue_triton.layernorm2d(x[0], torch.ones(4), torch.zeros(4), 1e-6)
    with pytest.raises(ValueError, match="weight must have 4 elements"):
        glue_triton.layernorm2d(x, torch.ones(5), torch.zeros(4), 1e-6)
    with pytest.raises(ValueError, match="shapes disagree"):
        glue_triton.aggregate_residual(x, torch.randn(1, 8, 4), x, torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match=r"weight must be \(E, K\)"):
        glue_triton.causal_conv1d_silu(torch.randn(1, 5, 4), torch.randn(3, 4), None)
    with pytest.raises(RuntimeError, match="floating CUDA tensor"):
        glue_triton.layernorm2d(x.to(torch.int32), torch.ones(4), torch.zeros(4), 1e-6)


def test_not_usable_on_cpu_outside_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not glue_triton.usable(torch.randn(2))
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        glue_triton.causal_conv1d_silu(torch.randn(1, 3, 2), torch.randn(2, 4), None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,bias", [((2, 6, 9, 13), True), ((1, 4, 1, 1), False), ((1, 2, 70, 3), True)])
def test_dwconv3x3_gate_matches_conv2d_and_gate(dtype, shape, bias):
    """Against F.conv2d (zero padding 1, groups 2C) and the product of the two channel halves."""
    g = torch.Generator().manual_seed(shape[1])
    y = torch.randn(shape, generator=g, dtype=dtype)
    c2 = shape[1]
    weight = torch.randn(c2, 1, 3, 3, generator=g, dtype=dtype)
    b = torch.randn(c2, generator=g, dtype=dtype) if bias else None
    conv = F.conv2d(y.double(), weight.double(), None if b is None else b.double(), padding=1, groups=c2)
    want = conv[:, : c2 // 2] * conv[:, c2 // 2 :]
    got = glue_triton.dwconv3x3_gate(y, weight, b)
    assert got.shape == want.shape and got.dtype == dtype and got.is_contiguous()
    _close(got, want, dtype)
    with pytest.raises(ValueError, match="even channel count"):
        glue_triton.dwconv3x3_gate(torch.randn(1, 3, 4, 4, dtype=dtype), torch.randn(3, 1, 3, 3, dtype=dtype), None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dwconv3x3_gate_pre_bias_is_the_previous_convs_bias(dtype):
    """pre_bias is added to y inside the map only: the same as convolving (y + b) with zero padding."""
    g = torch.Generator().manual_seed(9)
    y = torch.randn(2, 6, 5, 7, generator=g, dtype=dtype)
    weight, bias, pre = (torch.randn(6, 1, 3, 3, generator=g, dtype=dtype), torch.randn(6, generator=g, dtype=dtype),
                         torch.randn(6, generator=g, dtype=dtype))
    conv = F.conv2d(y.double() + pre.double().view(1, 6, 1, 1), weight.double(), bias.double(), padding=1, groups=6)
    _close(glue_triton.dwconv3x3_gate(y, weight, bias, pre_bias=pre), conv[:, :3] * conv[:, 3:], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gate_and_bias_residual_match_pytorch(dtype):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 10, 33, 37, generator=g).to(dtype)  # 1,221 pixels: two row blocks, the second partial
    bias = torch.randn(10, generator=g)
    xb = x.double() + bias.double().view(1, 10, 1, 1)
    got = glue_triton.gate(x, bias)
    assert got.shape == (2, 5, 33, 37) and got.dtype == dtype
    _close(got, xb[:, :5] * xb[:, 5:], dtype)
    _close(glue_triton.gate(x), x.double()[:, :5] * x.double()[:, 5:], dtype)

    out, residual, b5 = x[:, :5].contiguous(), torch.randn(2, 5, 33, 37, generator=g), torch.randn(5, generator=g)
    want = out.double() + residual.double() + b5.double().view(1, 5, 1, 1)
    back = glue_triton.add_bias_residual_(out, residual, b5)
    assert back is out  # in place
    _close(out, want, dtype)
    with pytest.raises(ValueError, match="contiguous"):
        glue_triton.add_bias_residual_(x[:, :5], residual.to(dtype), b5)
    with pytest.raises(ValueError, match="even channel count"):
        glue_triton.gate(x[:, :3])


COMPILE_ALL = """
    import os
    import re
    import subprocess
    import tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from algnet.ops import glue_triton as bt

    fp32 = triton.language.float32
    k = bt._kernels()
    # The shapes ALGNet launches: 32 and 512 channels (first and middle levels), as the wrappers tile them.
    launches = [(k.layernorm, dict(TO_TOKENS=t, BLOCK_C=c, BLOCK_P=bt._TILE_ELEMENTS // c, ACC=fp32))
                for t in (False, True) for c in (32, 512)]
    launches += [(k.aggregate, dict(LOCAL_BIAS=l, BLOCK_C=32, BLOCK_P=bt._TILE_ELEMENTS // 32, ACC=fp32)) for l in (False, True)]
    launches += [(k.conv_silu, dict(K=4, HAS_BIAS=True, BLOCK_L=bt._TILE_ELEMENTS // 64, BLOCK_E=64, ACC=fp32)),
                 (k.dwconv_gate, dict(HAS_BIAS=True, PRE_BIAS=True, BLOCK_H=16, BLOCK_W=64, ACC=fp32)),
                 (k.gate, dict(HAS_BIAS=True, BLOCK=bt._ROW_BLOCK, ACC=fp32)),
                 (k.bias_residual, dict(HAS_BIAS=True, BLOCK=bt._ROW_BLOCK, ACC=fp32))]
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    try:
        for capability in (80, 90):  # A100, H100/H200
            for fn, const in launches:
                sig = {n: "constexpr" if n in const else ("*fp32" if n.endswith("_ptr") else "fp32" if n == "eps" else "i32")
                       for n in fn.arg_names}
                c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const),
                                   target=GPUTarget("cuda", capability, 32), options=dict(num_warps=4))
                assert c.asm["cubin"], fn
                if os.path.exists(cuobjdump):
                    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                        f.write(c.asm["cubin"])
                        f.flush()
                        usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
                    stack, local = (int(re.search(key + r":(\\d+)", usage).group(1)) for key in ("STACK", "LOCAL"))
                    print("RESOURCES", capability, fn.__name__, "spill-bytes", stack + local)
            print("COMPILED", capability, len(launches))
    except FileNotFoundError as err:  # a triton build without NVIDIA's ptxas
        print("NO-TOOLCHAIN", err)
"""


def test_kernels_compile_for_gpu_without_one():
    """Every glue kernel compiles for sm_80 and sm_90 (Triton's compiler and the ptxas in its wheel)
    at the tiles the wrappers launch, without spilling registers."""
    import os
    import subprocess
    import sys
    import textwrap

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(COMPILE_ALL)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    if "NO-TOOLCHAIN" in out.stdout:
        pytest.skip(out.stdout.strip())
    assert "COMPILED 80 10" in out.stdout and "COMPILED 90 10" in out.stdout, out.stdout
    resources = [line.split() for line in out.stdout.splitlines() if line.startswith("RESOURCES")]
    assert len(resources) in (0, 20) and all(r[-1] == "0" for r in resources), resources
