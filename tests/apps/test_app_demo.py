"""``algnet demo`` end to end with the shipped checkpoint."""

import json
import time

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from algnet.cli import main
from algnet.data import SyntheticBlurDataset
from algnet.inference import default_checkpoint_path
from algnet.train.config import load_config


def test_demo_improves_held_out_photos(tmp_path, capsys):
    try:
        default_checkpoint_path()
    except Exception as err:  # the package must ship its checkpoint: fail, do not skip
        pytest.fail(f"no shipped checkpoint: {err}")
    out = tmp_path / "demo"
    start = time.perf_counter()
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0  # the README's command
    assert time.perf_counter() - start < 180
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 4
    # The shipped checkpoint's promise: at least 3 dB over the blurred held-out photos.
    assert summary["output_psnr"] - summary["input_psnr"] >= 3.0, summary
    trained_on = load_config(default_checkpoint_path().with_suffix(".yaml")).data.val.kernel_size
    assert summary["kernel_size"] == trained_on  # the demo blurs as the shipped checkpoint was trained
    data = SyntheticBlurDataset(split="val", crop_size=None, seed=0, flips=False, length=4, kernel_size=trained_on)
    inputs = [peak_signal_noise_ratio(s["sharp"].numpy().astype(np.float64), s["blur"].numpy().astype(np.float64), data_range=1.0)
              for s in (data[i] for i in range(4))]
    assert summary["input_psnr"] == pytest.approx(float(np.mean(inputs)), abs=1e-6)
    assert summary["output_psnr"] > summary["input_psnr"]
    assert summary["output_ssim"] > summary["input_ssim"]
    figure = cv2.imread(str(out / "comparison.png"))
    assert figure is not None and figure.shape[0] >= 5 * 256  # four photo rows and the clock row
    assert cv2.imread(str(out / "clock_motion_restored.png"), cv2.IMREAD_UNCHANGED).shape == (300, 400)
    assert "mean PSNR" in capsys.readouterr().out


def test_demo_kernel_size_option(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "1", "--device", "cpu", "--kernel-size", "5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    data = SyntheticBlurDataset(split="val", crop_size=None, seed=0, flips=False, length=1, kernel_size=5)
    s = data[0]
    expected = peak_signal_noise_ratio(s["sharp"].numpy().astype(np.float64), s["blur"].numpy().astype(np.float64),
                                       data_range=1.0)
    assert summary["kernel_size"] == 5 and summary["input_psnr"] == pytest.approx(expected, abs=1e-6)
