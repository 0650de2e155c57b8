"""Camera-shake synthesis: each step against an explicit recomputation or a closed form."""

import numpy as np
import pytest
import scipy.ndimage

from algnet.data.shake import (
    LEVELS, ShakeSpec, add_sensor_noise, camera_path, integrate_exposure, jpeg_roundtrip, level_spec,
    linear_to_srgb, margin_for, path_kernel, shake, srgb_to_linear,
)
from algnet.errors import AlgnetError

OFF = dict(linear_light=False, quantize=False)  # every optional step off


def _srgb_decode(v):
    # IEC 61966-2-1, written out independently of the module.
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _scene(h=48, w=56, seed=0):
    rng = np.random.default_rng(seed)
    img = scipy.ndimage.gaussian_filter(rng.random((h, w, 3)), (1.5, 1.5, 0))
    return ((img - img.min()) / np.ptp(img)).astype(np.float32)


class TestTransferFunction:
    def test_standard_values(self):
        # Values of the sRGB standard: mid-grey 0.5 is 21.4 % of white; the linear segment's end.
        assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.214041, abs=1e-6)
        assert srgb_to_linear(np.float32(0.04045)) == pytest.approx(0.04045 / 12.92, rel=1e-6)
        assert linear_to_srgb(np.float32(0.214041)) == pytest.approx(0.5, abs=1e-6)

    def test_inverse(self):
        x = np.linspace(0, 1, 1001, dtype=np.float32)
        np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=2e-6)
        np.testing.assert_allclose(srgb_to_linear(x), _srgb_decode(x), atol=1e-6)


class TestPath:
    @pytest.mark.parametrize("extent", [3.0, 12.5, 25.0])
    def test_extent_is_the_bounding_box_side(self, extent):
        path = camera_path(np.random.default_rng(4), extent)
        assert max(np.ptp(path.real), np.ptp(path.imag)) == pytest.approx(extent)
        assert abs(path.mean()) < 1e-9

    def test_kernel_mass_and_centroid(self):
        path = camera_path(np.random.default_rng(5), 11.0)
        k = path_kernel(path).astype(np.float64)
        r = k.shape[0] // 2
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and k.min() >= 0
        assert k.sum() == pytest.approx(1.0, abs=1e-6)
        rows, cols = np.mgrid[-r:r + 1, -r:r + 1]
        # Bilinear splats keep each point's mean position: the centroid is the path's, the origin.
        assert (k * rows).sum() == pytest.approx(0.0, abs=1e-5)
        assert (k * cols).sum() == pytest.approx(0.0, abs=1e-5)
        # The support spans the extent along the wider side (plus at most one pixel of splat).
        ys, xs = np.nonzero(k > 1e-6)
        assert 11 <= max(np.ptp(ys), np.ptp(xs)) <= 13

    def test_levels_draw_within_their_ranges(self):
        for level, (lo, hi) in LEVELS.items():
            spec = level_spec(level, **OFF)
            for seed in range(8):
                _, draw = shake(_scene(), np.random.default_rng(seed), spec)
                assert lo <= draw.extent <= hi
        assert LEVELS["mild"][1] == 7 and LEVELS["medium"][1] == 15 and LEVELS["strong"][1] == 25

    def test_bad_specs(self):
        with pytest.raises(AlgnetError, match="extent"):
            ShakeSpec(extent=(5, 3))
        with pytest.raises(AlgnetError, match="probability"):
            ShakeSpec(noise=1.5)
        with pytest.raises(AlgnetError, match="rotation"):
            ShakeSpec(rotation=45)
        with pytest.raises(AlgnetError, match="level"):
            level_spec("extreme")


