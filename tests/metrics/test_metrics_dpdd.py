"""DPDD metrics against closed forms and skimage; LPIPS's unavailable path and its plumbing."""

import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import algnet.metrics.perceptual as perceptual
from algnet.metrics import DPDD_INDOOR, DPDD_TEST_COUNT, dpdd_metrics, load_lpips


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.random((20, 24, 3)).astype(np.float32)
    return np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1).astype(np.float32), gt


class TestDPDDMetrics:
    def test_closed_forms(self):
        gt = np.full((10, 10, 3), 0.5, np.float32)
        pred = gt + np.float32(0.1)
        m = dpdd_metrics(pred, gt)
        assert m["psnr"] == pytest.approx(20.0, abs=1e-4) and m["mae"] == pytest.approx(0.1, abs=1e-6)
        assert m["lpips"] is None

    def test_ssim_is_skimage_default_per_channel(self):
        pred, gt = _pair()
        expected = np.mean([structural_similarity(gt[..., c], pred[..., c], data_range=1, win_size=7) for c in range(3)])
        assert dpdd_metrics(pred, gt)["ssim"] == pytest.approx(expected, abs=1e-6)

    def test_identical_psnr_is_restormers_100(self):
        _, gt = _pair()
        assert dpdd_metrics(gt, gt)["psnr"] == 100.0

    def test_indoor_list_matches_the_dpdd_paper(self):
        """Abuolaim & Brown, "Defocus Deblurring Using Dual-Pixel Data" (ECCV 2020): the test set is
        76 image pairs, 37 of indoor and 39 of outdoor scenes."""
        assert DPDD_TEST_COUNT == 76
        assert len(set(DPDD_INDOOR)) == len(DPDD_INDOOR) == 37
        assert set(DPDD_INDOOR) <= set(range(76)) and 76 - len(set(DPDD_INDOOR)) == 39

    def test_indoor_list_matches_the_datasets_label_files(self):
        """With the dataset on disk (ALGNET_DPDD_ROOT: the folder holding test_c/ and the label
        files), the built-in list must be its indoor_labels.npy (1-based) and the rest outdoor."""
        root = os.environ.get("ALGNET_DPDD_ROOT")
        if not root or not (Path(root) / "indoor_labels.npy").is_file():
            pytest.skip("set ALGNET_DPDD_ROOT to a DPDD folder with indoor_labels.npy to check the list against it")
        root = Path(root)
        indoor = set(np.load(root / "indoor_labels.npy").astype(int).ravel() - 1)
        assert indoor == set(DPDD_INDOOR)
        if (root / "outdoor_labels.npy").is_file():
            assert set(np.load(root / "outdoor_labels.npy").astype(int).ravel() - 1) == set(range(76)) - indoor
        sources = root / "test_c" / "source"
        if sources.is_dir():
            assert len([p for p in sources.iterdir() if p.suffix.lower() == ".png"]) == DPDD_TEST_COUNT

    def test_exceptions(self):
        pred, gt = _pair()
        with pytest.raises(ValueError, match="float"):
            dpdd_metrics((pred * 255).astype(np.uint8), gt)
        with pytest.raises(ValueError, match="shape"):
            dpdd_metrics(pred[1:], gt[1:2])


class TestLPIPS:
    def test_unavailable_returns_none_and_says_once(self, monkeypatch, capsys):
        monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
        monkeypatch.setattr(perceptual, "_said", False)
        assert load_lpips() is None and load_lpips() is None
        err = capsys.readouterr().err
        assert err.count("LPIPS is not available") == 1
        assert "pip install lpips" in err and "ALGNET_LPIPS_WEIGHTS" in err and "alexnet" in err.lower()

    def test_missing_local_file(self, monkeypatch, tmp_path, capsys):
        monkeypatch.setitem(sys.modules, "lpips", types.ModuleType("lpips"))
        monkeypatch.setattr(perceptual, "_said", False)
        monkeypatch.setenv("ALGNET_LPIPS_WEIGHTS", str(tmp_path / "nope.pth"))
        assert load_lpips() is None
        assert "nope.pth: no such file" in capsys.readouterr().err

    def test_plumbing_with_a_stand_in_lpips(self, monkeypatch, tmp_path):
        """Smoke test of the wiring (no real LPIPS here): RGB (1,3,H,W) tensors, normalize=True, gt first."""
        calls = []

        class FakeLPIPS(torch.nn.Module):
            def __init__(self, **kwargs):
                super().__init__()
                calls.append(kwargs)
                self.w = torch.nn.Parameter(torch.zeros(1))

            def forward(self, a, b, normalize=False):
                assert normalize and a.shape[:2] == (1, 3)
                # the channel-0 term checks RGB order and that gt comes first
                return (a - b).abs().mean() + 1000 * (a[:, 0].mean() - b[:, 0].mean()) + 0 * self.w

        fake = types.ModuleType("lpips")
        fake.LPIPS = FakeLPIPS
        monkeypatch.setitem(sys.modules, "lpips", fake)
        weights = tmp_path / "lpips.pth"
        torch.save({"w": torch.zeros(1)}, weights)
        monkeypatch.setenv("ALGNET_LPIPS_WEIGHTS", str(weights))
        fn = load_lpips()
        assert calls == [{"net": "alex", "version": "0.1", "pretrained": False, "pnet_rand": True, "verbose": False}]
        pred, gt = _pair()
        expected = np.abs(gt - pred).mean() + 1000 * (gt[..., 0].mean() - pred[..., 0].mean())
        assert fn(pred, gt) == pytest.approx(expected, rel=1e-4)
        assert dpdd_metrics(pred, gt, fn)["lpips"] == pytest.approx(expected, rel=1e-4)
        assert math.isfinite(fn(gt, gt)) and fn(gt, gt) == pytest.approx(0, abs=1e-6)
