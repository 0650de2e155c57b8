"""The shake benchmark: its images, the Wiener oracle, and `algnet eval shake`."""

import json

import numpy as np
import pytest
import scipy.ndimage

from algnet.data.shake import LEVELS, camera_path, integrate_exposure, path_kernel
from algnet.evaluation.shake import run_shake, shake_items, wiener_deconvolve, wiener_oracle


def _psnr(a, b):
    return 10 * np.log10(1 / np.mean((a - b) ** 2))


def test_wiener_inverts_a_noise_free_blur():
    rng = np.random.default_rng(0)
    sharp = scipy.ndimage.gaussian_filter(rng.random((96, 112, 3)), (1, 1, 0)).astype(np.float32)
    path = camera_path(np.random.default_rng(3), 9.0)
    blurred = integrate_exposure(sharp, path)
    # Reflected borders are not a circular convolution: a small NSR amplifies that mismatch, so the
    # inverse is judged in the centre at a moderate NSR (the oracle picks the NSR per image).
    restored = wiener_deconvolve(blurred, path_kernel(path), nsr=1e-2)
    inner = (slice(30, -30), slice(30, -30))
    assert _psnr(restored[inner], sharp[inner]) > 34
    assert _psnr(blurred[inner], sharp[inner]) < 24
    # A wrong kernel (the path turned by 90 degrees) does not invert it.
    wrong = wiener_deconvolve(blurred, path_kernel(path * 1j), nsr=1e-2)
    assert _psnr(wrong[inner], sharp[inner]) < _psnr(restored[inner], sharp[inner]) - 8


def test_items_are_seeded_held_out_and_at_their_levels():
    items = list(shake_items(seed=5, levels=("mild", "strong"), per_photo=1))
    again = list(shake_items(seed=5, levels=("mild", "strong"), per_photo=1))
    assert [it.name for it in items] == ["mild/chelsea-0", "mild/coffee-0", "strong/chelsea-0", "strong/coffee-0"]
    for a, b in zip(items, again):
        np.testing.assert_array_equal(a.blurred, b.blurred)
    other = next(shake_items(seed=6, levels=("mild",), per_photo=1))
    assert not np.array_equal(other.blurred, items[0].blurred)
    for it in items:
        ys, xs = np.nonzero(it.kernel > 1e-6)
        lo, hi = LEVELS[it.level]
        assert lo - 1 <= max(np.ptp(ys), np.ptp(xs)) <= hi + 1  # kernel support = the path's extent (+ splat)
        assert it.blurred.shape == it.sharp.shape
    # The oracle knows the kernel: it beats the input, more so at the strong level.
    gains = [_psnr(wiener_oracle(it), it.sharp) - _psnr(it.blurred, it.sharp) for it in items]
    assert all(g > 0.5 for g in gains) and np.mean(gains[2:]) > np.mean(gains[:2])


def test_run_shake_rows_and_means():
    identity = lambda x: x  # noqa: E731 - a method that changes nothing scores as the input
    result = run_shake({"identity": identity}, levels=("medium",), per_photo=1, oracle=False)
    level = result["levels"]["medium"]
    assert set(level) == {"blurred", "identity"}
    assert level["identity"] == level["blurred"]
    per = [r["blurred"]["psnr"] for r in result["images"]]
    assert level["blurred"]["psnr"] == pytest.approx(np.mean(per))


def test_cli(tmp_path, capsys):
    from algnet.cli import main
    from algnet.inference import default_checkpoint_path

    out = tmp_path / "shake.json"
    assert main(["eval", "shake", "--checkpoint", str(default_checkpoint_path()), "--levels", "mild",
                 "--per-photo", "1", "--json", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "wiener-oracle" in table and default_checkpoint_path().name in table
    data = json.loads(out.read_text())
    assert set(data["levels"]["mild"]) == {"blurred", "wiener-oracle", default_checkpoint_path().name}
    assert len(data["images"]) == 2
    assert main(["eval", "shake", "--levels", "extreme"]) != 0
    assert "unknown shake level" in capsys.readouterr().err
