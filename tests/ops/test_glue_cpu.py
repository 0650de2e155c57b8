"""Fused CPU glue of the ALGBlock (algnet.ops.glue_cpu) against the PyTorch ops it replaces."""

import pytest
import torch
import torch.nn.functional as F

from algnet.ops import glue_cpu

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 24, 9, 13), (1, 64, 1, 1), (1, 8, 16, 16)])  # pixels: 117 (a partial tile), 1, 256
def test_layernorm_to_tokens_matches_layer_norm(dtype, shape):
    g = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(shape, generator=g, dtype=dtype)
    weight, bias = torch.randn(shape[1], generator=g, dtype=dtype), torch.randn(shape[1], generator=g, dtype=dtype)
    got = glue_cpu.layernorm_to_tokens(x, weight, bias, 1e-5)
    want = F.layer_norm(x.flatten(2).transpose(1, 2), (shape[1],), weight, bias, 1e-5)
    assert got.shape == want.shape and got.dtype == dtype and got.is_contiguous()
    assert (got - want).abs().max().item() <= TOL[dtype] * want.abs().max().item()


def test_layernorm_to_tokens_constant_pixel_gives_bias():
    """Zero variance: the output is the bias exactly (eps keeps the division finite)."""
    x = torch.full((1, 16, 3, 5), 7.25)
    bias = torch.linspace(-1, 1, 16)
    got = glue_cpu.layernorm_to_tokens(x, torch.ones(16), bias, 1e-6)
    torch.testing.assert_close(got, bias.expand(1, 15, 16), rtol=0, atol=0)


def test_layernorm_to_tokens_reads_a_non_contiguous_map():
    x = torch.randn(1, 40, 12, 6).transpose(2, 3)  # (1, 40, 6, 12) strided
    w, b = torch.rand(40), torch.rand(40)
    want = F.layer_norm(x.flatten(2).transpose(1, 2), (40,), w, b, 1e-5)
    torch.testing.assert_close(glue_cpu.layernorm_to_tokens(x, w, b, 1e-5), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 24, 9, 13), (1, 32, 8, 8)])
def test_aggregate_residual_matches_torch(dtype, shape):
    g = torch.Generator().manual_seed(1)
    b, c, h, w = shape
    x, local = torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)
    tokens = torch.randn(b, h * w, c, generator=g, dtype=dtype)
    gs, ws = torch.randn(1, c, 1, 1, generator=g, dtype=dtype), torch.randn(1, c, 1, 1, generator=g, dtype=dtype)
    got = glue_cpu.aggregate_residual(x, tokens, local, gs, ws)
    want = x + gs * tokens.transpose(1, 2).reshape(shape) + ws * local
    assert got.shape == shape and got.dtype == dtype
    assert (got - want).abs().max().item() <= TOL[dtype] * want.abs().max().item()


def test_shape_errors_are_clear():
    x = torch.randn(1, 8, 4, 4)
    with pytest.raises(ValueError, match="shapes disagree"):
        glue_cpu.aggregate_residual(x, torch.randn(1, 15, 8), x, torch.ones(8), torch.ones(8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        glue_cpu.layernorm_to_tokens(torch.randn(8, 16), torch.ones(8), torch.zeros(8), 1e-5)


def test_benchmark_cases_compute_the_same_values(load_benchmark):
    """benchmarks/block_cpu.py times pairs of computations it claims are equal: they are."""
    bench = load_benchmark("block_cpu")
    with torch.no_grad():
        for name, (plain, fused) in bench.cases(24, 10, 13).items():
            want = plain()
            assert (fused() - want).abs().max().item() <= 1e-5 * want.abs().max().item(), name


def test_small_maps_take_pytorch_layernorm2d_with_the_same_values(monkeypatch):
    """Under _NUMBA_NORM_MIN elements layernorm2d runs PyTorch's in-place passes, not the kernel:
    the same values, and the input is left untouched."""
    from algnet.ops import glue_ref

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 20, 9, 7, generator=g) * 2 + 3
    w, b = torch.randn(20, generator=g), torch.randn(20, generator=g)
    x0, want = x.clone(), glue_ref.layernorm2d(x, w, b, 1e-6)
    calls = []
    monkeypatch.setattr(glue_cpu, "_layernorm", lambda *a, **k: calls.append(1))
    torch.testing.assert_close(glue_cpu.layernorm2d(x, w, b, 1e-6), want, rtol=1e-5, atol=1e-5)
    assert not calls and torch.equal(x, x0)
