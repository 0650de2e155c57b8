"""LayerNorm2d against torch's layer_norm over the channel axis."""

import torch
import torch.nn.functional as F

from algnet.models.layers import LayerNorm2d


def _via_layer_norm(x, norm):
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias, norm.eps)
    return y.permute(0, 3, 1, 2)


def test_layernorm2d_matches_layer_norm_over_channels():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 12, 7, 9, generator=g, dtype=torch.float64) * 3 + 5).requires_grad_()
    norm = LayerNorm2d(12).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(12, generator=g))
        norm.bias.copy_(torch.randn(12, generator=g))
    got, want = norm(x), _via_layer_norm(x, norm)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    dy = torch.randn(got.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, (x, norm.weight, norm.bias), dy),
                    torch.autograd.grad(want, (x, norm.weight, norm.bias), dy)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_layernorm2d_without_autograd_matches_and_leaves_input():
    """The no-grad path works in place on its own temporary: same values, input untouched."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 5, 4, generator=g, dtype=torch.float64)
    x0 = x.clone()
    norm = LayerNorm2d(6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6, generator=g))
        norm.bias.copy_(torch.randn(6, generator=g))
        got = norm(x)
    torch.testing.assert_close(got, _via_layer_norm(x, norm).detach(), rtol=1e-12, atol=1e-12)
    assert torch.equal(x, x0)


def test_layernorm2d_constant_pixel_is_bias():
    """Zero variance at a pixel: the output is the bias there (eps keeps it finite)."""
    norm = LayerNorm2d(4)
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    y = norm(torch.full((1, 4, 3, 3), 7.0))
    torch.testing.assert_close(y, norm.bias.view(1, 4, 1, 1).expand(1, 4, 3, 3))


def test_layernorm2d_fused_cpu_path_matches(monkeypatch):
    """Large maps without autograd take the one-pass numba kernel (threshold lowered here):
    the same values, in float32 and float64, input untouched."""
    from algnet.models import layers
    from algnet.ops import block_cpu

    calls = []
    fused = block_cpu.layernorm2d
    monkeypatch.setattr(block_cpu, "layernorm2d", lambda *a: calls.append(1) or fused(*a))
    monkeypatch.setattr(layers, "_FUSED_NORM_MIN", 100)
    g = torch.Generator().manual_seed(2)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        x = torch.randn(2, 20, 9, 7, generator=g, dtype=dtype) * 2 + 3  # 63 pixels: one partial tile
        x0 = x.clone()
        norm = LayerNorm2d(20).to(dtype)
        with torch.no_grad():
            norm.weight.copy_(torch.randn(20, generator=g))
            norm.bias.copy_(torch.randn(20, generator=g))
            got = norm(x)
        torch.testing.assert_close(got, _via_layer_norm(x, norm).detach(), rtol=tol, atol=tol)
        assert torch.equal(x, x0)
    assert len(calls) == 2
    with torch.no_grad():
        norm(torch.randn(1, 20, 2, 2, dtype=torch.float64))  # 80 elements: under the threshold
    assert len(calls) == 2


def _conv_and_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(6, 5, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(torch.randn(5, generator=g))
    x, y = torch.randn(1, 6, 7, 8, generator=g), torch.randn(1, 5, 7, 8, generator=g)
    scale = torch.randn(1, 5, 1, 1, generator=g)
    return conv, x, y, scale, g


def test_conv_of_scaled_folds_and_equals_two_steps():
    from algnet.models.layers import conv_of_scaled

    conv, x, _, _, g = _conv_and_inputs(3)
    for s in (torch.rand(1, 6, 1, 1, generator=g), torch.rand(1, 6, 7, 8, generator=g)):  # folded; per pixel (TLC)
        s.requires_grad_()
        got, want = conv_of_scaled(conv, x, s), conv(x * s)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for a, b in zip(torch.autograd.grad(got.sum(), (s, conv.weight)), torch.autograd.grad(want.sum(), (s, conv.weight))):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_add_scaled_conv_equals_plain_form_with_and_without_autograd():
    from algnet.models.layers import add_scaled_conv

    conv, x, y, scale, g = _conv_and_inputs(4)
    s = torch.rand(1, 6, 1, 1, generator=g)
    for attention in (None, s, torch.rand(1, 6, 7, 8, generator=g)):
        want = y + scale * conv(x if attention is None else x * attention)
        got = add_scaled_conv(y, scale, conv, x, attention)  # autograd on
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        gw, = torch.autograd.grad(got.square().sum(), conv.weight)
        ww, = torch.autograd.grad(want.square().sum(), conv.weight)
        torch.testing.assert_close(gw, ww, rtol=1e-4, atol=1e-4)
        y0 = y.clone()
        with torch.no_grad():
            torch.testing.assert_close(add_scaled_conv(y, scale, conv, x, attention), want.detach(), rtol=1e-5, atol=1e-5)
        assert torch.equal(y, y0)  # the in-place sum is on the convolution's output, not on y


def test_scaled_conv_helpers_call_a_hooked_conv():
    from algnet.models.layers import add_scaled_conv, conv_of_scaled

    conv, x, y, scale, g = _conv_and_inputs(5)
    seen = []
    conv.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        conv_of_scaled(conv, x, torch.rand(1, 6, 1, 1, generator=g))
        add_scaled_conv(y, scale, conv, x)
    assert len(seen) == 2
