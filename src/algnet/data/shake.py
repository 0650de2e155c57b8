"""Camera shake as a camera records it: the exposure integrated in linear light.

A blurred photo is not a sharp sRGB image convolved with a kernel. The sensor integrates light
(linear values) over the exposure while the camera moves; highlights brighter than the display's
white spread their energy before they clip; photon and read noise are added to the integrated
signal; then the camera applies its tone curve, quantises to 8 bits and often re-encodes as JPEG.
:func:`shake` follows that order, each step optional:

1. decode sRGB to linear light (IEC 61966-2-1);
2. lift saturated highlights (values the 8-bit photo clipped) by a random gain;
3. integrate the exposure along a Boracchi-Foi camera path, optionally rotating about the optical
   centre as well (spatially varying blur);
4. add Poisson-Gaussian sensor noise (Foi et al., "Practical Poissonian-Gaussian noise modeling
   and fitting for single-image raw-data", IEEE TIP 2008) at a random level;
5. clip to the sensor's range, encode to sRGB, quantise to 8 bits, optionally re-encode as JPEG.

Path extents are in pixels at the image's native resolution: the larger side of the path's
bounding box. :data:`LEVELS` names the three strengths of the ``shake`` benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AlgnetError

__all__ = [
    "ShakeSpec", "LEVELS", "level_spec", "srgb_to_linear", "linear_to_srgb", "camera_path", "splat_path", "path_kernel",
    "integrate_exposure", "add_sensor_noise", "jpeg_roundtrip", "shake", "margin_for",
]

# Path extents (px) of the benchmark's strengths: each level starts where the previous one ends.
LEVELS: dict[str, tuple[float, float]] = {"mild": (3.0, 7.0), "medium": (7.0, 15.0), "strong": (15.0, 25.0)}

_HIGHLIGHT_THRESHOLD = 0.95  # sRGB value above which a pixel is taken as clipped by the camera
_EXPOSURE_SAMPLES = 48       # camera poses integrated when the exposure also rotates


@dataclass(frozen=True)
class ShakeSpec:
    """How a sharp sRGB image becomes a shaken one; every random draw is per image.

    Attributes:
        extent: (low, high) path extent in pixels, drawn uniformly.
        linear_light: blur linear light (decode sRGB first, encode after); False blurs sRGB values.
        highlights: probability that an image's clipped highlights (sRGB >= 0.95) are lifted.
        highlight_gain: (low, high) linear-light gain of lifted highlights.
        noise: probability of Poisson-Gaussian sensor noise.
        photons: (low, high) photo-electrons at white, drawn log-uniformly (Poisson part).
        read_noise: (low, high) standard deviation of the Gaussian part, in linear units of white.
        jpeg: probability of a JPEG re-encoding.
        jpeg_quality: (low, high) JPEG quality, drawn uniformly (integers).
        rotation: largest in-plane rotation during the exposure, degrees (0: translation only).
        quantize: round the result to 8 bits as a camera's output.
    """

    extent: tuple[float, float] = LEVELS["medium"]
    linear_light: bool = True
    highlights: float = 0.0
    highlight_gain: tuple[float, float] = (1.5, 4.0)
    noise: float = 0.0
    photons: tuple[float, float] = (300.0, 3000.0)
    read_noise: tuple[float, float] = (0.0005, 0.004)
    jpeg: float = 0.0
    jpeg_quality: tuple[int, int] = (70, 95)
    rotation: float = 0.0
    quantize: bool = True

    def __post_init__(self):
        def check_range(name, lo_min, hi_max=None):
            lo, hi = getattr(self, name)
            if not (lo_min <= lo <= hi and (hi_max is None or hi <= hi_max)):
                raise AlgnetError(f"shake {name} must be (low, high) with {lo_min} <= low <= high"
                                  f"{'' if hi_max is None else f' <= {hi_max}'}, got {getattr(self, name)!r}")

        check_range("extent", 0.0)
        check_range("highlight_gain", 1.0)
        check_range("photons", 1.0)
        check_range("read_noise", 0.0)
        check_range("jpeg_quality", 1, 100)
        for name in ("highlights", "noise", "jpeg"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise AlgnetError(f"shake {name} is a probability in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= self.rotation <= 10.0:
            raise AlgnetError(f"shake rotation must be within [0, 10] degrees, got {self.rotation!r}")


def level_spec(level: str, **changes) -> ShakeSpec:
    """The spec of a named strength (:data:`LEVELS`), with optional field changes."""
    if level not in LEVELS:
        raise AlgnetError(f"unknown shake level {level!r}; expected one of {', '.join(LEVELS)}")
    return ShakeSpec(extent=LEVELS[level], **changes)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding of sRGB values in [0, 1] (values above 1 continue the power law)."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(y: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding of linear values in [0, 1]; the inverse of :func:`srgb_to_linear`."""
    y = np.asarray(y, dtype=np.float32)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.maximum(y, 0.0031308) ** (1 / 2.4) - 0.055).astype(np.float32)


