"""RealBlur protocol: ECC recovers a known shift; each scoring step against closed forms and skimage."""

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from algnet.metrics import psnr, realblur_align, realblur_score


def _texture(size=96, seed=0, blur=2.0):
    """A smooth, textured RGB image in [0, 1]: ECC needs gradients everywhere and no aliasing."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((size, size, 3)), (blur, blur, 0))
    return (img - img.min()) / (img.max() - img.min())


def _crop(img, dy, dx, size=64, margin=16):
    return img[margin + dy: margin + dy + size, margin + dx: margin + dx + size]


class TestRealBlurScore:
    def test_recovers_known_shift(self):
        img = _texture()
        gt = (_crop(img, 0, 0) * 255).round().astype(np.uint8)
        pred = (_crop(img, 2, -3) * 255).round().astype(np.uint8)
        unaligned = psnr(pred, gt, 255)
        result = realblur_score(pred, gt)
        assert unaligned < 25
        assert result["psnr"] > 35 and result["ssim"] > 0.98 and not result["ecc_failed"]
        warp = realblur_align(pred, gt).warp
        # WARP_INVERSE_MAP: the homography maps gt coordinates to prediction coordinates
        assert warp[0, 2] == pytest.approx(3, abs=0.1) and warp[1, 2] == pytest.approx(-2, abs=0.1)

    def test_intensity_matching(self):
        gt = _crop(_texture(), 0, 0).astype(np.float32)
        result = realblur_score((0.8 * gt).astype(np.float32), gt)
        assert result["psnr"] > 70 and result["ssim"] == pytest.approx(1.0, abs=1e-5)

    def test_identical(self):
        gt = (_crop(_texture(), 0, 0) * 255).round().astype(np.uint8)
        result = realblur_score(gt, gt)
        assert result["psnr"] == math.inf and result["ssim"] == pytest.approx(1.0, abs=1e-6)

    def test_ecc_failure_falls_back_to_identity(self):
        gt = (_crop(_texture(), 0, 0) * 255).round().astype(np.uint8)
        pred = np.full_like(gt, 100)  # flat: ECC cannot converge
        result = realblur_score(pred, gt)
        assert result["ecc_failed"]
        # identity warp, full mask: the protocol reduces to intensity match + plain PSNR/SSIM
        x, z = gt.astype(np.float32) / 255, pred.astype(np.float32) / 255
        zs = (np.sum(x * z) / np.sum(z * z)) * z
        assert result["psnr"] == pytest.approx(psnr(zs, x, 1.0), abs=1e-4)
        _, smap = structural_similarity(x, zs, channel_axis=-1, gaussian_weights=True,
                                        use_sample_covariance=False, data_range=1.0, full=True)
        assert result["ssim"] == pytest.approx(smap[5:-5, 5:-5].mean(), abs=1e-6)

    def test_mask_and_masked_psnr(self):
        img = _texture()
        gt = _crop(img, 0, 0).astype(np.float32)
        a = realblur_align(_crop(img, 0, 4).astype(np.float32), gt)
        # pred(x) = gt(x + 4): gt columns 0-3 have no source in the prediction and are masked out
        empty_columns = np.flatnonzero(a.mask[:, :, 0].min(axis=0) == 0)
        assert 3 <= len(empty_columns) <= 5 and set(empty_columns) <= set(range(0, 6))
        err = np.sum((a.gt - a.pred) ** 2, dtype=np.float64) / a.mask.sum()
        assert realblur_score(_crop(img, 0, 4).astype(np.float32), gt)["psnr"] == pytest.approx(10 * np.log10(1 / err))

    def test_exceptions(self):
        gt = np.zeros((64, 64, 3), np.uint8)
        with pytest.raises(ValueError, match="shape"):
            realblur_score(gt[1:], gt)
        with pytest.raises(ValueError, match="HxWx3"):
            realblur_score(gt[..., 0], gt)
        with pytest.raises(TypeError, match="uint8 or float"):
            realblur_score(gt.astype(np.int32), gt)
