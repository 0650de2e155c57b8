"""Image-quality metrics, each benchmark's exactly (see DESIGN.md section 6).

- :func:`psnr`, :func:`ssim_matlab`: the GoPro/HIDE tables (MATLAB's ``psnr`` and volume ``ssim``).
- :func:`realblur_score`: RealBlur's ECC alignment and masked PSNR/SSIM.
- :func:`dpdd_metrics`: Restormer's DPDD PSNR/SSIM/MAE/LPIPS.
- :func:`load_lpips`: LPIPS(alex) from local weights only, or None.
"""

from .dpdd import DPDD_INDOOR, DPDD_TEST_COUNT, dpdd_metrics
from .fidelity import psnr, ssim_matlab
from .perceptual import load_lpips
from .realblur import realblur_align, realblur_score

__all__ = ["psnr", "ssim_matlab", "realblur_score", "realblur_align", "dpdd_metrics", "load_lpips",
           "DPDD_INDOOR", "DPDD_TEST_COUNT"]