class TestExposure:
    def test_translation_is_a_convolution_with_the_path_kernel(self):
        img = _scene()
        path = camera_path(np.random.default_rng(1), 9.0)
        k = path_kernel(path)
        expected = np.stack([scipy.ndimage.convolve(img[..., c], k, mode="reflect") for c in range(3)], -1)
        np.testing.assert_allclose(integrate_exposure(img, path), expected, atol=1e-5)

    def test_rotation_path_without_rotation_matches_the_kernel_of_its_poses(self):
        # The warp path (angle != 0) with a negligible angle integrates 48 poses; it must equal the
        # convolution with the kernel of those same poses, away from the reflected borders.
        img = _scene(64, 64)
        path = camera_path(np.random.default_rng(2), 8.0)
        poses = path[np.linspace(0, len(path) - 1, 48).round().astype(int)]
        k = path_kernel(poses)
        expected = np.stack([scipy.ndimage.convolve(img[..., c], k, mode="reflect") for c in range(3)], -1)
        got = integrate_exposure(img, path, angle=1e-9)
        np.testing.assert_allclose(got[10:-10, 10:-10], expected[10:-10, 10:-10], atol=1e-4)

    def test_rotation_smears_along_an_arc(self):
        # A point at radius 20 from the centre, no translation, a 6-degree turn: its light spreads
        # over the arc of +-3 degrees; the light's centroid is the mean of the rotated positions.
        h = w = 65
        img = np.zeros((h, w, 3), np.float32)
        cx = cy = 32.0
        img[32, 52] = 1.0  # (x, y) = (52, 32): 20 px right of the centre
        centre_point = np.zeros_like(img)
        centre_point[32, 32] = 1.0
        path = np.zeros(512, complex)
        out = integrate_exposure(img, path, angle=6.0, centre=(cx, cy))[..., 0]
        assert out.sum() == pytest.approx(1.0, abs=1e-4)
        ys, xs = np.mgrid[0:h, 0:w]
        # warpAffine maps output to input with the inverse: the scene appears turned by -a.
        a = np.deg2rad(np.linspace(-3, 3, 48))
        exp_x = cx + 20 * np.cos(a).mean()
        assert (out * xs).sum() == pytest.approx(exp_x, abs=0.02)
        assert (out * ys).sum() == pytest.approx(cy, abs=0.02)
        # The arc spans 20 * 6 degrees = 2.1 px vertically: spread, not a point.
        assert np.ptp(ys[out > 1e-3]) >= 2
        # The centre itself does not move.
        still = integrate_exposure(centre_point, path, angle=6.0, centre=(cx, cy))[..., 0]
        assert still[32, 32] == pytest.approx(1.0, abs=1e-4)

    def test_margin_covers_translation_and_rotation(self):
        assert margin_for(ShakeSpec(extent=(3, 25)), 256) >= 25
        # 4 degrees of turn move a corner of a 256 crop by ~6.3 px beyond the translation.
        assert margin_for(ShakeSpec(extent=(3, 25), rotation=4), 256) >= 25 + 6