def camera_path(rng: np.random.Generator, extent: float, steps: int = 512) -> np.ndarray:
    """A Boracchi-Foi camera path, centred on its centroid, scaled so that the larger side of its
    bounding box is ``extent`` pixels. Complex points (x + iy), in exposure order."""
    from .synthetic import _trajectory

    path = _trajectory(rng, steps)
    path = path - path.mean()  # centroid at the origin: no net shift between blur and sharp
    side = max(np.ptp(path.real), np.ptp(path.imag), 1e-12)
    return path * (extent / side)


def splat_path(path: np.ndarray, size: int) -> np.ndarray:
    """Bilinear splats of the points of ``path`` (complex, pixels from the centre) into an odd
    ``size`` x ``size`` kernel whose centre pixel is the origin, normalised to sum 1: sub-pixel
    motion still moves mass between pixels. The path must stay a pixel inside the kernel."""
    cols, rows = size // 2 + path.real, size // 2 + path.imag
    c0, r0 = np.floor(cols).astype(int), np.floor(rows).astype(int)
    fc, fr = cols - c0, rows - r0
    kernel = np.zeros((size, size), dtype=np.float64)
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        np.add.at(kernel, (r0 + dr, c0 + dc), w)
    return (kernel / kernel.sum()).astype(np.float32)


def path_kernel(path: np.ndarray) -> np.ndarray:
    """The blur kernel of a translation-only exposure along ``path``: the smallest odd square that
    holds its bilinear splats (:func:`splat_path`). Sums to 1."""
    reach = int(np.ceil(max(np.abs(path.real).max(), np.abs(path.imag).max()))) + 1
    return splat_path(path, 2 * reach + 1)


def margin_for(spec: ShakeSpec, size: int) -> int:
    """Pixels of real content needed around a ``size`` x ``size`` crop so that its blur never reads
    a reflected border: the largest path radius plus what the largest rotation moves a corner."""
    rotation_reach = np.deg2rad(spec.rotation) / 2 * size / np.sqrt(2)  # half the angle, half the diagonal
    return int(np.ceil(spec.extent[1] + rotation_reach)) + 2


def integrate_exposure(image: np.ndarray, path: np.ndarray, angle: float = 0.0,
                       centre: tuple[float, float] | None = None, kernel: np.ndarray | None = None) -> np.ndarray:
    """The mean of ``image`` over the camera poses of an exposure, in the image's own units.

    The camera translates along ``path`` (complex, pixels) and turns linearly from ``-angle/2`` to
    ``+angle/2`` degrees about ``centre`` (x, y; default the image centre) over the same time.
    Translation only (``angle=0``) is a convolution with :func:`path_kernel`; a rotation makes the
    blur vary across the image, growing with the distance from the centre. Borders are reflected.
    ``kernel``, when the caller has it, is ``path_kernel(path)`` (not computed again).
    """
    import cv2

    src = np.ascontiguousarray(image, dtype=np.float32)
    if angle == 0.0:
        kernel = path_kernel(path) if kernel is None else kernel
        return cv2.filter2D(src, -1, np.ascontiguousarray(kernel[::-1, ::-1]), borderType=cv2.BORDER_REFLECT)
    h, w = src.shape[:2]
    cx, cy = centre if centre is not None else ((w - 1) / 2, (h - 1) / 2)
    index = np.linspace(0, len(path) - 1, _EXPOSURE_SAMPLES).round().astype(int)
    angles = np.linspace(-angle / 2, angle / 2, _EXPOSURE_SAMPLES)
    acc = np.zeros_like(src)
    for i, a in zip(index, angles):
        # The sharp scene seen from pose i: rotated by a about the centre, then shifted by path[i].
        m = cv2.getRotationMatrix2D((cx, cy), float(a), 1.0)
        m[:, 2] += (path[i].real, path[i].imag)
        acc += cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).reshape(src.shape)
    return acc / _EXPOSURE_SAMPLES


