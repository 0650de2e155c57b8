"""Fabricated data and a deterministic CPU set-up shared by the training tests."""

import os
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch


def make_pairs(root: Path, n: int = 6, size: int = 24, seed: int = 0) -> Path:
    """Writes n blurred/sharp PNG pairs (a box blur of smooth random images) in the 'folders' layout."""
    rng = np.random.default_rng(seed)
    (root / "blur").mkdir(parents=True)
    (root / "sharp").mkdir()
    for i in range(n):
        sharp = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / "sharp" / f"{i:03d}.png"), sharp)
        cv2.imwrite(str(root / "blur" / f"{i:03d}.png"), cv2.blur(sharp, (5, 5)))
    return root


@contextmanager
def one_thread_reference_scan():
    """One torch thread and the sequential reference scan: the same float summation order in every
    run segment (bitwise resume) and the fastest set-up for tiny crops on a busy machine."""
    before, backend = torch.get_num_threads(), os.environ.get("ALGNET_SCAN_BACKEND")
    torch.set_num_threads(1)
    os.environ["ALGNET_SCAN_BACKEND"] = "reference"
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if backend is None:
            os.environ.pop("ALGNET_SCAN_BACKEND", None)
        else:
            os.environ["ALGNET_SCAN_BACKEND"] = backend