class TestShake:
    def test_linear_light_is_blur_between_decode_and_encode(self):
        img = _scene()
        rng_state = 11
        got, draw = shake(img, np.random.default_rng(rng_state), ShakeSpec(extent=(6, 6), quantize=False))
        lin = _srgb_decode(img)
        blurred = np.stack([scipy.ndimage.convolve(lin[..., c], draw.kernel.astype(np.float64), mode="reflect")
                            for c in range(3)], -1)
        expected = np.where(blurred <= 0.0031308, 12.92 * blurred, 1.055 * np.maximum(blurred, 0) ** (1 / 2.4) - 0.055)
        np.testing.assert_allclose(got, expected, atol=2e-5)

    def test_linear_light_brightens_a_blurred_edge(self):
        # Half black, half white: the edge's blurred mid-point is 50 % of the light, sRGB 0.735,
        # not the 0.5 that blurring sRGB values gives.
        img = np.zeros((32, 64, 3), np.float32)
        img[:, 32:] = 1
        path = np.linspace(-4, 4, 512).astype(complex)  # horizontal, 8 px
        spec = ShakeSpec(extent=(8, 8), quantize=False)
        lin = integrate_exposure(srgb_to_linear(img), path)
        assert linear_to_srgb(lin)[16, 31:33, 0].mean() == pytest.approx(linear_to_srgb(np.float32(0.5)), abs=0.02)
        out, _ = shake(img, np.random.default_rng(0), spec)
        assert out[16, 28:36, 0].mean() > 0.55

    def test_highlights_spread_their_energy_then_clip(self):
        # One saturated pixel lifted by gain g in linear light: its streak carries g times the light
        # of an unlifted one, clipped at white.
        img = np.full((41, 41, 3), 0.0, np.float32)
        img[20, 20] = 1.0
        base = ShakeSpec(extent=(6, 6), quantize=False)
        lifted = ShakeSpec(extent=(6, 6), quantize=False, highlights=1.0, highlight_gain=(3.0, 3.0))
        plain, d0 = shake(img, np.random.default_rng(3), base)
        bright, d1 = shake(img, np.random.default_rng(3), lifted)
        assert d1.highlight_gain == 3.0 and d0.highlight_gain == 1.0
        lin_plain, lin_bright = srgb_to_linear(plain)[..., 0], srgb_to_linear(bright)[..., 0]
        expected = np.minimum(3.0 * lin_plain, 1.0)
        np.testing.assert_allclose(lin_bright, expected, atol=1e-5)
        assert lin_bright.max() <= 1.0

    def test_sensor_noise_statistics(self):
        # Poisson-Gaussian: mean x, variance x / photons + read_noise^2.
        rng = np.random.default_rng(0)
        for x, photons, read in ((0.25, 400.0, 0.003), (0.02, 1500.0, 0.001)):
            flat = np.full((400, 400), x, np.float32)
            noisy = add_sensor_noise(flat, rng, photons, read)
            assert noisy.mean() == pytest.approx(x, rel=0.01)
            assert noisy.var() == pytest.approx(x / photons + read ** 2, rel=0.03)

    def test_noise_comes_before_the_tone_curve(self):
        # In shake(), the noise is added in linear light: encoded through the tone curve, dark
        # regions get more sRGB noise than bright ones (the curve's slope is steeper near black).
        img = np.concatenate([np.full((64, 64, 3), 0.2, np.float32), np.full((64, 64, 3), 0.9, np.float32)], 1)
        spec = ShakeSpec(extent=(0, 0), noise=1.0, photons=(1000, 1000), read_noise=(0.002, 0.002), quantize=False)
        out, draw = shake(img, np.random.default_rng(1), spec)
        assert draw.photons == pytest.approx(1000) and draw.read_noise == pytest.approx(0.002)
        dark, bright = out[4:-4, 4:60].std(), out[4:-4, 68:-4].std()
        lin = _srgb_decode(np.array([0.2, 0.9]))
        # sRGB noise ~ encode'(x) * linear noise, and encode'(x) is proportional to x^(-1.4/2.4).
        expected_ratio = np.sqrt((lin[0] / 1000 + 0.002 ** 2) / (lin[1] / 1000 + 0.002 ** 2)) * \
            (lin[1] / lin[0]) ** (1.4 / 2.4)
        assert dark / bright == pytest.approx(expected_ratio, rel=0.1)

    def test_jpeg_matches_another_encoder(self):
        from io import BytesIO

        from PIL import Image

        img = _scene(64, 64)
        for q in (60, 90):
            ours = jpeg_roundtrip(img, q)
            buf = BytesIO()
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, "JPEG", quality=q)
            pil = np.asarray(Image.open(BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255
            assert np.mean((ours - pil) ** 2) < 1e-4  # 40 dB: the same image up to encoder details
        assert np.mean((jpeg_roundtrip(img, 30) - img) ** 2) > np.mean((jpeg_roundtrip(img, 95) - img) ** 2)

    def test_quantized_to_8_bits_and_steps_are_independent(self):
        img = _scene()
        spec = ShakeSpec(extent=(5, 9), noise=1.0, jpeg=1.0, highlights=1.0)
        out, draw = shake(img, np.random.default_rng(9), spec)
        np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)
        assert draw.jpeg_quality is not None and draw.photons is not None
        # Switching the optional steps off keeps the same path for the same seed.
        _, plain = shake(img, np.random.default_rng(9), ShakeSpec(extent=(5, 9)))
        np.testing.assert_array_equal(plain.path, draw.path)

    def test_bad_input(self):
        with pytest.raises(AlgnetError, match=r"\(H, W, 3\)"):
            shake(np.zeros((8, 8), np.float32), np.random.default_rng(0), ShakeSpec())
