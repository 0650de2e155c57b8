"""Synthetic motion blur on the photos scikit-image ships: training data that needs no download.

Blur kernels follow Boracchi and Foi, "Modeling the Performance of Image Restoration from Motion
Blur" (IEEE TIP 2012), as DeblurGAN's ``motion_blur`` reimplements it: the camera path is a random
walk with inertia (a fixed speed, a pull back towards the start, Gaussian jitter and rare abrupt
shakes), rasterised with bilinear sub-pixel accumulation into a small kernel. Here the path is
centred on its centroid, so the blurred image stays aligned with the sharp one (like GoPro, whose
sharp frame is the middle of the exposure), and scaled to a random extent that fits the kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import AlgnetError
from .datasets import _check_seed, crop_and_flip, random_crop_box, sample_rng, to_tensor
from .imread import read_rgb
from .shake import ShakeSpec, margin_for, shake, splat_path
from .sources import photo_names, render_text, source_path

__all__ = ["SyntheticBlurDataset", "make_kernel", "blur_image", "blur_crop", "bundled_photos", "photo_path", "dead_leaves"]

_SATURATION_THRESHOLD = 0.9
_TRAJECTORY_STEPS = 512


def photo_path(name: str) -> Path:
    """Path of a photo scikit-image ships, by its ``skimage.data`` name (see :mod:`.sources`)."""
    return source_path(f"skimage:{name}")


def bundled_photos(split: str = "train") -> list[str]:
    """Names of the scikit-image photos of a split (:func:`.sources.photo_names`).

    ``"train"`` and ``"val"`` are disjoint; ``"val"`` is fixed (chelsea, coffee).
    """
    if split not in ("train", "val"):
        raise AlgnetError(f"unknown synthetic split {split!r}; expected 'train' or 'val'")
    return [n.split(":", 1)[1] for n in photo_names(split)]


def _trajectory(rng: np.random.Generator, steps: int = _TRAJECTORY_STEPS) -> np.ndarray:
    """A camera path of unit total length as complex points (Boracchi & Foi's createTrajectory)."""
    anxiety = 0.1 * rng.random()
    centripetal = 0.7 * rng.random()
    gaussian_term = 10 * rng.random()
    big_shake_freq = 0.2 * rng.random()
    step = 1.0 / (steps - 1)
    angle = 2 * np.pi * rng.random()
    v = np.exp(1j * angle) * (anxiety if anxiety > 0 else step)
    # All random numbers up front: the loop itself stays cheap.
    shakes = rng.random(steps) < big_shake_freq * anxiety
    shake_turn = rng.random(steps) - 0.5
    jitter = rng.standard_normal(steps) + 1j * rng.standard_normal(steps)
    x = np.zeros(steps, dtype=np.complex128)
    for t in range(steps - 1):
        dv = anxiety * (gaussian_term * jitter[t] - centripetal * x[t]) * step
        if shakes[t]:
            dv += 2 * v * np.exp(1j * (np.pi + shake_turn[t]))
        v = v + dv
        v = v / max(abs(v), 1e-12) * step  # constant speed: only the direction changes
        x[t + 1] = x[t] + v
    return x


def make_kernel(rng: np.random.Generator, size: int = 17) -> np.ndarray:
    """A random camera-shake blur kernel.

    Args:
        rng: the generator to draw from; the kernel is a pure function of its state.
        size: odd side of the kernel in pixels.

    Returns:
        A (size, size) float32 kernel, nonnegative, summing to 1, with its centroid at the centre
        pixel; the path reaches between a quarter and all of the kernel's radius.
    """
    if not isinstance(size, (int, np.integer)) or size < 3 or size % 2 == 0:
        raise AlgnetError(f"kernel size must be an odd integer >= 3, got {size!r}")
    path = _trajectory(rng)
    path = path - path.mean()  # centroid at the origin: no net shift between blur and sharp
    radius = max(np.abs(path.real).max(), np.abs(path.imag).max(), 1e-12)
    extent = rng.uniform(0.25, 1.0) * (size // 2 - 1)  # keeps bilinear taps inside the kernel
    return splat_path(path * (extent / radius), size)


def blur_image(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolves every channel of an (H, W) or (H, W, C) float image with an odd-sized kernel.

    True convolution (the kernel flipped, as ``scipy.ndimage.convolve``), borders reflected
    (``cba|abc``, OpenCV's BORDER_REFLECT, SciPy's ``mode="reflect"``).
    """
    import cv2

    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise AlgnetError(f"blur kernel must be 2-D with odd sides, got shape {kernel.shape}")
    src = np.ascontiguousarray(img, dtype=np.float32)
    # filter2D correlates: flip the kernel to convolve.
    return cv2.filter2D(src, -1, np.ascontiguousarray(kernel[::-1, ::-1]), borderType=cv2.BORDER_REFLECT)


def blur_crop(image: np.ndarray, kernel: np.ndarray, box: tuple[int, int, int, int],
              saturation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The (sharp, blurred) crop ``box`` = (top, left, h, w) of an 8-bit (H, W, 3) photo.

    Only the crop plus the kernel's reach is blurred; at the photo's own borders that region ends
    where the photo does, so the reflected border is the same and the result equals
    ``blur_image(photo)`` cropped, at a fraction of the cost for large photos.

    Args:
        saturation: gain added to values above 0.9 before blurring. Lights carry more energy than
            an 8-bit photo shows; once the blur spreads them they still clip (the caller clips),
            which leaves the bright streaks of real night shots. 0 leaves the photo as it is.
    """
    top, left, h, w = box
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    H, W = image.shape[:2]
    y0, x0 = max(top - ry, 0), max(left - rx, 0)
    y1, x1 = min(top + h + ry, H), min(left + w + rx, W)
    region = image[y0:y1, x0:x1].astype(np.float32) / 255  # (h + 2ry, w + 2rx, 3) away from borders
    source = region
    if saturation > 0:
        source = np.where(region > _SATURATION_THRESHOLD, region * (1 + saturation), region)
    blurred = blur_image(source, kernel)
    inner = (slice(top - y0, top - y0 + h), slice(left - x0, left - x0 + w))
    return region[inner], blurred[inner]


def _shrink(photo: np.ndarray, factor: float, crop_size: int | None) -> np.ndarray:
    """The photo scaled by ``factor`` <= 1 (area interpolation), never below ``crop_size``."""
    import cv2

    h, w = photo.shape[:2]
    if crop_size is not None:
        factor = max(factor, crop_size / min(h, w))
    if factor >= 1:
        return photo
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA)


def leaf_radii(rng: np.random.Generator, count: int, r_min: float, r_max: float) -> np.ndarray:
    """``count`` radii of density proportional to r^-3 on [r_min, r_max] (inverse CDF: r^-2 is
    uniform between r_max^-2 and r_min^-2)."""
    return (r_min ** -2 + rng.random(count) * (r_max ** -2 - r_min ** -2)) ** -0.5


def dead_leaves(rng: np.random.Generator, height: int, width: int, palette: np.ndarray | None = None,
                r_min: float = 1.0, r_max: float | None = None, leaves: int | None = None) -> np.ndarray:
    """A dead-leaves image: opaque discs of power-law radii (density r^-3, scale invariant), painted
    one over another, as in Achddou, Gousseau and Ladjal, "Synthetic images as a regularity prior for
    image restoration neural networks" (SSVM 2021), who train deblurring networks on such images.

    Sharp occluding edges at every scale and flat regions between them: the content that blur
    destroys and a deblurring network must learn to restore, without end and without a download.

    Args:
        rng: the generator; the image is a pure function of its state.
        palette: (K, 3) uint8 colours to draw from (e.g. a photo's pixels, for natural colours);
            None draws uniform RGB.
        r_min, r_max: radius range in pixels; r_max defaults to the larger side.
        leaves: discs to paint; the default covers the image about five times over on average.

    Returns:
        (height, width, 3) uint8, antialiased edges.
    """
    import cv2

    r_max = float(r_max if r_max is not None else max(height, width))
    if not 0 < r_min <= r_max:
        raise AlgnetError(f"dead leaves need 0 < r_min <= r_max, got {r_min} and {r_max}")
    if leaves is None:
        # E[pi r^2] for the density r^-3 on [r_min, r_max]: 2 pi ln(r_max/r_min) / (r_min^-2 - r_max^-2).
        mean_area = 2 * np.pi * np.log(r_max / r_min) / (r_min ** -2 - r_max ** -2) if r_max > r_min else np.pi * r_min ** 2
        leaves = int(np.ceil(5 * height * width / mean_area))
    radii = leaf_radii(rng, leaves, r_min, r_max)
    centres = rng.random((leaves, 2)) * [width, height]
    if palette is None:
        colours = rng.integers(0, 256, (leaves, 3))
    else:
        colours = palette[rng.integers(0, len(palette), leaves)]
    shift = 4  # sub-pixel centres and radii (1/16 px)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = colours[0]
    for (cx, cy), r, colour in zip(centres * 2 ** shift, radii * 2 ** shift, colours.tolist()):
        cv2.circle(img, (int(cx), int(cy)), max(int(r), 1), colour, -1, cv2.LINE_AA, shift)
    return img


class SyntheticBlurDataset(torch.utils.data.Dataset):
    """Random motion blur applied to bundled photos, for demos, tests and smoke training.

    Args:
        split: ``"train"`` or ``"val"`` (disjoint photo sets; val samples do not change with the epoch).
        crop_size: side of the square random crop; ``None`` uses whole photos.
        length: samples per epoch; default one per photo for val, eight per photo for train.
        seed: base seed; each sample is a pure function of (seed, epoch, index).
        kernel_size: odd side of the blur kernels.
        noise_sigma: standard deviation of Gaussian noise added to the blurred image (0: none).
        saturation: gain added to values above 0.9 before blurring, clipped after, so that bright
            lights smear into saturated streaks as in real night shots (0: none).
        flips: random horizontal and vertical flips.
        scale_range: ``(low, high)`` with ``0 < low <= high <= 1``: each sample first shrinks its
            photo by a factor drawn uniformly from the range (area interpolation, so the smaller
            photo is as sharp as the original), which turns a few photos into many views of
            different detail sizes. ``None`` keeps the photos' own scale. The factor never makes
            the photo smaller than the crop.
        rot90: random transposition (with both flips, all eight rotations and mirrorings).
        shuffle_channels: random permutation of the colour channels (new colours, same edges).
        dead_leaves: probability that a sample's sharp image is a :func:`dead_leaves` image (in the
            colours of the photo it would have used) instead of a crop of that photo: endless
            new edges against overfitting a few photos. Needs a crop size.

    The extra augmentations draw from the sample's generator only when they are on, so the
    samples of a dataset without them do not change.

    Items are ``{"blur", "sharp", "name"}`` like :class:`~algnet.data.PairedImageDataset`.
    """

    def __init__(self, split: str = "train", crop_size: int | None = 256, length: int | None = None, seed: int = 0,
                 kernel_size: int = 17, noise_sigma: float = 0.0, saturation: float = 0.0, flips: bool = True,
                 scale_range: tuple[float, float] | None = None, rot90: bool = False, shuffle_channels: bool = False,
                 dead_leaves: float = 0.0, text: float = 0.0, shake: ShakeSpec | None = None,
                 packages: Sequence[str] = ("skimage",)):
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise AlgnetError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
        if noise_sigma < 0 or saturation < 0:
            raise AlgnetError(f"noise_sigma and saturation must be >= 0, got {noise_sigma} and {saturation}")
        if scale_range is not None:
            if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1] <= 1:
                raise AlgnetError(f"scale_range must be (low, high) with 0 < low <= high <= 1, got {scale_range!r}")
            scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 <= dead_leaves <= 1:
            raise AlgnetError(f"dead_leaves is a probability in [0, 1], got {dead_leaves!r}")
        if not 0 <= text <= 1 or dead_leaves + text > 1:
            raise AlgnetError(f"text is a probability in [0, 1] with dead_leaves + text <= 1, got {text!r}")
        if (dead_leaves > 0 or text > 0) and crop_size is None:
            raise AlgnetError("dead_leaves and text need a crop_size (the size of the images they draw)")
        if shake is not None and not isinstance(shake, ShakeSpec):
            raise AlgnetError(f"shake must be a ShakeSpec or None, got {type(shake).__name__}")
        self.dead_leaves = float(dead_leaves)
        self.text = float(text)
        self.shake = shake
        self.scale_range = scale_range
        self.rot90 = bool(rot90)
        self.shuffle_channels = bool(shuffle_channels)
        self.split = split
        self.crop_size = crop_size
        self._cache: dict[str, np.ndarray] = {}  # decoded photos, uint8
        if split not in ("train", "val"):
            raise AlgnetError(f"unknown synthetic split {split!r}; expected 'train' or 'val'")
        # Short names ("astronaut", "china") for the photos of every source package asked for.
        self._sources = {n.split(":", 1)[1]: n for n in photo_names(split, tuple(packages))}
        # Photos smaller than the crop (e.g. text.png, 172x448, for 256 crops) are left out.
        self.photos = [n for n in self._sources if crop_size is None or min(self._photo(n).shape[:2]) >= crop_size]
        if not self.photos:
            raise AlgnetError(f"no bundled {split} photo is at least {crop_size}x{crop_size}")
        self.length = length if length is not None else len(self.photos) * (1 if split == "val" else 8)
        if self.length < 1:
            raise AlgnetError(f"length must be positive, got {self.length}")
        self.seed = _check_seed(seed, "seed")
        self.kernel_size = kernel_size
        self.noise_sigma = noise_sigma
        self.saturation = saturation
        self.flips = flips
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch of the next training samples; validation samples ignore it."""
        self.epoch = _check_seed(epoch, "epoch")

    def __len__(self) -> int:
        return self.length

    def _photo(self, name: str) -> np.ndarray:
        if name not in self._cache:
            # uint8 keeps the cache 4x smaller than float; the photos are 8-bit anyway.
            self._cache[name] = np.round(read_rgb(source_path(self._sources[name])) * 255).astype(np.uint8)
        return self._cache[name]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        name = self.photos[index % len(self.photos)]
        rng = sample_rng(self.seed, 0 if self.split == "val" else self.epoch, index)
        if self.shake is not None:
            return self._shaken_item(name, index, rng)
        kernel = make_kernel(rng, self.kernel_size)
        photo = self._photo(name)
        if self.dead_leaves > 0 and rng.random() < self.dead_leaves:
            # Drawn with the kernel's reach around the crop, so the blur sees real content there.
            r = self.kernel_size // 2
            palette = photo.reshape(-1, 3)[rng.integers(0, photo.shape[0] * photo.shape[1], 4096)]
            photo = dead_leaves(rng, self.crop_size + 2 * r, self.crop_size + 2 * r, palette,
                                r_min=2.0, r_max=self.crop_size / 2)
            top, left, ch, cw = r, r, self.crop_size, self.crop_size
        else:
            if self.scale_range is not None:
                photo = _shrink(photo, rng.uniform(*self.scale_range), self.crop_size)
            h, w = photo.shape[:2]
            top, left, ch, cw = random_crop_box(rng, h, w, self.crop_size, f"bundled photo {name}")

        hflip, vflip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if self.flips else (False, False)
        sharp, blurred = blur_crop(photo, kernel, (top, left, ch, cw), self.saturation)
        if self.noise_sigma > 0:
            blurred = blurred + rng.normal(0.0, self.noise_sigma, blurred.shape).astype(np.float32)
        blurred = np.clip(blurred, 0.0, 1.0)
        return self._finish(blurred, sharp, (0, 0, ch, cw), hflip, vflip, rng, f"{name}/{index:06d}.png")

    def _finish(self, blurred, sharp, box, hflip, vflip, rng, name) -> dict:
        blurred, sharp = crop_and_flip((blurred, sharp), box, hflip, vflip)
        if self.rot90 and rng.random() < 0.5:
            blurred, sharp = blurred.transpose(1, 0, 2), sharp.transpose(1, 0, 2)
        if self.shuffle_channels:
            order = rng.permutation(3)
            blurred, sharp = blurred[..., order], sharp[..., order]
        return {"blur": to_tensor(blurred), "sharp": to_tensor(sharp), "name": name}

    def _shaken_item(self, name: str, index: int, rng: np.random.Generator) -> dict:
        """A pair made by :func:`~algnet.data.shake.shake`: the sharp content (a photo crop, dead
        leaves or a text page) with a margin of real content around it, shaken, then cropped."""
        photo = self._photo(name)
        content = rng.random()
        if self.crop_size is None:
            region, box = photo, (0, 0, photo.shape[0], photo.shape[1])
        else:
            m = margin_for(self.shake, self.crop_size)
            side = self.crop_size + 2 * m
            if content < self.dead_leaves:
                palette = photo.reshape(-1, 3)[rng.integers(0, photo.shape[0] * photo.shape[1], 4096)]
                region = dead_leaves(rng, side, side, palette, r_min=2.0, r_max=self.crop_size / 2)
                name = f"dead_leaves/{name}"
            elif content < self.dead_leaves + self.text:
                region, name = render_text(rng, side, side), f"text/{name}"
            else:
                if self.scale_range is not None:
                    photo = _shrink(photo, rng.uniform(*self.scale_range), self.crop_size)
                h, w = photo.shape[:2]
                top, left, _, _ = random_crop_box(rng, h, w, self.crop_size, f"bundled photo {name}")
                # The margin ends where the photo does; the blur reflects the photo's own border there.
                y0, x0 = max(top - m, 0), max(left - m, 0)
                region = photo[y0: top + self.crop_size + m, x0: left + self.crop_size + m]
                box = (top - y0, left - x0, self.crop_size, self.crop_size)
            if content < self.dead_leaves + self.text:
                box = (m, m, self.crop_size, self.crop_size)
        sharp = region.astype(np.float32) / 255
        blurred, _ = shake(sharp, rng, self.shake)
        hflip, vflip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if self.flips else (False, False)
        return self._finish(blurred, sharp, box, hflip, vflip, rng, f"{name}/{index:06d}.png")
