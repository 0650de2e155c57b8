"""algnet.imageio: round trips per format, bit depth and mode; one-line errors; atomic writes."""

import os

import cv2
import numpy as np
import pytest
from skimage import io as skio

from algnet.errors import AlgnetError
from algnet.imageio import encode_image, read_image, write_image


def smooth(h, w, c, seed=0):
    """Smooth image (JPEG-friendly) with some texture, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [0.5 + 0.4 * np.sin(x / (9 + k) + y / (11 + 2 * k) + rng.uniform(0, 3)) for k in range(c)]
    return np.stack(planes, axis=2).astype(np.float32)


class TestRoundTrip:
    @pytest.mark.parametrize("bit_depth,c,mode", [(8, 3, "RGB"), (16, 3, "RGB"), (8, 1, "L"), (16, 1, "L"), (8, 4, "RGBA"), (16, 4, "RGBA"), (8, 2, "LA"), (16, 2, "LA")])
    def test_png_exact(self, tmp_path, bit_depth, c, mode):
        peak = 2**bit_depth - 1
        rng = np.random.default_rng(1)
        ints = rng.integers(0, peak + 1, size=(13, 17, c))
        pixels = (ints / peak).astype(np.float32)
        path = write_image(tmp_path / "x.png", pixels, mode, bit_depth)
        img = read_image(path)
        assert (img.mode, img.bit_depth, img.format, img.pixels.shape, img.pixels.dtype) == (mode, bit_depth, "png", (13, 17, c), np.float32)
        np.testing.assert_array_equal(np.rint(img.pixels * peak).astype(int), ints)

    def test_png_matches_skimage_and_channel_order(self, tmp_path):
        # A well-kept reader (skimage through imageio/Pillow) must see the values we wrote, in RGB(A)
        # order; Pillow reads 16-bit only for one channel, so the others are checked by the header.
        rng = np.random.default_rng(2)
        for c, bit_depth in [(3, 8), (4, 8), (2, 8), (1, 8), (1, 16)]:
            ints = rng.integers(0, 2**bit_depth, size=(9, 11, c))
            path = write_image(tmp_path / f"s{c}.png", ints / (2**bit_depth - 1), bit_depth=bit_depth)
            theirs = skio.imread(path)
            np.testing.assert_array_equal(theirs.reshape(9, 11, c), ints)
        for c, colour_type in [(1, 0), (2, 4), (3, 2), (4, 6)]:
            path = write_image(tmp_path / f"h{c}.png", np.zeros((3, 3, c)), bit_depth=16)
            header = path.read_bytes()[16:26]  # IHDR: width, height, bit depth, colour type
            assert (int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big"), header[8], header[9]) == (3, 3, 16, colour_type)

    def test_reads_what_opencv_wrote(self, tmp_path):
        bgr = np.random.default_rng(3).integers(0, 65536, size=(5, 6, 3)).astype(np.uint16)
        cv2.imwrite(str(tmp_path / "o.png"), bgr)
        img = read_image(tmp_path / "o.png")
        np.testing.assert_array_equal(np.rint(img.pixels * 65535).astype(np.uint16), bgr[..., ::-1])

    @pytest.mark.parametrize("c,mode", [(3, "RGB"), (1, "L")])
    def test_jpeg_within_tolerance(self, tmp_path, c, mode):
        pixels = smooth(48, 64, c)
        img = read_image(write_image(tmp_path / "x.jpg", pixels, mode))
        assert (img.mode, img.bit_depth, img.format, img.pixels.shape) == (mode, 8, "jpeg", (48, 64, c))
        # Quality 95 on a smooth image: PSNR above 40 dB (JPEG's usual range at this quality), and
        # the decoded values are OpenCV's own, in RGB order.
        assert 10 * np.log10(1 / np.mean((img.pixels - pixels) ** 2)) > 40
        theirs = cv2.imread(str(tmp_path / "x.jpg"), cv2.IMREAD_UNCHANGED).reshape(48, 64, c)[..., ::-1]
        np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), theirs)

    @pytest.mark.parametrize("c,mode", [(3, "RGB"), (1, "L"), (4, "RGBA")])
    def test_tiff_16bit(self, tmp_path, c, mode):
        ints = np.random.default_rng(4).integers(0, 65536, size=(10, 7, c))
        img = read_image(write_image(tmp_path / "x.tif", ints / 65535, mode, 16))
        assert (img.mode, img.bit_depth, img.format) == (mode, 16, "tiff")
        np.testing.assert_array_equal(np.rint(img.pixels * 65535).astype(int), ints)

    def test_bmp_webp_8bit(self, tmp_path):
        ints = np.random.default_rng(5).integers(0, 256, size=(10, 7, 3))
        img = read_image(write_image(tmp_path / "x.bmp", ints / 255))
        np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(int), ints)
        pixels = smooth(32, 32, 3)
        img = read_image(write_image(tmp_path / "x.webp", pixels))
        assert img.format == "webp" and img.mode == "RGB" and np.abs(img.pixels - pixels).mean() < 3 / 255

    def test_jpeg_exif_orientation_applied(self, tmp_path):
        # Pillow writes a 20x40 JPEG tagged "rotate 90 CW" (orientation 6); it displays as 40x20.
        from PIL import Image as PILImage

        array = np.zeros((20, 40, 3), np.uint8)
        array[:, :20] = 255  # left half white
        exif = PILImage.Exif()
        exif[0x0112] = 6
        PILImage.fromarray(array).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
        img = read_image(tmp_path / "r.jpg")
        assert img.pixels.shape == (40, 20, 3)
        assert img.pixels[:15].mean() > 0.95 and img.pixels[25:].mean() < 0.05  # white on top after rotation

    def test_16bit_to_jpeg_refused(self, tmp_path):
        with pytest.raises(AlgnetError, match="16-bit"):
            write_image(tmp_path / "x.jpg", smooth(8, 8, 3), "RGB", 16)


class TestErrors:
    def check(self, path):
        with pytest.raises(AlgnetError) as info:
            read_image(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        return message

    def test_missing(self, tmp_path):
        assert "no such file" in self.check(tmp_path / "nope.png")

    def test_empty(self, tmp_path):
        (tmp_path / "e.png").write_bytes(b"")
        assert "empty" in self.check(tmp_path / "e.png")

    def test_text_named_png(self, tmp_path):
        (tmp_path / "t.png").write_text("this is not an image\n")
        assert "not a PNG" in self.check(tmp_path / "t.png")

    @pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
    def test_truncated_png(self, tmp_path, keep):
        data = encode_image(np.random.default_rng(6).random((40, 40, 3)), "png")
        (tmp_path / "cut.png").write_bytes(data[: int(len(data) * keep)])
        assert "truncated" in self.check(tmp_path / "cut.png")

    def test_float_tiff_refused(self, tmp_path):
        cv2.imwrite(str(tmp_path / "f.tif"), np.random.default_rng(7).random((4, 5, 3)).astype(np.float32))
        assert "float32" in self.check(tmp_path / "f.tif")

    def test_unknown_extension(self, tmp_path):
        (tmp_path / "x.gif").write_bytes(b"GIF89a")
        assert "unsupported image extension" in self.check(tmp_path / "x.gif")


class TestAtomicWrite:
    def test_no_temp_file_left(self, tmp_path):
        write_image(tmp_path / "a.png", smooth(8, 8, 3))
        assert sorted(os.listdir(tmp_path)) == ["a.png"]

    def test_failure_mid_write_keeps_old_file(self, tmp_path, monkeypatch):
        target = tmp_path / "a.png"
        write_image(target, np.zeros((8, 8, 3)))
        before = target.read_bytes()

        def fail(fd):  # the bytes are half on disk when the disk "fills up"
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", fail)
        with pytest.raises(AlgnetError, match="No space left") as info:
            write_image(target, np.ones((8, 8, 3)))
        assert str(target) in str(info.value)
        assert sorted(os.listdir(tmp_path)) == ["a.png"]
        assert target.read_bytes() == before

    def test_failure_on_new_file_leaves_nothing(self, tmp_path, monkeypatch):
        def fail(src, dst):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "replace", fail)
        with pytest.raises(AlgnetError):
            write_image(tmp_path / "new.png", np.ones((8, 8, 3)))
        assert os.listdir(tmp_path) == []
