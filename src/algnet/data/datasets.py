"""Training and evaluation datasets of blurred/sharp pairs read from disk.

Augmentation randomness is a pure function of ``(seed, epoch, index)``: every sample draws from its
own ``np.random.default_rng([seed, epoch, index])``, never from global RNG state or the worker id.
A resumed run therefore sees exactly the samples it would have seen, and any number of DDP ranks or
DataLoader workers produce the same sample for the same index. Call :meth:`set_epoch` before each
epoch (like ``DistributedSampler.set_epoch``); with ``persistent_workers=True`` the workers hold
copies of the dataset, so recreate the loader or pass the epoch another way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import AlgnetError
from .imread import read_rgb
from .layouts import ImagePair

__all__ = ["PairedImageDataset", "sample_rng", "random_crop_box", "crop_and_flip", "to_tensor"]


def _check_seed(value: int, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed, epoch, index])


def random_crop_box(rng: np.random.Generator, height: int, width: int, crop_size: int | None,
                    what: str) -> tuple[int, int, int, int]:
    """Draws a (top, left, height, width) crop; ``crop_size=None`` keeps the whole image.

    Raises:
        AlgnetError: naming ``what`` when the image is smaller than the crop.
    """
    if crop_size is None:
        return 0, 0, height, width
    if height < crop_size or width < crop_size:
        raise AlgnetError(f"{what} is {height}x{width}, smaller than the crop size {crop_size}")
    top = int(rng.integers(0, height - crop_size + 1))
    left = int(rng.integers(0, width - crop_size + 1))
    return top, left, crop_size, crop_size


def crop_and_flip(images: Sequence[np.ndarray], box: tuple[int, int, int, int], hflip: bool,
                  vflip: bool) -> list[np.ndarray]:
    """Applies the same crop and flips to every (H, W, C) image, so pairs stay aligned."""
    top, left, h, w = box
    out = []
    for img in images:
        img = img[top: top + h, left: left + w]
        if hflip:
            img = img[:, ::-1]
        if vflip:
            img = img[::-1]
        out.append(img)
    return out


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float array -> contiguous (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


class PairedImageDataset(torch.utils.data.Dataset):
    """Blurred/sharp pairs from disk, with aligned random crops and flips.

    Args:
        pairs: the pairs, e.g. from :func:`algnet.data.find_pairs`.
        crop_size: side of the square random crop; ``None`` returns whole images (evaluation).
        flips: random horizontal and vertical flips, each with probability 1/2.
        seed: base seed of the augmentation.

    Each item is ``{"blur": (3, H, W), "sharp": (3, H, W), "name": str}``, floats in [0, 1].
    """

    def __init__(self, pairs: list[ImagePair], crop_size: int | None = 256, flips: bool = True, seed: int = 0):
        if crop_size is not None and (not isinstance(crop_size, int) or crop_size < 1):
            raise ValueError(f"crop_size must be a positive integer or None, got {crop_size!r}")
        self.pairs = list(pairs)
        self.crop_size = crop_size
        self.flips = flips
        self.seed = _check_seed(seed, "seed")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose augmentation the next items use."""
        self.epoch = _check_seed(epoch, "epoch")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.pairs):
            raise IndexError(f"index {index} out of range for {len(self.pairs)} pairs")
        pair = self.pairs[index]
        blur, sharp = read_rgb(pair.blur), read_rgb(pair.sharp)
        if blur.shape != sharp.shape:
            raise AlgnetError(
                f"blurred and sharp images differ in size: {pair.blur} is {blur.shape[0]}x{blur.shape[1]}, "
                f"{pair.sharp} is {sharp.shape[0]}x{sharp.shape[1]}"
            )
        rng = sample_rng(self.seed, self.epoch, index)
        box = random_crop_box(rng, blur.shape[0], blur.shape[1], self.crop_size, f"image {pair.blur}")
        hflip, vflip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if self.flips else (False, False)
        blur, sharp = crop_and_flip((blur, sharp), box, hflip, vflip)
        return {"blur": to_tensor(blur), "sharp": to_tensor(sharp), "name": pair.name}
