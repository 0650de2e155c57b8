"""Tests of algnet.data.PairedImageDataset: aligned crops and flips, determinism, bit depth, errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from algnet.data import ImagePair, PairedImageDataset, find_pairs
from algnet.errors import AlgnetError

H, W = 24, 40


def _write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


def _coordinate_pair(root: Path, name: str = "a.png") -> ImagePair:
    """sharp encodes each pixel's (row, column) in R and G; blur is sharp shifted right by one
    column (circularly), so at every pixel blur.G == (sharp.G - 1) mod W and blur.R == sharp.R."""
    rows, cols = np.mgrid[:H, :W]
    sharp = np.stack([rows, cols, np.full_like(rows, 200)], axis=-1).astype(np.uint8)
    blur = np.roll(sharp, 1, axis=1)
    return ImagePair(_write_rgb(root / "blur" / name, blur), _write_rgb(root / "sharp" / name, sharp), name)


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return np.round(t.numpy() * 255).astype(int)  # (3, h, w)


@pytest.fixture
def pairs(tmp_path):
    return [_coordinate_pair(tmp_path, f"{i}.png") for i in range(4)]


def test_crops_and_flips_keep_pairs_aligned(pairs):
    ds = PairedImageDataset(pairs, crop_size=8, flips=True, seed=3)
    seen_flips = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            b, s = _to_uint8(item["blur"]), _to_uint8(item["sharp"])
            assert b.shape == s.shape == (3, 8, 8)
            np.testing.assert_array_equal(b[0], s[0])
            np.testing.assert_array_equal(b[1], (s[1] - 1) % W)
            # The sharp crop is a crop of the coordinate grid, possibly flipped: rows step by +-1
            # down the crop, columns by +-1 across it.
            dr, dc = np.diff(s[0], axis=0), np.diff(s[1], axis=1)
            assert np.all(dr == dr[0, 0]) and abs(dr[0, 0]) == 1
            assert np.all(dc == dc[0, 0]) and abs(dc[0, 0]) == 1
            seen_flips.add((dr[0, 0] < 0, dc[0, 0] < 0))
    assert seen_flips == {(False, False), (False, True), (True, False), (True, True)}


def test_no_crop_no_flip_returns_whole_images(pairs):
    item = PairedImageDataset(pairs, crop_size=None, flips=False)[2]
    assert item["name"] == "2.png"
    rows, cols = np.mgrid[:H, :W]
    s = _to_uint8(item["sharp"])
    np.testing.assert_array_equal(s[0], rows)
    np.testing.assert_array_equal(s[1], cols)
    assert item["blur"].dtype == torch.float32 and item["blur"].is_contiguous()


def test_deterministic_per_seed_epoch_index(pairs):
    a = PairedImageDataset(pairs, crop_size=8, seed=7)
    b = PairedImageDataset(pairs, crop_size=8, seed=7)
    a.set_epoch(5)
    b.set_epoch(5)
    first = [a[i]["sharp"] for i in range(4)]
    # Global RNG state and access order must not matter.
    np.random.seed(123)
    torch.manual_seed(456)
    for i in reversed(range(4)):
        assert torch.equal(b[i]["sharp"], first[i])
    assert torch.equal(a[1]["sharp"], first[1])


def test_epochs_and_seeds_differ(pairs):
    ds = PairedImageDataset(pairs, crop_size=8, seed=0)
    by_epoch = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        by_epoch.append(torch.stack([ds[i]["sharp"] for i in range(4)]))
    assert not torch.equal(by_epoch[0], by_epoch[1]) and not torch.equal(by_epoch[1], by_epoch[2])
    other = PairedImageDataset(pairs, crop_size=8, seed=1)
    assert not torch.equal(torch.stack([other[i]["sharp"] for i in range(4)]), by_epoch[0])


def test_same_samples_with_workers(pairs):
    ds = PairedImageDataset(pairs, crop_size=8, seed=2)
    ds.set_epoch(4)
    serial = [ds[i]["blur"] for i in range(4)]
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)
    parallel = [batch["blur"][0] for batch in loader]
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel))


def test_16bit_pairs_scaled(tmp_path):
    for folder, value in (("blur", 1234), ("sharp", 65535)):
        path = tmp_path / "test_c" / ("source" if folder == "blur" else "target") / "x.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), np.full((6, 6, 3), value, np.uint16))
    item = PairedImageDataset(find_pairs(tmp_path, "dpdd"), crop_size=4)[0]
    assert torch.allclose(item["blur"], torch.full((3, 4, 4), 1234 / 65535), atol=1e-8, rtol=0)
    assert torch.equal(item["sharp"], torch.ones(3, 4, 4))


def test_image_smaller_than_crop(pairs):
    with pytest.raises(AlgnetError, match=rf"{pairs[0].blur.name} is {H}x{W}, smaller than the crop size 32"):
        PairedImageDataset(pairs, crop_size=32)[0]


def test_size_mismatch_names_both_files(tmp_path):
    blur = _write_rgb(tmp_path / "b.png", np.zeros((8, 8, 3), np.uint8))
    sharp = _write_rgb(tmp_path / "s.png", np.zeros((8, 9, 3), np.uint8))
    ds = PairedImageDataset([ImagePair(blur, sharp, "x")], crop_size=4)
    with pytest.raises(AlgnetError, match=r"b\.png is 8x8, .*s\.png is 8x9"):
        ds[0]


def test_bad_arguments(pairs):
    with pytest.raises(ValueError, match="crop_size"):
        PairedImageDataset(pairs, crop_size=0)
    with pytest.raises(ValueError, match="seed"):
        PairedImageDataset(pairs, seed=-1)
    with pytest.raises(ValueError, match="epoch"):
        PairedImageDataset(pairs).set_epoch(-2)
    with pytest.raises(IndexError):
        PairedImageDataset(pairs)[4]
