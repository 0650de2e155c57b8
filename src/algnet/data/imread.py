"""Reading dataset images as float RGB in [0, 1], whatever their bit depth."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import AlgnetError

__all__ = ["read_rgb"]


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - opencv is a declared dependency
        raise AlgnetError("reading images needs OpenCV: pip install opencv-python-headless") from e
    return cv2


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Reads an 8- or 16-bit PNG, JPEG or TIFF as a float32 (H, W, 3) RGB array in [0, 1].

    Integer images are divided by their type's maximum (255 or 65535), so 16-bit data such as
    DPDD keeps its full precision; float TIFFs are taken as they are. Grayscale images are repeated
    to three channels and an alpha channel is dropped.

    Raises:
        AlgnetError: naming the file, when it is missing, empty, truncated or not an image.
    """
    cv2 = _cv2()
    path = Path(path)
    try:
        # imdecode of the bytes rather than imread: it also handles non-ASCII paths on Windows,
        # and lets us tell an empty file from an undecodable one.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise AlgnetError(f"cannot read image {path}: {e.strerror or e}") from e
    if data.size == 0:
        raise AlgnetError(f"cannot read image {path}: the file is empty")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise AlgnetError(f"cannot read image {path}: truncated, corrupt or not an image")

    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels in (3, 4):
        img = img[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
    else:
        raise AlgnetError(f"cannot read image {path}: {channels} channels, expected 1, 3 or 4")

    if img.dtype == np.uint8 or img.dtype == np.uint16:
        out = img.astype(np.float32) / np.float32(np.iinfo(img.dtype).max)
    elif img.dtype in (np.float32, np.float64):
        out = img.astype(np.float32)
    else:
        raise AlgnetError(f"cannot read image {path}: unsupported sample type {img.dtype}")
    return np.ascontiguousarray(out)
