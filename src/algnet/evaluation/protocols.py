"""Each benchmark's protocol as three steps: how to read images, how to turn a network output into
what is scored, and which metrics score a pair (DESIGN.md section 6).

- ``gopro``, ``hide``: uint8 RGB (a 16-bit file is rounded to 8 bits, with a note); PSNR with peak 255
  over all RGB values and MATLAB's volume SSIM, as the MATLAB scripts behind the tables.
- ``realblur``: uint8 RGB, ECC alignment, masked PSNR/SSIM (official ``evaluation_RealBlur_ecc.py``).
- ``dpdd``: Restormer's script: the 16-bit ground truth (and network input) read with OpenCV's default
  flags, which keeps the high byte (value >> 8), then / 255; the prediction at its own precision.
- ``dpdd16``: the same metrics on the full 16-bit values / 65535.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import AlgnetError

PROTOCOLS = ("gopro", "hide", "realblur", "dpdd", "dpdd16")
# protocol of each dataset name of algnet.data (the "folders" layout has no protocol of its own)
DATASET_PROTOCOL = {"gopro": "gopro", "hide": "hide", "realblur_j": "realblur", "realblur_r": "realblur",
                    "dpdd": "dpdd", "folders": "gopro"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise AlgnetError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return protocol


def _imread(path: Path, flags: int) -> np.ndarray:
    """Reads an image as RGB(A-less) with the given OpenCV flags; a user error if it cannot."""
    import cv2

    if not Path(path).is_file():
        raise AlgnetError(f"{path}: no such image file")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise AlgnetError(f"{path}: cannot read the image (not an image, or corrupt)")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _full_precision(path: Path) -> np.ndarray:
    """Float32 in [0, 1] at the file's own bit depth."""
    import cv2

    image = _imread(path, cv2.IMREAD_UNCHANGED)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    raise AlgnetError(f"{path}: unsupported pixel type {image.dtype} (expected 8- or 16-bit)")


def _as_uint8(path: Path, notes: list[str]) -> np.ndarray:
    import cv2

    image = _imread(path, cv2.IMREAD_UNCHANGED)
    if image.dtype == np.uint16:
        notes.append("16-bit images were rounded to 8 bits (round(v / 257)) for the uint8 protocol")
        return np.round(image / 257.0).astype(np.uint8)
    if image.dtype != np.uint8:
        raise AlgnetError(f"{path}: unsupported pixel type {image.dtype} (expected 8- or 16-bit)")
    return image


def read_ground_truth(path: Path, protocol: str, notes: list[str]) -> np.ndarray:
    """The ground-truth image as the protocol scores it: uint8 RGB, or float32 RGB in [0, 1] for DPDD."""
    import cv2

    if protocol == "dpdd":
        # OpenCV's default flags truncate 16-bit PNGs to their high byte: the published convention
        return _imread(path, cv2.IMREAD_COLOR).astype(np.float32) / 255.0
    if protocol == "dpdd16":
        return _full_precision(path)
    return _as_uint8(path, notes)


def read_prediction(path: Path, protocol: str, notes: list[str]) -> np.ndarray:
    """A saved prediction: uint8 RGB, or for DPDD float32 at the file's own precision (8 or 16 bits)."""
    if protocol in ("dpdd", "dpdd16"):
        return _full_precision(path)
    return _as_uint8(path, notes)


def read_input(path: Path, protocol: str) -> np.ndarray:
    """The blurred network input, float32 RGB in [0, 1], read as the protocol's reference script does."""
    import cv2

    if protocol == "dpdd16":
        return _full_precision(path)
    # Restormer's DPDD script feeds the 8-bit-truncated input as well; 8-bit datasets read as is
    return _imread(path, cv2.IMREAD_COLOR).astype(np.float32) / 255.0


def from_network(restored: np.ndarray, protocol: str) -> np.ndarray:
    """Turns a clamped float32 HxWx3 output into what is scored: uint8 like a saved PNG, or floats for DPDD."""
    if protocol in ("dpdd", "dpdd16"):
        return restored.astype(np.float32)  # Restormer scores the clamped float output, not quantised
    return np.round(restored * 255.0).astype(np.uint8)


def to_png(restored: np.ndarray, protocol: str) -> np.ndarray:
    """The array to save for a clamped float output: 16-bit for dpdd16, 8-bit otherwise."""
    if protocol == "dpdd16":
        return np.round(restored * 65535.0).astype(np.uint16)
    return np.round(restored * 255.0).astype(np.uint8)


def score_pair(pred: np.ndarray, gt: np.ndarray, protocol: str,
               lpips_fn: Callable[[np.ndarray, np.ndarray], float] | None = None) -> dict:
    """Scores one prepared pair (see the read functions) with the protocol's metrics."""
    from .. import metrics

    if protocol in ("gopro", "hide"):
        return {"psnr": metrics.psnr(pred, gt, 255), "ssim": metrics.ssim_matlab(pred, gt)}
    if protocol == "realblur":
        return metrics.realblur_score(pred, gt)
    return metrics.dpdd_metrics(pred, gt, lpips_fn)
