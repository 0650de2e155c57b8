"""Reading and writing images for deblurring: PNG, JPEG, TIFF, BMP and WebP through OpenCV.

An image comes back as float32 pixels in [0, 1], shape (H, W, C), RGB channel order, together with
what is needed to write the result the same way: mode (L, LA, RGB, RGBA), bit depth (8 or 16) and
format. Writes are atomic: the bytes go to a temporary file in the destination folder, which then
replaces the destination in one step, so an interrupted run never leaves a partial image.

Every failure a user can cause raises :class:`algnet.errors.AlgnetError` with one line naming the
file. OpenCV is imported lazily so ``algnet --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import fileio
from .errors import AlgnetError

# Extension -> format name; the format decides what a file can hold.
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp", ".webp": "webp"}
IMAGE_EXTENSIONS = tuple(FORMATS)
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
SIXTEEN_BIT_FORMATS = ("png", "tiff")  # OpenCV writes 16 bits only to these

# Leading bytes of each format, to tell "not an image at all" from "a damaged image".
_SIGNATURES = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "bmp": (b"BM",),
    "webp": (b"RIFF",),
}
_PNG_GRAY_ALPHA = 4  # IHDR colour type


@dataclass
class Image:
    """A decoded image.

    Attributes:
        pixels: float32 (H, W, C) in [0, 1], channels R, G, B[, A] or L[, A].
        mode: "L", "LA", "RGB" or "RGBA".
        bit_depth: 8 or 16 bits per sample in the file.
        format: "png", "jpeg", "tiff", "bmp" or "webp" (from the extension).
    """

    pixels: np.ndarray
    mode: str
    bit_depth: int
    format: str

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.pixels.shape[0], self.pixels.shape[1]


def image_format(path: str | os.PathLike) -> str:
    """Format name from the file extension; AlgnetError for an unsupported one."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise AlgnetError(f"{path}: unsupported image extension {ext or '(none)'!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    return FORMATS[ext]


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in FORMATS


@contextlib.contextmanager
def _quiet_opencv():
    """Silences OpenCV's own warnings (it prints them for every bad file); our error says it once."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def read_image(path: str | os.PathLike) -> Image:
    """Reads an image file as float32 RGB(A)/L(A) pixels in [0, 1].

    JPEG files are turned upright by their EXIF orientation; other formats are read as stored.

    Args:
        path: a .png, .jpg/.jpeg, .tif/.tiff, .bmp or .webp file.

    Raises:
        AlgnetError: missing or empty file, a file that is not an image or is truncated, or a
            sample type other than 8/16-bit unsigned integers (e.g. 32-bit float TIFF).
    """
    import cv2

    path = Path(path)
    fmt = image_format(path)
    if not path.exists():
        raise AlgnetError(f"{path}: no such file")
    if path.is_dir():
        raise AlgnetError(f"{path}: is a folder, expected an image file")
    data = path.read_bytes()  # bytes + imdecode: works for any path encoding, unlike cv2.imread
    if not data:
        raise AlgnetError(f"{path}: the file is empty")
    if not data.startswith(_SIGNATURES[fmt]):
        raise AlgnetError(f"{path}: not a {fmt.upper()} image (its content does not start with a {fmt.upper()} signature)")
    with _quiet_opencv():
        try:
            array = cv2.imdecode(np.frombuffer(data, np.uint8), _decode_flags(fmt))
        except cv2.error as err:
            raise AlgnetError(f"{path}: cannot decode the image ({str(err).strip().splitlines()[-1][:160]})") from None
    if array is None or array.size == 0:
        raise AlgnetError(f"{path}: cannot decode the image; the file is truncated or corrupt")
    if fmt == "png" and _truncated_png(data):
        raise AlgnetError(f"{path}: the PNG file is truncated (no IEND chunk)")
    if array.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif array.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    else:
        raise AlgnetError(f"{path}: unsupported sample type {array.dtype} (only 8- and 16-bit unsigned integer images are supported)")
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels not in MODES:
        raise AlgnetError(f"{path}: unsupported number of channels ({channels})")
    if channels >= 3:
        array = array[..., [2, 1, 0, 3][:channels]]  # BGR(A) -> RGB(A)
    if fmt == "png" and channels == 4 and _png_colour_type(data) == _PNG_GRAY_ALPHA:
        array = array[..., [0, 3]]  # OpenCV expands gray+alpha to BGRA
    pixels = array.astype(np.float32) / np.float32(scale)
    return Image(pixels=pixels, mode=MODES[pixels.shape[2]], bit_depth=bit_depth, format=fmt)


def _decode_flags(fmt: str) -> int:
    import cv2

    # JPEG: ANYCOLOR|ANYDEPTH applies the EXIF orientation (camera photos are often stored sideways),
    # so pixels come upright and are written upright; JPEG has no alpha for UNCHANGED to keep.
    # Other formats: UNCHANGED keeps alpha and 16 bits (it ignores EXIF orientation).
    return cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if fmt == "jpeg" else cv2.IMREAD_UNCHANGED


def _png_colour_type(data: bytes) -> int:
    return data[25] if len(data) > 25 else -1


def _truncated_png(data: bytes) -> bool:
    # libpng decodes some truncated files (cut inside the last IDAT or before IEND) with a warning.
    return b"IEND" not in data[-32:]


def to_integer(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """float [0, 1] -> uint8/uint16 by rounding (the inverse of read_image's division)."""
    if bit_depth not in (8, 16):
        raise AlgnetError(f"unsupported bit depth {bit_depth}; use 8 or 16")
    peak = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.rint(np.clip(pixels, 0.0, 1.0) * peak).astype(dtype)


def encode_image(pixels: np.ndarray, fmt: str, mode: str | None = None, bit_depth: int = 8, quality: int = 95) -> bytes:
    """Encodes float [0, 1] (H, W[, C]) pixels to the bytes of a ``fmt`` file."""
    import cv2

    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in MODES:
        raise AlgnetError(f"cannot write pixels of shape {pixels.shape}; expected (H, W) or (H, W, 1-4)")
    mode = mode or MODES[pixels.shape[2]]
    if MODES.get(pixels.shape[2]) != mode:
        raise AlgnetError(f"mode {mode!r} does not match {pixels.shape[2]} channels")
    if bit_depth == 16 and fmt not in SIXTEEN_BIT_FORMATS:
        raise AlgnetError(f"{fmt.upper()} cannot hold 16-bit samples; use PNG or TIFF")
    ints = to_integer(pixels, bit_depth)
    if mode == "LA":
        if fmt != "png":
            raise AlgnetError(f"gray+alpha (LA) images can be written as PNG only, not {fmt.upper()}")
        return _encode_png_gray_alpha(ints)
    if mode == "L":
        ints = ints[:, :, 0]
    else:
        ints = ints[..., [2, 1, 0, 3][: ints.shape[2]]]  # RGB(A) -> BGR(A)
    params = {"jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality], "webp": [cv2.IMWRITE_WEBP_QUALITY, quality]}.get(fmt, [])
    ext = {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, "." + fmt)
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(ints), params)
    if not ok:
        raise AlgnetError(f"OpenCV could not encode a {mode} {bit_depth}-bit {fmt.upper()} image")
    return buf.tobytes()


def _encode_png_gray_alpha(ints: np.ndarray) -> bytes:
    """Minimal PNG writer for gray+alpha, which OpenCV cannot write (it only writes 1, 3, 4 channels)."""
    h, w, _ = ints.shape
    depth = 8 if ints.dtype == np.uint8 else 16
    rows = ints.astype(">u2") if depth == 16 else ints  # PNG samples are big-endian
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows.reshape(h, -1).view(np.uint8)], axis=1)  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, depth, _PNG_GRAY_ALPHA, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")


def write_image(path: str | os.PathLike, pixels: np.ndarray, mode: str | None = None, bit_depth: int = 8, quality: int = 95) -> Path:
    """Writes float [0, 1] pixels atomically in the format of ``path``'s extension.

    Args:
        path: destination; its folder must exist.
        pixels: (H, W) or (H, W, C) with C = 1, 2, 3, 4 (L, LA, RGB, RGBA; RGB order).
        mode: checked against the channel count; default from it.
        bit_depth: 8, or 16 for PNG/TIFF.
        quality: JPEG/WebP quality.
    """
    path = Path(path)
    data = encode_image(pixels, image_format(path), mode, bit_depth, quality)
    if not path.parent.is_dir():
        raise AlgnetError(f"{path}: the folder {path.parent} does not exist")
    atomic_write_bytes(path, data)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes the file atomically (see :mod:`algnet.fileio`); errors name the file."""
    try:
        fileio.atomic_write_bytes(path, data)
    except OSError as err:
        raise AlgnetError(f"{path}: cannot write: {err.strerror or err}") from None
