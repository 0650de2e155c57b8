"""The ``shake`` benchmark: camera shake at three strengths on photos that no training split uses.

Regenerated from a seed on the fly (nothing is stored): each held-out photo
(:data:`algnet.data.sources.VAL_PHOTOS`, whole images) is shaken ``per_photo`` times at each level
of :data:`algnet.data.shake.LEVELS` by :func:`algnet.data.shake.shake`, with linear-light exposure
and Poisson-Gaussian sensor noise, 8-bit output. Rows:

- ``blurred``: the input itself;
- ``wiener-oracle``: non-blind Wiener deconvolution in linear light with the TRUE kernel, its
  noise-to-signal ratio picked per image from a grid by the PSNR against the sharp photo: the
  classical answer with the answer in hand, a reference rather than a competitor;
- one row per checkpoint.

PSNR and SSIM are scikit-image's on float RGB in [0, 1] (SSIM with a 7x7 window over channels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from ..data.shake import LEVELS, ShakeSpec, linear_to_srgb, shake, srgb_to_linear

__all__ = ["BENCHMARK_SPEC", "ShakeItem", "shake_items", "wiener_deconvolve", "wiener_oracle", "run_shake",
           "psnr_ssim", "format_shake_table"]

# Everything but the extent: the sensor noise of a well-lit handheld shot at a low ISO.
BENCHMARK_SPEC = dict(linear_light=True, noise=1.0, photons=(3000.0, 20000.0), read_noise=(0.0005, 0.002),
                      highlights=0.0, jpeg=0.0, rotation=0.0, quantize=True)
_NSR_GRID = tuple(10.0 ** np.arange(-4.0, -0.9, 0.25))


@dataclass
class ShakeItem:
    level: str
    name: str
    sharp: np.ndarray    # (H, W, 3) float32 sRGB in [0, 1]
    blurred: np.ndarray  # the same, shaken
    kernel: np.ndarray   # the true (translation-only) blur kernel


def shake_items(seed: int = 0, levels: Sequence[str] = tuple(LEVELS), per_photo: int = 4) -> Iterator[ShakeItem]:
    """The benchmark's images, a pure function of ``seed``."""
    from ..data.imread import read_rgb
    from ..data.sources import VAL_PHOTOS, source_path

    photos = {n: read_rgb(source_path(n)) for n in VAL_PHOTOS}
    for li, level in enumerate(levels):
        spec = ShakeSpec(extent=LEVELS[level], **BENCHMARK_SPEC)
        for pi, (name, sharp) in enumerate(photos.items()):
            for k in range(per_photo):
                rng = np.random.default_rng([seed, li, pi, k])
                blurred, draw = shake(sharp, rng, spec)
                yield ShakeItem(level, f"{level}/{name.split(':', 1)[1]}-{k}", sharp, blurred, draw.kernel)


