"""Datasets: benchmark layouts on disk, paired training data, and synthetic blur on bundled photos."""

from .datasets import PairedImageDataset
from .imread import read_rgb
from .layouts import DATASETS, ImagePair, detect_layout, find_pairs
from .synthetic import SyntheticBlurDataset, blur_image, bundled_photos, make_kernel

__all__ = [
    "ImagePair", "DATASETS", "find_pairs", "detect_layout", "PairedImageDataset", "SyntheticBlurDataset",
    "read_rgb", "make_kernel", "blur_image", "bundled_photos",
]
