"""The RealBlur protocol: align the prediction to the ground truth with ECC, then masked PSNR/SSIM.

Follows the official ``evaluation_RealBlur_ecc.py`` (Rim et al., ECCV 2020; the script MPRNet,
Restormer and the ALGNet authors use) step by step, in float32 as it does. RealBlur's ground truth
is only roughly registered to the blurred input, so scoring without this alignment punishes a method
for a sub-pixel shift it cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BORDER = 5  # int(3.5 * 1.5 + 0.5): the radius of skimage's Gaussian SSIM window, cropped off the map


@dataclass(frozen=True)
class Aligned:
    """The prediction warped onto the ground truth, both masked, and how the warp was found."""

    pred: np.ndarray  # HxWx3 float32, warped and masked
    gt: np.ndarray  # HxWx3 float32, masked
    mask: np.ndarray  # HxWx3 float32, 1 where the warped prediction has data
    warp: np.ndarray  # 3x3 homography (identity when ECC failed)
    ecc_failed: bool


def _as_float(image: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"realblur_score: {name} must be an HxWx3 RGB array, got {getattr(image, 'shape', type(image))}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype in (np.float32, np.float64):
        return image.astype(np.float32)
    raise TypeError(f"realblur_score: {name} must be uint8 or float in [0, 1], got {image.dtype}")


def realblur_align(pred: np.ndarray, gt: np.ndarray) -> Aligned:
    """Intensity-matches the prediction to the ground truth and warps it on with an ECC homography.

    Args:
        pred: HxWx3 RGB prediction, uint8 or float32 in [0, 1].
        gt: HxWx3 RGB ground truth, same size.
    """
    import cv2

    z, x = _as_float(pred, "pred"), _as_float(gt, "gt")
    if z.shape != x.shape:
        raise ValueError(f"realblur_score: pred and gt differ in shape: {z.shape} vs {x.shape}")
    zs = (np.sum(x * z) / np.sum(z * z)) * z  # simple intensity matching, as the official script
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 0)
    failed = False
    try:
        # grey of RGB, as the official script (it reads with skimage, so RGB order)
        _, warp = cv2.findTransformECC(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(zs, cv2.COLOR_RGB2GRAY),
                                       warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 5)
    except cv2.error:  # "did not converge", flat images: score unaligned, the caller counts it
        warp, failed = np.eye(3, dtype=np.float32), True
    h, w = x.shape[:2]
    zr = cv2.warpPerspective(zs, warp, (w, h), flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpPerspective(np.ones_like(zs, dtype=np.float32), warp, (w, h),
                               flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Aligned(zr * mask, x * mask, mask, np.asarray(warp), failed)


def masked_psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """``10 log10(1 / (sum((gt - pred)^2) / sum(mask)))`` on masked [0, 1] images."""
    err = np.sum((gt - pred) ** 2, dtype=np.float64) / np.sum(mask)
    return float(10 * np.log10(1.0 / err)) if err > 0 else float("inf")


def masked_ssim(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """skimage's Gaussian SSIM map times the mask, border cropped, masked mean per channel, averaged."""
    from skimage.metrics import structural_similarity

    _, ssim_map = structural_similarity(gt, pred, channel_axis=-1, gaussian_weights=True,
                                        use_sample_covariance=False, data_range=1.0, full=True)
    ssim_map = (ssim_map * mask)[BORDER:-BORDER, BORDER:-BORDER, :]
    crop = mask[BORDER:-BORDER, BORDER:-BORDER, :]
    per_channel = ssim_map.sum(axis=0).sum(axis=0) / crop.sum(axis=0).sum(axis=0)  # (3,)
    return float(np.mean(per_channel))


def realblur_score(pred: np.ndarray, gt: np.ndarray) -> dict[str, float | bool]:
    """Scores one RealBlur prediction with the official protocol.

    Args:
        pred: HxWx3 RGB prediction, uint8 (a saved PNG) or float32 in [0, 1].
        gt: HxWx3 RGB ground truth of the same size.

    Returns:
        ``{"psnr", "ssim", "ecc_failed"}``; ``ecc_failed`` is True when ECC did not converge and the
        unaligned (identity-warped) prediction was scored.
    """
    a = realblur_align(pred, gt)
    if min(a.gt.shape[:2]) <= 2 * BORDER + 6:
        raise ValueError(f"realblur_score: images of {a.gt.shape[:2]} are too small for the 11x11 Gaussian SSIM window and the 5-px border crop")
    return {"psnr": masked_psnr(a.pred, a.gt, a.mask), "ssim": masked_ssim(a.pred, a.gt, a.mask), "ecc_failed": a.ecc_failed}
