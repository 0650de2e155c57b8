"""The DPDD protocol of Restormer's ``test_single_image_defocus_deblur.py``, which the paper's peers follow.

PSNR with data range 1 (100 for identical images, as Restormer's ``utils.PSNR``), scikit-image SSIM
with its DEFAULT settings (7x7 uniform window, sample covariance) per channel, MAE on [0, 1], and
LPIPS (AlexNet) when available. How the 16-bit PNGs are read (8-bit truncated or full) is the
caller's business: see :mod:`algnet.evaluation.protocols`.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

# Restormer's DPDD test split (76 images): 0-based indices of the name-sorted images that are indoor,
# from its indoor_labels.npy (a third-party list; the dataset's own label files win when present).
DPDD_INDOOR = (*range(8, 14), 16, 32, *range(39, 57), *range(59, 68), 74, 75)
DPDD_TEST_COUNT = 76


def dpdd_metrics(pred: np.ndarray, gt: np.ndarray,
                 lpips_fn: Callable[[np.ndarray, np.ndarray], float] | None = None) -> dict[str, float | None]:
    """Scores one defocus-deblurring result.

    Args:
        pred: HxWx3 float image in [0, 1] (the network's clamped output, not quantised).
        gt: HxWx3 float image in [0, 1].
        lpips_fn: ``distance(pred, gt)`` from :func:`algnet.metrics.load_lpips`, or None.

    Returns:
        ``{"psnr", "ssim", "mae", "lpips"}``; lpips is None without ``lpips_fn``.
    """
    from skimage.metrics import structural_similarity

    for name, img in (("pred", pred), ("gt", gt)):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype.kind != "f":
            raise ValueError(f"dpdd_metrics: {name} must be an HxWx3 float array in [0, 1], got "
                             f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
    if pred.shape != gt.shape:
        raise ValueError(f"dpdd_metrics: pred and gt differ in shape: {pred.shape} vs {gt.shape}")
    mse = float(np.mean((gt - pred) ** 2))
    return {
        "psnr": 100.0 if mse == 0 else 10 * math.log10(1 / mse),
        "ssim": float(structural_similarity(gt, pred, data_range=1, channel_axis=-1)),
        "mae": float(np.mean(np.abs(gt - pred))),  # mean of the per-channel MAEs, all channels equal-sized
        "lpips": lpips_fn(pred, gt) if lpips_fn is not None else None,
    }
