"""PSNR and MATLAB's SSIM, the two numbers of the GoPro and HIDE tables.

The published GoPro/HIDE numbers come from MATLAB (``psnr`` and ``ssim`` on uint8 RGB images, e.g.
MPRNet's ``evaluate_GOPRO_HIDE.m``). MATLAB's ``ssim`` treats an HxWx3 image as a volume: it filters
with a 3-D Gaussian (``imgaussfilt3``, sigma 1.5, 11x11x11, replicate padding), so neighbouring
colour channels mix. scikit-image's per-channel SSIM gives different numbers, hence this module.
"""

from __future__ import annotations

import math

import numpy as np


def _check_pair(x: np.ndarray, y: np.ndarray, fn: str) -> None:
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise TypeError(f"{fn}: expected numpy arrays, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ValueError(f"{fn}: the images differ in shape: {x.shape} vs {y.shape}")
    if x.size == 0:
        raise ValueError(f"{fn}: empty images")


def psnr(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio over all values, ``10 log10(data_range^2 / MSE)``.

    Args:
        x: image of any shape and numeric dtype.
        y: image of the same shape.
        data_range: the peak value, 255 for uint8, 1 for images in [0, 1].

    Returns:
        PSNR in dB; ``inf`` for identical images (as MATLAB's ``psnr``).
    """
    _check_pair(x, y, "psnr")
    if not data_range > 0:
        raise ValueError(f"psnr: data_range must be positive, got {data_range}")
    # float64: uint8 differences would wrap around, and float32 sums lose digits on big images
    mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # MATLAB: FilterSize = 2*ceil(3*sigma)+1 = 11


def _gaussian_filter(volume: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    # mode="nearest" is MATLAB's 'replicate'; radius=5 makes scipy's normalised kernel 11 taps wide,
    # the separable form of MATLAB's normalised 11x11(x11) kernel. Filters every axis, the channel
    # axis included: that is what makes it the MATLAB volume SSIM.
    return ndimage.gaussian_filter(volume, sigma=SSIM_SIGMA, radius=SSIM_RADIUS, mode="nearest")


def ssim_matlab(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM exactly as MATLAB's ``ssim(x, y)`` computes it for uint8 images.

    An HxWx3 image is a volume to MATLAB: the statistics come from a 3-D Gaussian window
    (11x11x11, sigma 1.5) with replicate padding, which mixes the colour channels; an HxW image
    uses the 2-D 11x11 window. C1 = (0.01*255)^2, C2 = (0.03*255)^2, the result is the mean of the
    SSIM map, nothing cropped.

    Args:
        x: uint8 image, HxW or HxWx3 (RGB or BGR, both give the same value).
        y: uint8 image of the same shape.
    """
    _check_pair(x, y, "ssim_matlab")
    if x.dtype != np.uint8 or y.dtype != np.uint8:
        raise TypeError(f"ssim_matlab: expected uint8 images (round to uint8 first), got {x.dtype} and {y.dtype}")
    if x.ndim not in (2, 3):
        raise ValueError(f"ssim_matlab: expected an HxW or HxWxC image, got shape {x.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = x.astype(np.float64), y.astype(np.float64)
    mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
    var_a = _gaussian_filter(a * a) - mu_a**2
    var_b = _gaussian_filter(b * b) - mu_b**2
    cov = _gaussian_filter(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))
