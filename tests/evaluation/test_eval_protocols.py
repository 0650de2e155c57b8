"""How each protocol reads images and prepares network outputs (DESIGN.md section 6)."""

import cv2
import numpy as np
import pytest

from algnet.errors import AlgnetError
from algnet.evaluation.protocols import (
    check_protocol, from_network, read_ground_truth, read_input, read_prediction, score_pair, to_png,
)
from algnet.metrics import dpdd_metrics, psnr, ssim_matlab


@pytest.fixture
def png16(tmp_path):
    """A 16-bit RGB PNG whose low bytes matter: high byte 0x12 everywhere, low bytes vary."""
    rng = np.random.default_rng(0)
    rgb = (0x1200 + rng.integers(0, 256, (8, 9, 3))).astype(np.uint16)
    rgb[0, 0] = [0xFFFF, 0x00FF, 0x8000]
    path = tmp_path / "gt16.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path, rgb


class TestReading:
    def test_dpdd_truncates_to_the_high_byte(self, png16):
        path, rgb = png16
        gt = read_ground_truth(path, "dpdd", [])
        np.testing.assert_array_equal(gt, (rgb >> 8).astype(np.float32) / 255)
        assert gt[0, 0].tolist() == pytest.approx([1.0, 0.0, 128 / 255])
        np.testing.assert_array_equal(read_input(path, "dpdd"), gt)  # Restormer feeds the truncated input too

    def test_dpdd16_keeps_all_16_bits(self, png16):
        path, rgb = png16
        gt = read_ground_truth(path, "dpdd16", [])
        np.testing.assert_array_equal(gt, rgb.astype(np.float32) / 65535)
        assert len(np.unique(gt[1:, 1:, 0])) > 30  # 56 pixels of one high byte: the low byte survives
        np.testing.assert_array_equal(read_input(path, "dpdd16"), gt)

    def test_predictions_read_at_their_own_depth(self, png16, tmp_path):
        path, rgb = png16
        np.testing.assert_array_equal(read_prediction(path, "dpdd", []), rgb.astype(np.float32) / 65535)
        p8 = tmp_path / "p8.png"
        cv2.imwrite(str(p8), np.full((4, 4, 3), 51, np.uint8))
        assert np.all(read_prediction(p8, "dpdd", []) == np.float32(51 / 255))

    def test_uint8_protocols_round_16_bit_with_a_note(self, png16):
        path, rgb = png16
        notes = []
        img = read_ground_truth(path, "gopro", notes)
        assert img.dtype == np.uint8
        np.testing.assert_array_equal(img, np.round(rgb / 257).astype(np.uint8))
        assert notes and "16-bit" in notes[0]

    def test_rgb_order_and_gray(self, tmp_path):
        bgr = np.zeros((4, 4, 3), np.uint8)
        bgr[..., 0] = 200  # blue in OpenCV's order
        cv2.imwrite(str(tmp_path / "b.png"), bgr)
        assert read_ground_truth(tmp_path / "b.png", "gopro", [])[0, 0].tolist() == [0, 0, 200]
        cv2.imwrite(str(tmp_path / "g.png"), np.full((4, 4), 7, np.uint8))
        assert read_prediction(tmp_path / "g.png", "hide", []).shape == (4, 4, 3)

    def test_unreadable_and_missing(self, tmp_path):
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not a png")
        with pytest.raises(AlgnetError, match="bad.png: cannot read"):
            read_ground_truth(bad, "gopro", [])
        with pytest.raises(AlgnetError, match="nope.png: no such image"):
            read_prediction(tmp_path / "nope.png", "dpdd", [])
        with pytest.raises(AlgnetError, match="unknown protocol 'matlab'"):
            check_protocol("matlab")


class TestNetworkOutputs:
    def test_uint8_protocols_round_like_a_png(self):
        x = np.array([[[0.0, 0.5, 1.0]]], np.float32)
        for protocol in ("gopro", "hide", "realblur"):
            assert from_network(x, protocol).tolist() == [[[0, 128, 255]]]
        assert from_network(x, "dpdd") is not None and from_network(x, "dpdd").dtype == np.float32
        np.testing.assert_array_equal(from_network(x, "dpdd"), x)  # clamped floats, not quantised
        assert to_png(x, "dpdd16").tolist() == [[[0, 32768, 65535]]] and to_png(x, "dpdd16").dtype == np.uint16
        assert to_png(x, "dpdd").dtype == np.uint8

    def test_score_pair_dispatch(self):
        rng = np.random.default_rng(1)
        gt = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
        pred = np.clip(gt.astype(int) + 5, 0, 255).astype(np.uint8)
        assert score_pair(pred, gt, "gopro") == {"psnr": psnr(pred, gt, 255), "ssim": ssim_matlab(pred, gt)}
        f, g = pred.astype(np.float32) / 255, gt.astype(np.float32) / 255
        assert score_pair(f, g, "dpdd16") == dpdd_metrics(f, g)