def _wiener_spectra(blurred: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    r = kernel.shape[0] // 2
    pad = 2 * r + 2
    padded = np.pad(blurred, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    h, w = padded.shape[:2]
    otf_src = np.zeros((h, w))
    otf_src[: kernel.shape[0], : kernel.shape[1]] = kernel
    otf_src = np.roll(otf_src, (-r, -r), axis=(0, 1))  # kernel centre at the origin
    return np.fft.rfft2(otf_src), np.fft.rfft2(padded, axes=(0, 1)), pad


def _wiener_apply(K: np.ndarray, Y: np.ndarray, pad: int, shape: tuple[int, ...], nsr: float) -> np.ndarray:
    h, w = shape[0] + 2 * pad, shape[1] + 2 * pad
    out = np.fft.irfft2(Y * (np.conj(K) / (np.abs(K) ** 2 + nsr))[..., None], s=(h, w), axes=(0, 1))
    return out[pad: pad + shape[0], pad: pad + shape[1]].astype(np.float32)


def wiener_deconvolve(blurred: np.ndarray, kernel: np.ndarray, nsr: float) -> np.ndarray:
    """Wiener deconvolution of an (H, W, C) linear image by ``kernel`` (the blur as
    :func:`algnet.data.shake.integrate_exposure` applies it: a true convolution, reflected borders).

    The image is reflect-padded by twice the kernel's reach, so the FFT's circular wrap meets a
    mirrored, not a cut, border; ``nsr`` is the constant noise-to-signal power ratio.
    """
    K, Y, pad = _wiener_spectra(blurred, kernel)
    return _wiener_apply(K, Y, pad, blurred.shape, nsr)


def wiener_oracle(item: ShakeItem) -> np.ndarray:
    """The best Wiener restoration of ``item`` over the NSR grid, judged against its sharp photo."""
    linear = srgb_to_linear(item.blurred)
    K, Y, pad = _wiener_spectra(linear, item.kernel)
    best, best_mse = None, np.inf
    for nsr in _NSR_GRID:
        out = linear_to_srgb(np.clip(_wiener_apply(K, Y, pad, linear.shape, nsr), 0, 1))
        mse = float(np.mean((out - item.sharp) ** 2))
        if mse < best_mse:
            best, best_mse = out, mse
    return best


def psnr_ssim(sharp: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """scikit-image's PSNR and SSIM (channels last) of ``image`` clipped to [0, 1], in float64."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    s, x = sharp.astype(np.float64), np.clip(image, 0, 1).astype(np.float64)
    return (float(peak_signal_noise_ratio(s, x, data_range=1.0)),
            float(structural_similarity(s, x, channel_axis=-1, data_range=1.0)))


def run_shake(methods: dict[str, Callable[[np.ndarray], np.ndarray]], seed: int = 0,
              levels: Sequence[str] = tuple(LEVELS), per_photo: int = 4, oracle: bool = True,
              progress: Callable[[str], None] | None = None) -> dict:
    """Scores ``blurred``, ``wiener-oracle`` and every method (name -> float image in, image out).

    Returns ``{"levels": {level: {row: {"psnr", "ssim"}}}, "images": [...], "seed", "per_photo",
    "seconds": {row: s}}``: means per level and row, and every image's scores.
    """
    rows = ["blurred"] + (["wiener-oracle"] if oracle else []) + list(methods)
    per_image, seconds = [], {r: 0.0 for r in rows}
    for item in shake_items(seed, levels, per_photo):
        record = {"level": item.level, "name": item.name}
        for row in rows:
            start = time.perf_counter()
            if row == "blurred":
                out = item.blurred
            elif row == "wiener-oracle":
                out = wiener_oracle(item)
            else:
                out = methods[row](item.blurred)
            seconds[row] += time.perf_counter() - start
            record[row] = dict(zip(("psnr", "ssim"), psnr_ssim(item.sharp, out)))
        per_image.append(record)
        if progress is not None:
            progress(f"{item.name}: " + ", ".join(f"{r} {record[r]['psnr']:.2f}" for r in rows))
    summary = {}
    for level in levels:
        recs = [r for r in per_image if r["level"] == level]
        summary[level] = {row: {m: float(np.mean([r[row][m] for r in recs])) for m in ("psnr", "ssim")} for row in rows}
    return {"benchmark": "shake", "seed": seed, "per_photo": per_photo, "spec": {k: v for k, v in BENCHMARK_SPEC.items()},
            "extents": {lv: list(LEVELS[lv]) for lv in levels}, "levels": summary, "images": per_image,
            "seconds": {r: round(s, 2) for r, s in seconds.items()}}


def format_shake_table(result: dict) -> str:
    """PSNR / SSIM per row and level, with each row's gain over the blurred input."""
    levels = list(result["levels"])
    rows = list(next(iter(result["levels"].values())))
    head = f"{'':<28}" + "".join(f"{lv + ' (' + '-'.join(f'{e:g}' for e in result['extents'][lv]) + ' px)':>26}" for lv in levels)
    lines = [head]
    for row in rows:
        cells = []
        for lv in levels:
            s, b = result["levels"][lv][row], result["levels"][lv]["blurred"]
            gain = "" if row == "blurred" else f" ({s['psnr'] - b['psnr']:+.2f})"
            cells.append(f"{s['psnr']:6.2f}{gain:>9} / {s['ssim']:.4f}")
        lines.append(f"{row:<28}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)
