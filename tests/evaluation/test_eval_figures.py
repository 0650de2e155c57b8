"""Comparison figures: the automatic crop finds the worst region; the layout holds the images and crops."""

import cv2
import numpy as np
import pytest

from algnet.errors import AlgnetError
from algnet.evaluation.figures import comparison_figure, largest_error_box, save_figure, select_names


def _images():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 200, (48, 64, 3)).astype(np.uint8)
    restored = sharp.copy()
    restored[30:40, 10:20] += 50  # the one damaged region
    return sharp, restored


def test_largest_error_box_finds_the_damage():
    sharp, restored = _images()
    assert largest_error_box(restored, sharp, size=10) == (30, 10, 10, 10)
    top, left, h, w = largest_error_box(restored, sharp)  # default size: a quarter of the short side
    assert (h, w) == (12, 12) and 28 <= top <= 30 and 8 <= left <= 10


def test_figure_layout_and_crop():
    sharp, restored = _images()
    blurred = cv2.GaussianBlur(sharp, (5, 5), 2)
    fig = comparison_figure(restored, sharp, blurred, box=(30, 10, 16, 16), title="31.00 dB")
    h, w = sharp.shape[:2]
    assert fig.shape == (24 + h + w, 3 * w + 2 * 4, 3) and fig.dtype == np.uint8  # square box -> w x w zoom
    zoom = fig[24 + h:, w + 4: 2 * w + 4]  # the restored column's crop, nearest-neighbour x4
    np.testing.assert_array_equal(zoom, np.repeat(np.repeat(restored[30:46, 10:26], 4, 0), 4, 1))
    assert comparison_figure(restored.astype(np.float32) / 255, sharp).shape[1] == 2 * w + 4  # no blurred panel


def test_select_and_save(tmp_path):
    rows = [{"name": n, "psnr": p} for n, p in (("a", 30.0), ("b", 20.0), ("c", 40.0), ("d", 25.0))]
    assert select_names(rows, worst=2, best=1) == ["b", "d", "c"]
    assert select_names(rows, worst=3, best=3) == ["b", "d", "a", "c"]
    assert select_names(rows, names=["c"]) == ["c"]
    with pytest.raises(AlgnetError, match="zzz"):
        select_names(rows, names=["zzz"])
    path = save_figure(np.zeros((4, 4, 3), np.uint8), tmp_path, "GOPR0001/000001.png")
    assert path == tmp_path / "GOPR0001__000001.png" and cv2.imread(str(path)).shape == (4, 4, 3)
