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
