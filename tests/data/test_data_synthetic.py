"""Tests of algnet.data.synthetic: kernels, convolution against SciPy, and the synthetic dataset."""

import numpy as np
import pytest
import scipy.ndimage
import torch

from algnet.data import SyntheticBlurDataset, blur_image, bundled_photos, make_kernel
from algnet.data.synthetic import blur_crop, photo_path
from algnet.errors import AlgnetError


class TestKernel:
    @pytest.mark.parametrize("size", [7, 17, 31])
    def test_normalised_nonnegative_centred(self, size):
        for seed in range(5):
            k = make_kernel(np.random.default_rng(seed), size)
            assert k.shape == (size, size) and k.dtype == np.float32
            assert k.min() >= 0
            assert k.sum() == pytest.approx(1.0, abs=1e-6)
            # The path is centred on its centroid and bilinear splatting keeps centroids, so the
            # kernel's centre of mass is the centre pixel: no shift between blur and sharp.
            rows, cols = np.mgrid[:size, :size]
            assert (k * rows).sum() == pytest.approx(size // 2, abs=1e-4)
            assert (k * cols).sum() == pytest.approx(size // 2, abs=1e-4)
            # Mass never reaches the outer ring: the path stays within the radius minus one.
            assert k[0].sum() == k[-1].sum() == k[:, 0].sum() == k[:, -1].sum() == 0

    def test_is_a_blur_not_a_point(self):
        for seed in range(10):
            k = make_kernel(np.random.default_rng(seed), 17)
            assert k.max() < 0.5 and np.count_nonzero(k) >= 4

    def test_reproducible_per_generator_state(self):
        a = make_kernel(np.random.default_rng([1, 2, 3]), 17)
        b = make_kernel(np.random.default_rng([1, 2, 3]), 17)
        c = make_kernel(np.random.default_rng([1, 2, 4]), 17)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)

    @pytest.mark.parametrize("size", [16, 1, 0])
    def test_bad_size(self, size):
        with pytest.raises(AlgnetError, match="odd integer"):
            make_kernel(np.random.default_rng(0), size)


class TestBlurImage:
    def test_matches_scipy_convolve_reflect(self):
        rng = np.random.default_rng(0)
        img = rng.random((20, 23, 3)).astype(np.float32)
        for kernel in (make_kernel(rng, 17), rng.random((5, 3)).astype(np.float32)):
            out = blur_image(img, kernel)
            ref = np.stack([scipy.ndimage.convolve(img[..., c].astype(np.float64), kernel.astype(np.float64),
                                                   mode="reflect") for c in range(3)], axis=-1)
            np.testing.assert_allclose(out, ref, atol=2e-6)

    def test_shift_kernel_is_a_shift(self):
        # Convolution with a delta one pixel right of centre moves the image one pixel right.
        img = np.random.default_rng(1).random((6, 9)).astype(np.float32)
        k = np.zeros((3, 3), np.float32)
        k[1, 2] = 1
        out = blur_image(img, k)
        np.testing.assert_array_equal(out[:, 1:], img[:, :-1])
        np.testing.assert_array_equal(out[:, 0], img[:, 0])  # reflect: cba|abc

    def test_even_kernel_refused(self):
        with pytest.raises(AlgnetError, match="odd sides"):
            blur_image(np.zeros((4, 4), np.float32), np.ones((2, 2)))

    @pytest.mark.parametrize("box", [(0, 0, 16, 16), (10, 12, 16, 20), (24, 30, 16, 18), (3, 40, 37, 8)])
    def test_blur_crop_equals_cropped_blur(self, box):
        photo = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        kernel = make_kernel(np.random.default_rng(3), 9)
        sharp, blurred = blur_crop(photo, kernel, box)
        top, left, h, w = box
        full = blur_image(photo.astype(np.float32) / 255, kernel)
        np.testing.assert_array_equal(sharp, photo[top:top + h, left:left + w] / np.float32(255))
        np.testing.assert_allclose(blurred, full[top:top + h, left:left + w], atol=1e-6)


class TestPhotos:
    def test_train_and_val_disjoint_and_bundled(self):
        train, val = bundled_photos("train"), bundled_photos("val")
        assert set(train).isdisjoint(val)
        assert val == ["chelsea", "coffee"]
        assert len(train) >= 4
        assert all(photo_path(n).is_file() for n in train + val)

    def test_unknown_split(self):
        with pytest.raises(AlgnetError, match="unknown synthetic split 'test'"):
            bundled_photos("test")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


class TestDataset:
    def test_lengths_and_names(self):
        train, val = SyntheticBlurDataset("train", crop_size=32), SyntheticBlurDataset("val", crop_size=32)
        assert len(train) == 8 * len(bundled_photos("train")) and len(val) == 2
        assert len(SyntheticBlurDataset("train", length=5)) == 5
        names = [val[i]["name"] for i in range(2)]
        assert names == ["chelsea/000000.png", "coffee/000001.png"]

    def test_val_is_whole_photos_and_identical_across_epochs(self):
        val = SyntheticBlurDataset("val", crop_size=None)
        first = [val[i] for i in range(len(val))]
        assert tuple(first[0]["sharp"].shape) == (3, 300, 451)  # chelsea
        val.set_epoch(7)
        for i, item in enumerate(first):
            again = val[i]
            assert torch.equal(again["blur"], item["blur"]) and torch.equal(again["sharp"], item["sharp"])
            psnr = _psnr(item["blur"], item["sharp"])
            assert np.isfinite(psnr) and 15 < psnr < 40

    def test_train_deterministic_and_epochs_differ(self):
        a, b = SyntheticBlurDataset("train", crop_size=48, seed=5), SyntheticBlurDataset("train", crop_size=48, seed=5)
        a.set_epoch(2)
        b.set_epoch(2)
        torch.manual_seed(0)
        np.random.seed(0)
        x = a[3]
        b[0]  # access order does not matter
        y = b[3]
        assert torch.equal(x["blur"], y["blur"]) and torch.equal(x["sharp"], y["sharp"])
        b.set_epoch(3)
        assert not torch.equal(b[3]["blur"], x["blur"])

    def test_seeds_differ(self):
        a = SyntheticBlurDataset("train", crop_size=48, seed=5)
        b = SyntheticBlurDataset("train", crop_size=48, seed=6)
        assert not torch.equal(a[1]["sharp"], b[1]["sharp"])

    def test_train_samples_are_blurred(self):
        ds = SyntheticBlurDataset("train", seed=1)  # one default epoch: 256 crops
        for i in range(len(ds)):
            item = ds[i]
            assert item["blur"].shape == item["sharp"].shape == (3, 256, 256)
            assert 0 <= float(item["blur"].min()) and float(item["blur"].max()) <= 1
            psnr = _psnr(item["blur"], item["sharp"])
            assert np.isfinite(psnr) and psnr < 40, (item["name"], psnr)

    def test_noise_has_requested_sigma(self):
        clean = SyntheticBlurDataset("val", crop_size=128, seed=4)[0]
        noisy = SyntheticBlurDataset("val", crop_size=128, seed=4, noise_sigma=0.05)[0]
        assert torch.equal(clean["sharp"], noisy["sharp"])  # same crop and flips
        inside = (clean["blur"] > 0.2) & (clean["blur"] < 0.8)  # away from clipping
        diff = (noisy["blur"] - clean["blur"])[inside]
        assert float(diff.std()) == pytest.approx(0.05, rel=0.05)
        assert abs(float(diff.mean())) < 0.005

    def test_saturation_brightens_and_clips(self):
        clean = SyntheticBlurDataset("val", crop_size=None)[1]  # coffee: bright cup and saucer
        sat = SyntheticBlurDataset("val", crop_size=None, saturation=2.0)[1]
        assert torch.equal(clean["sharp"], sat["sharp"])
        assert torch.all(sat["blur"] >= clean["blur"] - 1e-6) and float(sat["blur"].max()) <= 1
        assert float((sat["blur"] - clean["blur"]).max()) > 0.1
        assert float((sat["blur"] == 1).float().mean()) > float((clean["blur"] == 1).float().mean())

    def test_photos_smaller_than_the_crop_are_left_out(self):
        assert "text" in SyntheticBlurDataset("train", crop_size=64).photos  # text.png is 172x448
        assert "text" not in SyntheticBlurDataset("train", crop_size=256).photos
        with pytest.raises(AlgnetError, match=r"no bundled val photo is at least 401x401"):
            SyntheticBlurDataset("val", crop_size=401)  # chelsea 300x451, coffee 400x600

    def test_bad_arguments(self):
        with pytest.raises(AlgnetError, match="kernel_size"):
            SyntheticBlurDataset(kernel_size=8)
        with pytest.raises(AlgnetError, match="noise_sigma"):
            SyntheticBlurDataset(noise_sigma=-1)
        with pytest.raises(IndexError):
            SyntheticBlurDataset("val")[2]


class TestAugmentations:
    """scale_range, rot90 and shuffle_channels, each against the sample drawn without it."""

    def _pair(self, **kw):
        base = SyntheticBlurDataset(split="train", crop_size=48, length=16, kernel_size=7, flips=False, seed=3)
        return base, SyntheticBlurDataset(split="train", crop_size=48, length=16, kernel_size=7, flips=False, seed=3, **kw)

    def test_off_by_default_draws_nothing_more(self):
        base, same = self._pair(scale_range=None, rot90=False, shuffle_channels=False)
        for i in (0, 5):
            assert torch.equal(base[i]["blur"], same[i]["blur"]) and torch.equal(base[i]["sharp"], same[i]["sharp"])

    def test_scale_range_shrinks_the_photo_with_area_interpolation(self):
        import cv2

        from algnet.data.datasets import random_crop_box, sample_rng

        data = SyntheticBlurDataset(split="train", crop_size=48, length=8, kernel_size=7, flips=False, seed=3,
                                    scale_range=(0.4, 0.6))
        for i in range(len(data)):
            rng = sample_rng(3, 0, i)
            kernel = make_kernel(rng, 7)
            photo = data._photo(data.photos[i % len(data.photos)])
            factor = max(rng.uniform(0.4, 0.6), 48 / min(photo.shape[:2]))
            h, w = photo.shape[:2]
            small = cv2.resize(photo, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
            box = random_crop_box(rng, *small.shape[:2], 48, "x")
            sharp, blurred = blur_crop(small, kernel, box)
            sample = data[i]
            np.testing.assert_array_equal(sample["sharp"].numpy(), sharp.transpose(2, 0, 1))
            np.testing.assert_allclose(sample["blur"].numpy(), np.clip(blurred, 0, 1).transpose(2, 0, 1), atol=1e-7)
            assert small.shape[0] < h and min(small.shape[:2]) >= 48

    def test_rot90_transposes_about_half_the_samples(self):
        base, rotated = self._pair(rot90=True)
        transposed = 0
        for i in range(len(base)):
            b, r = base[i], rotated[i]
            if torch.equal(b["sharp"], r["sharp"]):
                assert torch.equal(b["blur"], r["blur"])
            else:
                assert torch.equal(b["sharp"].transpose(1, 2), r["sharp"])
                assert torch.equal(b["blur"].transpose(1, 2), r["blur"])
                transposed += 1
        assert 3 <= transposed <= 13

    def test_shuffle_channels_permutes_both_images_alike(self):
        base, shuffled = self._pair(shuffle_channels=True)
        orders = set()
        for i in range(len(base)):
            b, s = base[i], shuffled[i]
            rgb = [c for c in range(3) if not torch.equal(b["sharp"][c], b["sharp"][(c + 1) % 3])]
            if not rgb:
                continue  # a grey photo: every order looks alike
            order = [next(k for k in range(3) if torch.equal(s["sharp"][c], b["sharp"][k])) for c in range(3)]
            assert sorted(order) == [0, 1, 2]
            assert torch.equal(s["blur"], b["blur"][order])
            orders.add(tuple(order))
        assert len(orders) >= 2

    @pytest.mark.parametrize("bad", [(0.0, 1.0), (0.8, 0.5), (0.5, 1.5), (0.5,)])
    def test_bad_scale_range(self, bad):
        with pytest.raises(AlgnetError, match="scale_range"):
            SyntheticBlurDataset(split="train", crop_size=48, scale_range=bad)


class TestDeadLeaves:
    def test_radii_follow_the_power_law(self):
        from scipy import stats

        from algnet.data.synthetic import leaf_radii

        r_min, r_max = 2.0, 40.0
        radii = leaf_radii(np.random.default_rng(0), 20000, r_min, r_max)
        assert radii.min() >= r_min and radii.max() <= r_max

        def cdf(r):  # of the density r^-3 on [r_min, r_max]
            r = np.clip(r, r_min, r_max)
            return (r_min ** -2 - r ** -2) / (r_min ** -2 - r_max ** -2)

        assert stats.kstest(radii, cdf).pvalue > 1e-3
        assert stats.kstest(radii * 1.1, cdf).pvalue < 1e-6  # the test can tell a wrong law

    def test_image_uses_the_palette_and_is_reproducible(self):
        from algnet.data.synthetic import dead_leaves

        palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250]], dtype=np.uint8)
        a = dead_leaves(np.random.default_rng(5), 48, 64, palette, r_min=2.0)
        b = dead_leaves(np.random.default_rng(5), 48, 64, palette, r_min=2.0)
        assert a.shape == (48, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
        exact = (a[:, :, None, :] == palette[None, None]).all(-1).any(-1)
        assert exact.mean() > 0.6  # the rest are antialiased edges, blends of two colours
        colours = {tuple(c) for c in a.reshape(-1, 3)[exact.reshape(-1)]}
        assert len(colours) >= 3  # several leaves are visible
        assert not np.array_equal(a, dead_leaves(np.random.default_rng(6), 48, 64, palette, r_min=2.0))

    def test_dataset_blurs_the_drawn_image(self):
        from algnet.data.datasets import sample_rng
        from algnet.data.synthetic import dead_leaves

        data = SyntheticBlurDataset(split="train", crop_size=32, length=4, kernel_size=7, flips=False, seed=1,
                                    dead_leaves=1.0)
        for i in range(2):
            rng = sample_rng(1, 0, i)
            kernel = make_kernel(rng, 7)
            assert rng.random() < 1.0
            photo = data._photo(data.photos[i])
            palette = photo.reshape(-1, 3)[rng.integers(0, photo.shape[0] * photo.shape[1], 4096)]
            leaves = dead_leaves(rng, 38, 38, palette, r_min=2.0, r_max=16)
            sharp, blurred = blur_crop(leaves, kernel, (3, 3, 32, 32))
            sample = data[i]
            np.testing.assert_array_equal(sample["sharp"].numpy(), sharp.transpose(2, 0, 1))
            np.testing.assert_allclose(sample["blur"].numpy(), np.clip(blurred, 0, 1).transpose(2, 0, 1), atol=1e-7)

    def test_mixed_with_photos(self):
        import cv2

        from algnet.data.datasets import sample_rng

        data = SyntheticBlurDataset(split="train", crop_size=32, length=40, kernel_size=7, flips=False, dead_leaves=0.5)
        leaves = 0
        for i in range(len(data)):
            rng = sample_rng(0, 0, i)
            make_kernel(rng, 7)
            if rng.random() < 0.5:
                leaves += 1
                continue
            # A photo sample: its sharp image is a crop of its photo, found exactly.
            sharp = (data[i]["sharp"].permute(1, 2, 0).numpy() * 255).round().astype(np.float32)
            photo = data._photo(data.photos[i % len(data.photos)]).astype(np.float32)
            assert cv2.matchTemplate(photo, sharp, cv2.TM_SQDIFF).min() < 50  # float32 sums; misses are ~1e6
        assert 12 <= leaves <= 28

    @pytest.mark.parametrize("kw", [dict(dead_leaves=1.5), dict(dead_leaves=-0.1), dict(dead_leaves=0.5, crop_size=None)])
    def test_bad_arguments(self, kw):
        with pytest.raises(AlgnetError, match="dead_leaves"):
            SyntheticBlurDataset(split="train", **{"crop_size": 32, **kw})
