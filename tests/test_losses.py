"""Tests of algnet.losses: closed forms, an independent SciPy Laplacian, gradcheck, modules, errors."""

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from algnet.losses import (
    CharbonnierLoss, EdgeLoss, FrequencyLoss, MultiScaleLoss, charbonnier_loss, edge_loss, frequency_loss, laplacian,
    multiscale_loss,
)

LOSSES = [charbonnier_loss, edge_loss, frequency_loss]


def _rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype)


class TestCharbonnier:
    def test_equal_inputs_give_eps(self):
        x = _rand(2, 3, 8, 8)
        assert charbonnier_loss(x, x).item() == pytest.approx(1e-3, rel=1e-6)
        assert charbonnier_loss(x, x, eps=0.5).item() == pytest.approx(0.5, rel=1e-6)

    def test_constant_difference(self):
        x = _rand(1, 3, 5, 7, dtype=torch.float64)
        d, eps = 0.3, 1e-2
        assert charbonnier_loss(x + d, x, eps).item() == pytest.approx(math.sqrt(d * d + eps * eps), rel=1e-12)

    def test_mixed_differences(self):
        x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
        y = torch.tensor([[[[1.0, -2.0]]]], dtype=torch.float64)
        expected = (math.sqrt(1 + 1e-6) + math.sqrt(4 + 1e-6)) / 2
        assert charbonnier_loss(y, x).item() == pytest.approx(expected, rel=1e-12)


class TestEdge:
    @staticmethod
    def _scipy_laplacian(x: np.ndarray) -> np.ndarray:
        """Independent construction: SciPy correlation with mode='nearest' is replicate padding."""
        k1 = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
        k = np.outer(k1, k1)
        blur = lambda a: scipy.ndimage.correlate(a, k, mode="nearest")  # noqa: E731
        out = np.empty_like(x)
        for b in range(x.shape[0]):
            for c in range(x.shape[1]):
                f = blur(x[b, c])
                up = np.zeros_like(f)
                up[::2, ::2] = 4 * f[::2, ::2]
                out[b, c] = x[b, c] - blur(up)
        return out

    @pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 10), (1, 1, 5, 5)])
    def test_laplacian_matches_scipy(self, shape):
        x = _rand(*shape, dtype=torch.float64)
        np.testing.assert_allclose(laplacian(x).numpy(), self._scipy_laplacian(x.numpy()), rtol=0, atol=1e-12)

    def test_constant_shift_closed_form(self):
        # Laplacian is linear, so Edge(x + c, x) = mean(sqrt(L(c)^2 + eps^2)). For a constant image c
        # the re-expanded blur is c * f[i] * f[j]; by hand (weights of the even-grid taps, times 2),
        # with replicate padding, for an 8-pixel axis: f = [1.5, 1.1, 1, 1, 1, 1, 0.9, 0.5], and for
        # a 7-pixel axis: [1.5, 1.1, 1, 1, 1, 1.1, 1.5]. In the interior L(c) is exactly 0.
        f8 = np.array([1.5, 1.1, 1, 1, 1, 1, 0.9, 0.5])
        f7 = np.array([1.5, 1.1, 1, 1, 1, 1.1, 1.5])
        c, eps = 0.25, 1e-3
        const = torch.full((1, 1, 8, 7), c, dtype=torch.float64)
        lap_c = c * (1 - np.outer(f8, f7))
        np.testing.assert_allclose(laplacian(const)[0, 0].numpy(), lap_c, atol=1e-14)
        assert np.all(lap_c[2:-2, 2:-2] == 0)

        x = _rand(2, 3, 8, 7, dtype=torch.float64)
        expected = np.sqrt(lap_c**2 + eps**2).mean()
        assert edge_loss(x + c, x, eps).item() == pytest.approx(expected, rel=1e-10)

    def test_equal_inputs_give_eps(self):
        x = _rand(1, 3, 9, 9)
        assert edge_loss(x, x).item() == pytest.approx(1e-3, rel=1e-6)


class TestFrequency:
    @pytest.mark.parametrize("h, w", [(4, 4), (5, 8), (16, 3)])
    def test_constant_offset(self, h, w):
        # FFT of the constant c is c*H*W at DC and 0 elsewhere; the mean over B*C*H*W*2 numbers of
        # |difference| is then B*C*|c|*H*W / (B*C*H*W*2) = |c|/2.
        x = _rand(2, 3, h, w, dtype=torch.float64)
        for c in (0.2, -0.7):
            assert frequency_loss(x + c, x).item() == pytest.approx(abs(c) / 2, rel=1e-10)

    def test_single_impulse(self):
        # A unit impulse has |FFT| = 1 at every frequency, with real/imag parts cos/-sin of the phase:
        # at the origin all phases are 0, so the mean over real and imaginary parts is (1 + 0)/2.
        x = torch.zeros(1, 1, 4, 6, dtype=torch.float64)
        y = x.clone()
        y[0, 0, 0, 0] = 1
        assert frequency_loss(y, x).item() == pytest.approx(0.5, rel=1e-12)

    def test_half_precision_input(self):
        x = _rand(1, 3, 8, 8)
        y = _rand(1, 3, 8, 8, seed=1)
        ref = frequency_loss(x, y)
        half = frequency_loss(x.bfloat16(), y.bfloat16())
        assert half.dtype == torch.float32
        assert half.item() == pytest.approx(ref.item(), rel=2e-2)


