"""Sharp-image sources: the held-out photos are in no training split; rendered text; shaken pairs."""

import hashlib

import cv2
import numpy as np
import pytest

from algnet.data import SyntheticBlurDataset
from algnet.data.imread import read_rgb
from algnet.data.shake import ShakeSpec
from algnet.data.sources import PHOTO_SOURCES, VAL_PHOTOS, photo_names, render_text, source_path
from algnet.errors import AlgnetError
from algnet.train.config import list_configs, load_config

ALL = ("skimage", "sklearn", "matplotlib")


def _digest(name):
    return hashlib.sha256(np.round(read_rgb(source_path(name)) * 255).astype(np.uint8).tobytes()).hexdigest()


class TestHeldOut:
    def test_val_photos_are_in_no_training_split(self):
        train = photo_names("train", ALL)
        assert set(VAL_PHOTOS) == {"skimage:chelsea", "skimage:coffee"}
        assert not set(train) & set(VAL_PHOTOS)
        # By content too: no training file decodes to a held-out photo under another name.
        held = {_digest(n) for n in VAL_PHOTOS}
        assert not held & {_digest(n) for n in train}

    def test_every_shipped_config_trains_without_them(self):
        from algnet.train.trainer import build_dataset

        for name in list_configs():
            spec = load_config(name).data.train
            if spec.kind != "synthetic":
                continue
            data = build_dataset(spec, seed=0)
            assert data.photos and not {"chelsea", "coffee"} & set(data.photos), name

    def test_more_photos_with_the_other_packages(self):
        pytest.importorskip("sklearn")
        pytest.importorskip("matplotlib")
        train = photo_names("train", ALL)
        assert {"sklearn:china", "sklearn:flower", "matplotlib:grace_hopper"} <= set(train)
        assert len(train) == len(photo_names("train")) + 3
        for name in train:
            assert source_path(name).is_file()

    def test_errors(self):
        with pytest.raises(AlgnetError, match="unknown photo"):
            source_path("skimage:nope")
        with pytest.raises(AlgnetError, match="unknown split"):
            photo_names("test")
        with pytest.raises(AlgnetError, match="unknown photo package"):
            photo_names("train", ("imagenet",))


class TestText:
    def test_pages_differ_and_have_strokes(self):
        a, b = render_text(np.random.default_rng(0), 96, 128), render_text(np.random.default_rng(1), 96, 128)
        assert a.shape == (96, 128, 3) and a.dtype == np.uint8
        assert not np.array_equal(a, b)
        np.testing.assert_array_equal(a, render_text(np.random.default_rng(0), 96, 128))
        # Text has edges: a large share of strong gradients, unlike a flat page.
        grad = np.abs(np.diff(a.astype(np.int16).mean(-1), axis=1))
        assert (grad > 40).mean() > 0.005


class TestShakenDataset:
    def _data(self, **kw):
        spec = ShakeSpec(extent=(9, 9), quantize=False)
        return SyntheticBlurDataset("train", crop_size=48, length=12, seed=1, flips=False, shake=spec, **kw)

    def test_sharp_is_a_photo_crop_and_blur_is_its_shake(self):
        from algnet.data.datasets import sample_rng
        from algnet.data.shake import camera_path, integrate_exposure, linear_to_srgb, srgb_to_linear

        data = self._data()
        for i in range(4):
            item = data[i]
            sharp = item["sharp"].permute(1, 2, 0).numpy()
            blur = item["blur"].permute(1, 2, 0).numpy()
            photo = data._photo(data.photos[i % len(data.photos)]).astype(np.float32) / 255
            res = cv2.matchTemplate(photo, sharp, cv2.TM_SQDIFF)
            y, x = np.unravel_index(res.argmin(), res.shape)
            assert res.min() < 1e-3  # float32 sums; a wrong crop is > 10
            # The sample's draws, in the dataset's order: content, crop box, then shake's extent and path.
            rng = sample_rng(1, 0, i)
            rng.random()
            h, w = photo.shape[:2]
            assert (rng.integers(0, h - 48 + 1), rng.integers(0, w - 48 + 1)) == (y, x)
            path = camera_path(rng, rng.uniform(9, 9))
            m = 9 + 2  # margin_for: the largest extent plus two pixels
            y0, x0 = max(y - m, 0), max(x - m, 0)
            region = photo[y0: y + 48 + m, x0: x + 48 + m]
            expected = linear_to_srgb(np.clip(integrate_exposure(srgb_to_linear(region), path), 0, 1))
            np.testing.assert_allclose(blur, expected[y - y0: y - y0 + 48, x - x0: x - x0 + 48], atol=1e-5)

    def test_text_and_leaves_shares(self):
        data = SyntheticBlurDataset("train", crop_size=48, length=200, seed=0, shake=ShakeSpec(extent=(3, 5)),
                                    dead_leaves=0.25, text=0.25)
        kinds = [data[i]["name"].split("/")[0] for i in range(200)]
        assert 30 < kinds.count("text") < 70 and 30 < kinds.count("dead_leaves") < 70

    def test_bad_shares(self):
        with pytest.raises(AlgnetError, match="text"):
            SyntheticBlurDataset("train", crop_size=48, dead_leaves=0.6, text=0.6)
