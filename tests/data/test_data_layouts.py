"""Tests of algnet.data.layouts on tiny fabricated dataset folders, one per published layout."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from algnet.data import DATASETS, ImagePair, detect_layout, find_pairs
from algnet.data.layouts import DPDD_INDOOR_TEST_INDICES
from algnet.errors import AlgnetError


def _png(path: Path, value: int = 0, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), value, dtype=dtype))
    return path


def _names(pairs):
    return [p.name for p in pairs]


# ----------------------------------------------------------------------------------------------- GoPro


def _gopro(root: Path, split="test", seqs=("GOPR0384_11_00", "GOPR0385_11_01"), frames=("000001.png", "000002.png")):
    for s in seqs:
        for f in frames:
            _png(root / split / s / "blur" / f, 10)
            _png(root / split / s / "blur_gamma" / f, 20)
            _png(root / split / s / "sharp" / f, 30)


class TestGoPro:
    def test_sequences(self, tmp_path):
        _gopro(tmp_path)
        _gopro(tmp_path, split="train", seqs=("GOPR0372_07_00",))
        pairs = find_pairs(tmp_path, "gopro", "test")
        assert _names(pairs) == [
            "GOPR0384_11_00/000001.png", "GOPR0384_11_00/000002.png",
            "GOPR0385_11_01/000001.png", "GOPR0385_11_01/000002.png",
        ]
        p = pairs[1]
        assert p == ImagePair(
            tmp_path / "test/GOPR0384_11_00/blur/000002.png", tmp_path / "test/GOPR0384_11_00/sharp/000002.png",
            "GOPR0384_11_00/000002.png", "GOPR0384_11_00",
        )
        assert len(find_pairs(tmp_path, "gopro", "train")) == 2
        assert detect_layout(tmp_path) == "gopro"

    @pytest.mark.parametrize("dirs", [("blur", "sharp"), ("input", "target")])
    def test_flattened(self, tmp_path, dirs):
        for name in ("b.png", "a.png"):
            _png(tmp_path / "test" / dirs[0] / name)
            _png(tmp_path / "test" / dirs[1] / name)
        pairs = find_pairs(tmp_path, "gopro")
        assert _names(pairs) == ["a.png", "b.png"]
        assert pairs[0].blur == tmp_path / "test" / dirs[0] / "a.png"
        assert pairs[0].sharp == tmp_path / "test" / dirs[1] / "a.png"
        assert pairs[0].group is None
        assert detect_layout(tmp_path) == "gopro"

    def test_directly_under_root(self, tmp_path):
        _gopro(tmp_path, split=".")
        assert len(find_pairs(tmp_path, "gopro", "test")) == 4
        assert detect_layout(tmp_path) == "gopro"

    def test_missing_sharp_partner(self, tmp_path):
        _gopro(tmp_path)
        (tmp_path / "test/GOPR0385_11_01/sharp/000002.png").unlink()
        with pytest.raises(AlgnetError, match=r"blurred image.*GOPR0385_11_01.*000002\.png"):
            find_pairs(tmp_path, "gopro")

    def test_missing_blur_partner(self, tmp_path):
        _gopro(tmp_path)
        _png(tmp_path / "test/GOPR0384_11_00/sharp/000099.png")
        with pytest.raises(AlgnetError, match=r"sharp image.*no blurred partner.*000099\.png"):
            find_pairs(tmp_path, "gopro")

    def test_lists_at_most_five(self, tmp_path):
        for i in range(8):
            _png(tmp_path / "blur" / f"{i}.png")
        _png(tmp_path / "sharp" / "0.png")
        with pytest.raises(AlgnetError, match=r"7 blurred image.*: 1\.png, 2\.png, 3\.png, 4\.png, 5\.png and 2 more$"):
            find_pairs(tmp_path, "folders")

    def test_empty_folder(self, tmp_path):
        (tmp_path / "test/GOPR0384_11_00/blur").mkdir(parents=True)
        _png(tmp_path / "test/GOPR0384_11_00/sharp/000001.png")
        with pytest.raises(AlgnetError, match=r"no images in .*GOPR0384_11_00.blur"):
            find_pairs(tmp_path, "gopro")

    def test_no_layout(self, tmp_path):
        (tmp_path / "test" / "something").mkdir(parents=True)
        with pytest.raises(AlgnetError, match=r"no GoPro layout in .*test"):
            find_pairs(tmp_path, "gopro")


# ------------------------------------------------------------------------------------------------ HIDE


class TestHide:
    @pytest.mark.parametrize("gt_inside_test", [False, True])
    def test_official_layout(self, tmp_path, gt_inside_test):
        gt = tmp_path / ("test/GT" if gt_inside_test else "GT")
        for subset, names in (("test-close-ups", ("1fromGOPR0950.png",)), ("test-long-shot", ("1fromGOPR1096.png", "9.png"))):
            for n in names:
                _png(tmp_path / "test" / subset / n)
                _png(gt / n)
        _png(gt / "only-in-train.png")  # GT/ is shared with the train split
        pairs = find_pairs(tmp_path, "hide")
        assert _names(pairs) == ["test-close-ups/1fromGOPR0950.png", "test-long-shot/1fromGOPR1096.png", "test-long-shot/9.png"]
        assert [p.group for p in pairs] == ["test-close-ups", "test-long-shot", "test-long-shot"]
        assert pairs[2].sharp == gt / "9.png"
        assert detect_layout(tmp_path) == "hide"

    def test_root_is_the_test_folder(self, tmp_path):
        _png(tmp_path / "test/test-long-shot/a.png")
        _png(tmp_path / "GT/a.png")
        pairs = find_pairs(tmp_path / "test", "hide")
        assert pairs == [ImagePair(tmp_path / "test/test-long-shot/a.png", tmp_path / "GT/a.png", "test-long-shot/a.png", "test-long-shot")]
        assert detect_layout(tmp_path / "test") == "hide"

    def test_input_target(self, tmp_path):
        _png(tmp_path / "test/input/x.png")
        _png(tmp_path / "test/target/x.png")
        pairs = find_pairs(tmp_path, "hide")
        assert _names(pairs) == ["x.png"]

    def test_missing_gt(self, tmp_path):
        _png(tmp_path / "test/test-close-ups/a.png")
        _png(tmp_path / "test/test-close-ups/b.png")
        _png(tmp_path / "GT/a.png")
        with pytest.raises(AlgnetError, match=r"test-close-ups have no sharp partner in .*GT: b\.png"):
            find_pairs(tmp_path, "hide")

    def test_no_gt_folder(self, tmp_path):
        _png(tmp_path / "test/test-close-ups/a.png")
        with pytest.raises(AlgnetError, match="no HIDE layout"):
            find_pairs(tmp_path, "hide")


# -------------------------------------------------------------------------------------------- RealBlur


def _realblur(root: Path, variant="J", split="test", prefix=None, scenes=(("scene001", 1), ("scene002", 2))):
    prefix = prefix or f"RealBlur-{variant}_ECC_IMCORR_centroid_itensity_ref"
    lines = []
    for scene, i in scenes:
        gt = f"{prefix}/{scene}/gt/gt_{i}.png"
        blur = f"{prefix}/{scene}/blur/blur_{i}.png"
        _png(root / gt)
        _png(root / blur)
        lines.append(f"{gt} {blur} ")  # trailing space, as in the official lists
    (root / f"RealBlur_{variant}_{split}_list.txt").write_text("\n".join(lines) + "\n\n")
    return prefix


class TestRealBlur:
    @pytest.mark.parametrize("variant", ["J", "R"])
    def test_list_file(self, tmp_path, variant):
        prefix = _realblur(tmp_path, variant)
        pairs = find_pairs(tmp_path, f"realblur_{variant.lower()}")
        assert _names(pairs) == ["scene001/blur/blur_1.png", "scene002/blur/blur_2.png"]
        assert [p.group for p in pairs] == ["scene001", "scene002"]
        assert pairs[0].sharp == tmp_path / prefix / "scene001/gt/gt_1.png"  # GT first on each line
        assert pairs[0].blur == tmp_path / prefix / "scene001/blur/blur_1.png"
        assert detect_layout(tmp_path) == f"realblur_{variant.lower()}"

    def test_train_split(self, tmp_path):
        _realblur(tmp_path, split="train", scenes=(("scene100", 5),))
        assert _names(find_pairs(tmp_path, "realblur_j", "train")) == ["scene100/blur/blur_5.png"]

    def test_root_is_the_prefixed_folder(self, tmp_path):
        prefix = _realblur(tmp_path)
        (tmp_path / "RealBlur_J_test_list.txt").rename(tmp_path / prefix / "RealBlur_J_test_list.txt")
        pairs = find_pairs(tmp_path / prefix, "realblur_j")
        assert pairs[1].blur == tmp_path / prefix / "scene002/blur/blur_2.png"

    def test_missing_listed_files(self, tmp_path):
        prefix = _realblur(tmp_path)
        (tmp_path / prefix / "scene002/gt/gt_2.png").unlink()
        with pytest.raises(AlgnetError, match=r"RealBlur_J_test_list\.txt lists 1 missing file.*scene002.gt.gt_2\.png"):
            find_pairs(tmp_path, "realblur_j")

    def test_malformed_line(self, tmp_path):
        (tmp_path / "RealBlur_R_test_list.txt").write_text("a.png b.png\nonly-one.png\n")
        with pytest.raises(AlgnetError, match=r"line 2: expected '<gt_path> <blur_path>'"):
            find_pairs(tmp_path, "realblur_r")

    def test_missing_list(self, tmp_path):
        with pytest.raises(AlgnetError, match=r"RealBlur_J_test_list\.txt does not exist"):
            find_pairs(tmp_path, "realblur_j")

    def test_both_lists_are_ambiguous(self, tmp_path):
        _realblur(tmp_path, "J")
        _realblur(tmp_path, "R")
        with pytest.raises(AlgnetError, match="both RealBlur-J and RealBlur-R"):
            detect_layout(tmp_path)


# ------------------------------------------------------------------------------------------------ DPDD


def _dpdd(root: Path, split="test", n=3):
    for i in range(n):
        name = f"1P0A{1000 + i}.png"
        _png(root / f"{split}_c/source/{name}", 500 * i, np.uint16)
        _png(root / f"{split}_c/target/{name}", 800 * i, np.uint16)
        _png(root / f"{split}_l/source/{name}", 5, np.uint16)  # left/right views are not inputs
    return root


class TestDPDD:
    def test_centre_view_and_labels(self, tmp_path):
        _dpdd(tmp_path, n=3)
        np.save(tmp_path / "indoor_labels.npy", np.array([2]))
        np.save(tmp_path / "outdoor_labels.npy", np.array([1, 3]))
        pairs = find_pairs(tmp_path, "dpdd")
        assert _names(pairs) == ["1P0A1000.png", "1P0A1001.png", "1P0A1002.png"]
        assert [p.group for p in pairs] == ["outdoor", "indoor", "outdoor"]
        assert pairs[0].blur == tmp_path / "test_c/source/1P0A1000.png"
        assert pairs[0].sharp == tmp_path / "test_c/target/1P0A1000.png"
        assert detect_layout(tmp_path) == "dpdd"

    def test_builtin_indoor_list_for_76_images(self, tmp_path):
        _dpdd(tmp_path, n=76)
        groups = [p.group for p in find_pairs(tmp_path, "dpdd")]
        assert groups.count("indoor") == 37 and groups.count("outdoor") == 39
        assert [i for i, g in enumerate(groups) if g == "indoor"] == list(DPDD_INDOOR_TEST_INDICES)
        assert groups[8] == groups[16] == groups[75] == "indoor" and groups[7] == groups[57] == "outdoor"

    def test_no_groups_otherwise(self, tmp_path):
        _dpdd(tmp_path, "val", n=2)
        _dpdd(tmp_path, "test", n=5)
        assert [p.group for p in find_pairs(tmp_path, "dpdd", "val")] == [None, None]
        assert [p.group for p in find_pairs(tmp_path, "dpdd", "test")] == [None] * 5

    def test_bad_labels(self, tmp_path):
        _dpdd(tmp_path, n=2)
        np.save(tmp_path / "indoor_labels.npy", np.array([1, 3]))
        with pytest.raises(AlgnetError, match=r"indoor_labels\.npy: indices 3 are outside 1\.\.2"):
            find_pairs(tmp_path, "dpdd")

    def test_restormer_layout(self, tmp_path):
        _png(tmp_path / "inputC/a.png")
        _png(tmp_path / "target/a.png")
        assert _names(find_pairs(tmp_path, "dpdd")) == ["a.png"]
        assert detect_layout(tmp_path) == "dpdd"

    def test_missing_target(self, tmp_path):
        _dpdd(tmp_path, n=2)
        (tmp_path / "test_c/target/1P0A1001.png").unlink()
        with pytest.raises(AlgnetError, match=r"1 blurred image.*test_c.source.*1P0A1001\.png"):
            find_pairs(tmp_path, "dpdd")


# --------------------------------------------------------------------------------------------- folders


class TestFolders:
    @pytest.mark.parametrize("dirs", [("blur", "sharp"), ("input", "target")])
    def test_flat(self, tmp_path, dirs):
        for n in ("2.jpg", "1.png"):
            _png(tmp_path / dirs[0] / n)
            _png(tmp_path / dirs[1] / n)
        (tmp_path / dirs[0] / "notes.txt").write_text("not an image")
        pairs = find_pairs(tmp_path, "folders")
        assert _names(pairs) == ["1.png", "2.jpg"]
        assert detect_layout(tmp_path) == "folders"

    def test_no_layout(self, tmp_path):
        (tmp_path / "blur").mkdir()
        with pytest.raises(AlgnetError, match="no paired folders in"):
            find_pairs(tmp_path, "folders")


# --------------------------------------------------------------------------------------------- general


def test_missing_root(tmp_path):
    with pytest.raises(AlgnetError, match=r"dataset folder .*nowhere does not exist"):
        find_pairs(tmp_path / "nowhere", "gopro")
    with pytest.raises(AlgnetError, match=r"nowhere does not exist"):
        detect_layout(tmp_path / "nowhere")


def test_unknown_dataset(tmp_path):
    with pytest.raises(AlgnetError, match="unknown dataset 'kitti'"):
        find_pairs(tmp_path, "kitti")


def test_detect_nothing(tmp_path):
    (tmp_path / "misc").mkdir()
    with pytest.raises(AlgnetError, match="no known dataset layout"):
        detect_layout(tmp_path)


def test_datasets_constant():
    assert DATASETS == ("gopro", "hide", "realblur_j", "realblur_r", "dpdd", "folders")