class TestMultiScale:
    def test_four_outputs_equal_hand_sum(self):
        target = _rand(2, 3, 32, 48, dtype=torch.float64)
        outputs = [_rand(2, 3, 32 // s, 48 // s, dtype=torch.float64, seed=s) for s in (8, 4, 2, 1)]
        expected = 0.0
        for s, out in zip((8, 4, 2, 1), outputs):
            # MIMO-UNet's labels: F.interpolate(label, scale_factor=1/s, mode='bilinear').
            t = target if s == 1 else F.interpolate(target, scale_factor=1 / s, mode="bilinear")
            expected += charbonnier_loss(out, t) + 0.05 * edge_loss(out, t) + 0.1 * frequency_loss(out, t)
        got = multiscale_loss(outputs, target)
        assert got.item() == pytest.approx(expected.item(), rel=1e-12)
        assert MultiScaleLoss()(outputs, target).item() == pytest.approx(expected.item(), rel=1e-12)

    def test_single_output_and_weights(self):
        target = _rand(1, 3, 8, 8)
        out = _rand(1, 3, 8, 8, seed=3)
        expected = charbonnier_loss(out, target, 0.01) + 0.5 * edge_loss(out, target, 0.01) + 2 * frequency_loss(out, target)
        got = multiscale_loss([out], target, edge_weight=0.5, freq_weight=2.0, eps=0.01)
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)

    def test_odd_sizes_use_target_resized_to_output(self):
        target = _rand(1, 3, 20, 20, dtype=torch.float64)
        out = _rand(1, 3, 3, 3, dtype=torch.float64)  # ceil(20/8)
        t = F.interpolate(target, size=(3, 3), mode="bilinear", align_corners=False)
        expected = charbonnier_loss(out, t) + 0.05 * edge_loss(out, t) + 0.1 * frequency_loss(out, t)
        assert multiscale_loss([out], target).item() == pytest.approx(expected.item(), rel=1e-12)

    def test_gradient_flows_to_every_output(self):
        target = _rand(1, 3, 16, 16)
        outputs = [_rand(1, 3, 16 // s, 16 // s, seed=s).requires_grad_() for s in (8, 4, 2, 1)]
        multiscale_loss(outputs, target).backward()
        assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in outputs)

    @pytest.mark.parametrize("bad", [[], torch.zeros(1, 3, 8, 8), [torch.zeros(1, 1, 8, 8)], [torch.zeros(3, 8, 8)]])
    def test_bad_outputs(self, bad):
        with pytest.raises(ValueError, match="multiscale_loss"):
            multiscale_loss(bad, torch.zeros(1, 3, 8, 8))

    def test_bad_target(self):
        with pytest.raises(ValueError, match="target must be a 4-D"):
            multiscale_loss([torch.zeros(1, 3, 8, 8)], torch.zeros(3, 8, 8))


@pytest.mark.parametrize("fn", LOSSES)
def test_gradcheck_float64(fn):
    pred = _rand(1, 1, 6, 5, dtype=torch.float64).requires_grad_()
    target = _rand(1, 1, 6, 5, dtype=torch.float64, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(fn, (pred, target))


def test_gradcheck_multiscale_float64():
    a = _rand(1, 1, 2, 2, dtype=torch.float64, seed=1).requires_grad_()
    b = _rand(1, 1, 4, 4, dtype=torch.float64, seed=2).requires_grad_()
    target = _rand(1, 1, 4, 4, dtype=torch.float64, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, t: multiscale_loss([a, b], t), (a, b, target))


@pytest.mark.parametrize(
    "fn, module", [(charbonnier_loss, CharbonnierLoss()), (edge_loss, EdgeLoss()), (frequency_loss, FrequencyLoss())]
)
def test_module_equals_function(fn, module):
    x, y = _rand(2, 3, 8, 8), _rand(2, 3, 8, 8, seed=1)
    assert torch.equal(module(x, y), fn(x, y))


def test_module_eps_is_used():
    x, y = _rand(1, 3, 8, 8), _rand(1, 3, 8, 8, seed=1)
    assert torch.equal(CharbonnierLoss(eps=0.1)(x, y), charbonnier_loss(x, y, 0.1))
    assert torch.equal(EdgeLoss(eps=0.1)(x, y), edge_loss(x, y, 0.1))


@pytest.mark.parametrize("fn", LOSSES)
class TestExceptions:
    def test_shape_mismatch(self, fn):
        with pytest.raises(ValueError, match=r"shapes differ: \(1, 3, 8, 8\) vs \(1, 3, 8, 9\)"):
            fn(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))

    def test_not_4d(self, fn):
        with pytest.raises(ValueError, match="expected 4-D"):
            fn(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))

    def test_not_tensor(self, fn):
        with pytest.raises(TypeError, match="must be tensors"):
            fn(np.zeros((1, 3, 8, 8)), torch.zeros(1, 3, 8, 8))
