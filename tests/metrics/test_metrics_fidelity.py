"""PSNR and MATLAB's volume SSIM against closed forms and an independent direct 3-D implementation."""

import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from skimage.metrics import structural_similarity

from algnet.metrics import psnr, ssim_matlab


def _images(shape=(23, 19, 3), noise=25, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return x, y


def _direct_ssim(x, y):
    """MATLAB's ssim written out: an explicit 11x11x11 (or 11x11) Gaussian, edge padding, a sum per voxel."""
    r = 5
    grid = np.mgrid[(slice(-r, r + 1),) * x.ndim]
    kernel = np.exp(-(grid**2).sum(0) / (2 * 1.5**2))
    kernel /= kernel.sum()

    def filt(v):
        windows = sliding_window_view(np.pad(v, r, mode="edge"), kernel.shape)
        return (windows * kernel).sum(axis=tuple(range(-x.ndim, 0)))

    a, b = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = filt(a), filt(b)
    va, vb, cov = filt(a * a) - ma**2, filt(b * b) - mb**2, filt(a * b) - ma * mb
    return np.mean((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))


class TestPSNR:
    def test_known_mse(self):
        x = np.zeros((4, 5, 3), np.uint8)
        y = x.copy()
        y[0, 0, 0] = 60  # MSE = 3600 / 60 = 60
        assert psnr(x, y, 255) == pytest.approx(10 * math.log10(255**2 / 60), abs=1e-12)
        assert psnr(x.astype(float) / 255, y.astype(float) / 255, 1.0) == pytest.approx(psnr(x, y, 255), abs=1e-9)

    def test_identical_is_inf(self):
        x, _ = _images()
        assert psnr(x, x, 255) == math.inf

    def test_uint8_does_not_wrap(self):
        x, y = np.full((2, 2), 10, np.uint8), np.full((2, 2), 20, np.uint8)
        assert psnr(x, y, 255) == pytest.approx(10 * math.log10(255**2 / 100))

    def test_exceptions(self):
        x, _ = _images()
        with pytest.raises(ValueError, match="shape"):
            psnr(x, x[1:], 255)
        with pytest.raises(ValueError, match="data_range"):
            psnr(x, x, 0)


class TestSSIMMatlab:
    def test_identical_is_one(self):
        x, _ = _images()
        assert ssim_matlab(x, x) == pytest.approx(1.0, abs=1e-12)

    @pytest.mark.parametrize("shape", [(23, 19, 3), (16, 12), (9, 30, 3)])
    def test_matches_direct_3d_gaussian(self, shape):
        x, y = _images(shape)
        assert ssim_matlab(x, y) == pytest.approx(_direct_ssim(x, y), abs=1e-12)

    def test_differs_from_skimage_per_channel(self):
        # one channel destroyed: the volume window spreads that damage over all three channels
        rng = np.random.default_rng(1)
        x = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
        y = x.copy()
        y[..., 0] = rng.integers(0, 256, (32, 32))
        ours = ssim_matlab(x, y)
        assert ours == pytest.approx(_direct_ssim(x, y), abs=1e-12)
        gaussian = structural_similarity(x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255)
        default = structural_similarity(x, y, channel_axis=-1, data_range=255)
        per_channel_2d = np.mean([ssim_matlab(x[..., c], y[..., c]) for c in range(3)])
        assert ours < gaussian - 0.05 and ours < default - 0.05 and ours < per_channel_2d - 0.04

    def test_symmetric_and_below_one(self):
        x, y = _images()
        assert ssim_matlab(x, y) == pytest.approx(ssim_matlab(y, x), abs=1e-12)
        assert ssim_matlab(x, y) < 0.99

    def test_exceptions(self):
        x, _ = _images()
        with pytest.raises(TypeError, match="uint8"):
            ssim_matlab(x.astype(np.float32), x.astype(np.float32))
        with pytest.raises(ValueError, match="shape"):
            ssim_matlab(x, x[:, 1:])
