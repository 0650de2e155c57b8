"""Tests of algnet.data.read_rgb: bit depths, channel orders and unreadable files."""

import cv2
import numpy as np
import pytest

from algnet.data import read_rgb
from algnet.errors import AlgnetError


def _bgr(rng, dtype, shape=(5, 7, 3)):
    hi = np.iinfo(dtype).max
    return rng.integers(0, hi + 1, size=shape, dtype=np.int64).astype(dtype)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lossless_rgb(tmp_path, ext, dtype):
    bgr = _bgr(np.random.default_rng(0), dtype)
    bgr[0, 0] = np.iinfo(dtype).max
    bgr[0, 1] = 0
    path = tmp_path / f"img{ext}"
    assert cv2.imwrite(str(path), bgr)
    img = read_rgb(path)
    assert img.dtype == np.float32 and img.shape == (5, 7, 3)
    expected = bgr[:, :, ::-1].astype(np.float64) / np.iinfo(dtype).max
    np.testing.assert_allclose(img, expected, rtol=0, atol=1e-7)
    assert img[0, 0].tolist() == [1.0, 1.0, 1.0] and img[0, 1].tolist() == [0.0, 0.0, 0.0]


def test_16bit_keeps_low_bits(tmp_path):
    # 16-bit values that an 8-bit read (value >> 8) would merge must stay distinct.
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[0, 0] = 1
    bgr[0, 1] = 255
    bgr[1, 0] = 257
    bgr[1, 1] = 65534
    assert cv2.imwrite(str(tmp_path / "d.png"), bgr)
    img = read_rgb(tmp_path / "d.png")
    assert img[:, :, 0].ravel().tolist() == pytest.approx([1 / 65535, 255 / 65535, 257 / 65535, 65534 / 65535], abs=1e-9)


def test_jpeg_matches_opencv(tmp_path):
    bgr = _bgr(np.random.default_rng(1), np.uint8, (16, 16, 3))
    assert cv2.imwrite(str(tmp_path / "a.jpg"), bgr)
    ref = cv2.imread(str(tmp_path / "a.jpg"), cv2.IMREAD_COLOR)[:, :, ::-1] / 255.0
    np.testing.assert_allclose(read_rgb(tmp_path / "a.jpg"), ref, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grayscale_to_three_channels(tmp_path, dtype):
    gray = np.arange(12, dtype=dtype).reshape(3, 4) * (3 if dtype == np.uint8 else 5000)
    assert cv2.imwrite(str(tmp_path / "g.png"), gray)
    img = read_rgb(tmp_path / "g.png")
    assert img.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_allclose(img[:, :, c], gray / np.iinfo(dtype).max, atol=1e-7)


def test_alpha_dropped(tmp_path):
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 7
    assert cv2.imwrite(str(tmp_path / "a.png"), bgra)
    img = read_rgb(tmp_path / "a.png")
    assert img.shape == (2, 3, 3)
    np.testing.assert_allclose(img[0, 0], np.array([30, 20, 10]) / 255, atol=1e-7)


def test_float_tiff_as_is(tmp_path):
    bgr = np.random.default_rng(2).random((4, 4, 3)).astype(np.float32)
    assert cv2.imwrite(str(tmp_path / "f.tif"), bgr)
    np.testing.assert_array_equal(read_rgb(tmp_path / "f.tif"), bgr[:, :, ::-1])


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(AlgnetError, match=r"empty\.png: the file is empty"):
        read_rgb(tmp_path / "empty.png")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated(tmp_path, ext):
    ok, buf = cv2.imencode(ext, _bgr(np.random.default_rng(3), np.uint8, (32, 32, 3)))
    (tmp_path / f"cut{ext}").write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(AlgnetError, match=rf"cut\{ext}: truncated, corrupt or not an image"):
        read_rgb(tmp_path / f"cut{ext}")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(AlgnetError, match=r"notes\.png"):
        read_rgb(tmp_path / "notes.png")


def test_missing(tmp_path):
    with pytest.raises(AlgnetError, match=r"cannot read image .*nothere\.png"):
        read_rgb(tmp_path / "nothere.png")