def add_sensor_noise(linear: np.ndarray, rng: np.random.Generator, photons: float, read_noise: float) -> np.ndarray:
    """Poisson-Gaussian noise: ``Poisson(photons * x) / photons + N(0, read_noise^2)``, ``x`` in
    linear units of white (negative values count as no light)."""
    counts = rng.poisson(np.maximum(linear, 0.0).astype(np.float64) * photons)
    noisy = counts / photons + rng.normal(0.0, read_noise, linear.shape)
    return noisy.astype(np.float32)


def jpeg_roundtrip(srgb: np.ndarray, quality: int) -> np.ndarray:
    """Encodes an (H, W, 3) RGB image in [0, 1] as an 8-bit JPEG of ``quality`` and decodes it."""
    import cv2

    bgr = np.round(np.clip(srgb[..., ::-1], 0, 1) * 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR image
        raise AlgnetError("JPEG encoding failed")
    return (cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1] / 255).astype(np.float32)


@dataclass
class ShakeDraw:
    """What :func:`shake` drew for one image (for tests, the benchmark's oracle and reports)."""

    path: np.ndarray
    kernel: np.ndarray
    extent: float
    angle: float = 0.0
    highlight_gain: float = 1.0
    photons: float | None = None
    read_noise: float | None = None
    jpeg_quality: int | None = None


def shake(sharp: np.ndarray, rng: np.random.Generator, spec: ShakeSpec) -> tuple[np.ndarray, ShakeDraw]:
    """Blurs an (H, W, 3) float sRGB image in [0, 1] as a shaken camera would record it.

    Returns the blurred image (float32, [0, 1], 8-bit steps when ``spec.quantize``) and the draw.
    The result is aligned with ``sharp`` (the path's centroid is the sharp pose). Content within
    :func:`margin_for` of the borders sees reflected pixels; crop it away for training pairs.
    """
    if sharp.ndim != 3 or sharp.shape[2] != 3:
        raise AlgnetError(f"shake needs an (H, W, 3) image, got shape {sharp.shape}")
    # Every draw happens whether or not its step is on, so switching one step off leaves the
    # others' draws (path, levels) unchanged for the same generator state.
    extent = float(rng.uniform(*spec.extent))
    path = camera_path(rng, extent)
    angle = float(rng.uniform(-spec.rotation, spec.rotation))
    lift, gain = rng.random() < spec.highlights, float(rng.uniform(*spec.highlight_gain))
    noisy = rng.random() < spec.noise
    photons = float(np.exp(rng.uniform(np.log(spec.photons[0]), np.log(spec.photons[1]))))
    read_noise = float(rng.uniform(*spec.read_noise))
    recode, quality = rng.random() < spec.jpeg, int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
    draw = ShakeDraw(path=path, kernel=path_kernel(path), extent=extent, angle=angle,
                     highlight_gain=gain if lift else 1.0, photons=photons if noisy else None,
                     read_noise=read_noise if noisy else None, jpeg_quality=quality if recode else None)

    x = np.asarray(sharp, dtype=np.float32)
    light = srgb_to_linear(x) if spec.linear_light else x.copy()
    if lift:
        light = np.where(x >= _HIGHLIGHT_THRESHOLD, light * gain, light)
    blurred = integrate_exposure(light, path, angle, kernel=draw.kernel)
    if noisy:
        blurred = add_sensor_noise(blurred, rng, photons, read_noise)
    blurred = np.clip(blurred, 0.0, 1.0)
    out = linear_to_srgb(blurred) if spec.linear_light else blurred
    if spec.quantize:
        out = np.round(out * 255) / 255
    if recode:
        out = jpeg_roundtrip(out, quality)
    return out.astype(np.float32), draw
