"""``algnet score`` end to end on tiny fabricated datasets in every supported layout.

Each JSON number is checked against direct metric calls on the arrays that were written.
"""

import csv
import json

import cv2
import numpy as np
import pytest
from scipy import ndimage

from algnet.cli import main
from algnet.metrics import DPDD_INDOOR, dpdd_metrics, psnr, realblur_score, ssim_matlab

RNG = np.random.default_rng(0)


def _write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _image(size=64):
    return RNG.integers(0, 256, (size, size, 3)).astype(np.uint8)


def _degrade(rgb, amount=12):
    return np.clip(rgb.astype(int) + RNG.integers(-amount, amount + 1, rgb.shape), 0, 255).astype(np.uint8)


def _score(tmp_path, protocol, pred, gt, *extra):
    out = tmp_path / f"{protocol}.json"
    rc = main(["score", "--protocol", protocol, str(pred), str(gt), "--json", str(out), "--quiet", *extra])
    assert rc == 0
    return json.loads(out.read_text())


def _expect_uint8(summary, pairs):
    """pairs: [(pred uint8, gt uint8)]; the summary must hold their mean PSNR and MATLAB SSIM."""
    assert summary["count"] == len(pairs)
    assert summary["psnr"] == pytest.approx(np.mean([psnr(p, g, 255) for p, g in pairs]), abs=1e-10)
    assert summary["ssim"] == pytest.approx(np.mean([ssim_matlab(p, g) for p, g in pairs]), abs=1e-12)


def _fabricate(root, pred_root, layout):
    """Writes a tiny ground truth in ``layout`` and predictions; returns [(pred, gt)] arrays."""
    pairs = []
    frame = 0
    for seq in ("GOPR0384_11_00", "GOPR0410_11_00"):
        for _ in range(2):
            frame += 1
            sharp, pred = _image(), None
            pred = _degrade(sharp)
            name = f"{frame:06d}.png"
            if layout == "gopro_nested":  # predictions mirror the relative ids: SEQ/NNNNNN.png
                _write(root / "test" / seq / "sharp" / name, sharp)
                _write(root / "test" / seq / "blur" / name, _degrade(sharp, 60))
                _write(root / "test" / seq / "blur_gamma" / name, _degrade(sharp, 60))
                _write(pred_root / seq / name, pred)
            elif layout == "gopro_blur_sharp":  # flat predictions
                _write(root / "test" / "sharp" / name, sharp)
                _write(root / "test" / "blur" / name, _degrade(sharp, 60))
                _write(pred_root / name, pred)
            elif layout == "gopro_input_target":  # predictions mirror the GT's relative path
                _write(root / "test" / "target" / name, sharp)
                _write(root / "test" / "input" / name, _degrade(sharp, 60))
                _write(pred_root / "test" / "target" / name, pred)
            elif layout == "hide":  # official HIDE: GT/ beside test/, flat predictions
                subset = "test-close-ups" if frame % 2 else "test-long-shot"
                _write(root / "GT" / name, sharp)
                _write(root / "test" / subset / name, _degrade(sharp, 60))
                _write(pred_root / name, pred)
            elif layout == "flat":  # a bare folder of sharp images
                _write(root / name, sharp)
                _write(pred_root / name, pred)
            pairs.append((pred, sharp))
    return pairs


@pytest.mark.parametrize("layout,protocol", [
    ("gopro_nested", "gopro"), ("gopro_blur_sharp", "gopro"), ("gopro_input_target", "gopro"),
    ("hide", "hide"), ("flat", "gopro"),
])
def test_uint8_layouts(tmp_path, layout, protocol):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    pairs = _fabricate(gt, pred, layout)
    summary = _score(tmp_path, protocol, pred, gt)
    assert summary["protocol"] == protocol
    _expect_uint8(summary, pairs)


def test_csv_table_and_workers(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    pairs = _fabricate(gt, pred, "gopro_nested")
    out_csv = tmp_path / "rows.csv"
    one = _score(tmp_path, "gopro", pred, gt, "--csv", str(out_csv), "--figures", str(tmp_path / "figs"), "--figures-count", "1")
    stdout = capsys.readouterr().out
    assert "protocol gopro: 4 images" in stdout and f"{one['psnr']:.2f}" in stdout
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["name"] for r in rows] == ["GOPR0384_11_00/000001.png", "GOPR0384_11_00/000002.png",
                                         "GOPR0410_11_00/000003.png", "GOPR0410_11_00/000004.png"]
    for row, (p, g) in zip(rows, pairs):
        assert float(row["psnr"]) == pytest.approx(psnr(p, g, 255), abs=1e-9)
        assert float(row["ssim"]) == pytest.approx(ssim_matlab(p, g), abs=1e-12)
    worst, best = np.argmin([psnr(p, g, 255) for p, g in pairs]), np.argmax([psnr(p, g, 255) for p, g in pairs])
    assert sorted(f.name for f in (tmp_path / "figs").iterdir()) == sorted(
        rows[i]["name"].replace("/", "__") for i in (worst, best))
    two = _score(tmp_path, "gopro", pred, gt, "--workers", "2")
    assert two["psnr"] == one["psnr"] and two["ssim"] == one["ssim"]


def _texture(size=96):
    img = ndimage.gaussian_filter(RNG.random((size, size, 3)), (2, 2, 0))
    return np.round((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


def test_realblur_list_files(tmp_path):
    gt_root, pred_root = tmp_path / "RealBlur", tmp_path / "pred"
    lines, pairs = [], []
    for i, shift in enumerate([(1, -2), (0, 3), None]):  # None: a flat prediction, ECC fails
        big = _texture()
        sharp = big[16:80, 16:80]
        pred = np.full_like(sharp, 90) if shift is None else big[16 + shift[0]: 80 + shift[0], 16 + shift[1]: 80 + shift[1]]
        gt_rel = f"RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene{i:03d}/gt/gt_1.png"
        blur_rel = f"RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene{i:03d}/blur/blur_1.png"
        _write(gt_root / gt_rel, sharp)
        _write(gt_root / blur_rel, _degrade(sharp, 40))
        _write(pred_root / f"scene{i:03d}" / "blur" / "blur_1.png", pred)  # mirrors the relative id
        lines.append(f"{gt_rel} {blur_rel} ")  # trailing space, as in the official lists
        pairs.append((pred, sharp))
    (gt_root / "RealBlur_J_test_list.txt").write_text("\n".join(lines) + "\n")
    summary = _score(tmp_path, "realblur", pred_root, gt_root)
    direct = [realblur_score(p, g) for p, g in pairs]
    assert summary["count"] == 3 and summary["ecc_failures"] == 1 == sum(d["ecc_failed"] for d in direct)
    assert summary["psnr"] == pytest.approx(np.mean([d["psnr"] for d in direct]), abs=1e-9)
    assert summary["ssim"] == pytest.approx(np.mean([d["ssim"] for d in direct]), abs=1e-12)
    assert direct[0]["psnr"] > 35 and direct[1]["psnr"] > 35  # the shifted copies were aligned


def _write16(path, rgb16):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))


def _dpdd(root, pred_root, n, size=16, labels=None):
    gts, preds = [], []
    for i in range(n):
        gt = RNG.integers(0, 65536, (size, size, 3)).astype(np.uint16)
        pred = np.clip(gt.astype(int) + RNG.integers(-3000, 3000, gt.shape), 0, 65535).astype(np.uint16)
        name = f"img{i:03d}.png"
        _write16(root / "test_c" / "target" / name, gt)
        _write16(root / "test_c" / "source" / name, pred)
        _write16(pred_root / name, pred)
        gts.append(gt)
        preds.append(pred)
    if labels:
        for group, idx in labels.items():
            np.save(root / f"{group}_labels.npy", np.array(idx))
    return preds, gts


@pytest.mark.parametrize("protocol", ["dpdd", "dpdd16"])
def test_dpdd_16_bit_and_breakdowns(tmp_path, protocol):
    gt_root, pred_root = tmp_path / "DPDD", tmp_path / "pred"
    preds, gts = _dpdd(gt_root, pred_root, 3, labels={"indoor": [1, 3], "outdoor": [2]})
    summary = _score(tmp_path, protocol, pred_root, gt_root)
    scale = (lambda g: (g >> 8).astype(np.float32) / 255) if protocol == "dpdd" else (lambda g: g.astype(np.float32) / 65535)
    direct = [dpdd_metrics(p.astype(np.float32) / 65535, scale(g)) for p, g in zip(preds, gts)]
    for key in ("psnr", "ssim", "mae"):
        assert summary[key] == pytest.approx(np.mean([d[key] for d in direct]), abs=1e-9)
        assert summary["combined"][key] == summary[key]
        assert summary["indoor"][key] == pytest.approx(np.mean([direct[0][key], direct[2][key]]), abs=1e-9)
        assert summary["outdoor"][key] == pytest.approx(direct[1][key], abs=1e-9)
    assert summary["lpips"] is None and summary["indoor"]["lpips"] is None  # lpips is not installed here
    assert (summary["indoor"]["count"], summary["outdoor"]["count"], summary["combined"]["count"]) == (2, 1, 3)


def test_dpdd_truncation_changes_the_numbers(tmp_path):
    gt_root, pred_root = tmp_path / "DPDD", tmp_path / "pred"
    _dpdd(gt_root, pred_root, 2)
    assert abs(_score(tmp_path, "dpdd", pred_root, gt_root)["psnr"] - _score(tmp_path, "dpdd16", pred_root, gt_root)["psnr"]) > 0.01


def test_dpdd_builtin_indoor_list_for_76_flat_images(tmp_path):
    gt_root, pred_root = tmp_path / "target", tmp_path / "pred"
    psnrs = []
    for i in range(76):
        gt = RNG.integers(0, 256, (8, 8, 3)).astype(np.uint8)
        pred = _degrade(gt, 5 + i % 7)
        _write(gt_root / f"{i:02d}.png", gt)
        _write(pred_root / f"{i:02d}.png", pred)
        psnrs.append(dpdd_metrics(pred.astype(np.float32) / 255, gt.astype(np.float32) / 255)["psnr"])
    summary = _score(tmp_path, "dpdd", pred_root, gt_root)
    indoor = [psnrs[i] for i in DPDD_INDOOR]
    outdoor = [p for i, p in enumerate(psnrs) if i not in DPDD_INDOOR]
    assert summary["indoor"]["count"] == 37 and summary["outdoor"]["count"] == 39
    assert summary["indoor"]["psnr"] == pytest.approx(np.mean(indoor), abs=1e-9)
    assert summary["outdoor"]["psnr"] == pytest.approx(np.mean(outdoor), abs=1e-9)


class TestErrors:
    def _run(self, capsys, *argv):
        rc = main(["score", *map(str, argv), "--quiet"])
        return rc, capsys.readouterr().err

    def test_unmatched_names_listed(self, tmp_path, capsys):
        for i in range(7):
            _write(tmp_path / "gt" / f"{i}.png", _image(8))
        _write(tmp_path / "pred" / "0.png", _image(8))
        rc, err = self._run(capsys, "--protocol", "gopro", tmp_path / "pred", tmp_path / "gt")
        assert rc == 2 and err.startswith("algnet score: error:")
        assert "no prediction for 6 of 7" in err and "1.png, 2.png, 3.png, 4.png, 5.png and 1 more" in err

    def test_size_mismatch_names_both(self, tmp_path, capsys):
        _write(tmp_path / "gt" / "a.png", _image(16))
        _write(tmp_path / "pred" / "a.png", _image(12))
        rc, err = self._run(capsys, "--protocol", "hide", tmp_path / "pred", tmp_path / "gt")
        assert rc == 2 and "size mismatch" in err and str(tmp_path / "pred" / "a.png") in err
        assert str(tmp_path / "gt" / "a.png") in err

    def test_unreadable_missing_and_bad_protocol(self, tmp_path, capsys):
        _write(tmp_path / "gt" / "a.png", _image(16))
        (tmp_path / "pred").mkdir()
        (tmp_path / "pred" / "a.png").write_bytes(b"garbage")
        rc, err = self._run(capsys, "--protocol", "gopro", tmp_path / "pred", tmp_path / "gt")
        assert rc == 2 and "a.png: cannot read the image" in err
        rc, err = self._run(capsys, "--protocol", "gopro", tmp_path / "nope", tmp_path / "gt")
        assert rc == 2 and "nope: no such prediction folder" in err
        rc, err = self._run(capsys, "--protocol", "gopro", tmp_path / "pred", tmp_path / "nogt")
        assert rc == 2 and "nogt: no such ground-truth folder" in err
        with pytest.raises(SystemExit) as exit_info:
            main(["score", "--protocol", "matlab", str(tmp_path / "pred"), str(tmp_path / "gt")])
        assert exit_info.value.code == 2

    def test_ambiguous_file_name(self, tmp_path, capsys):
        _write(tmp_path / "gt" / "a.png", _image(8))
        _write(tmp_path / "pred" / "x" / "a.png", _image(8))
        _write(tmp_path / "pred" / "y" / "a.png", _image(8))
        rc, err = self._run(capsys, "--protocol", "gopro", tmp_path / "pred", tmp_path / "gt")
        assert rc == 2 and "matches several predictions" in err

    def test_one_prediction_for_two_ground_truths(self, tmp_path, capsys):
        for seq in ("GOPR0001_00_00", "GOPR0002_00_00"):  # frame names repeat across sequences
            _write(tmp_path / "gt" / "test" / seq / "sharp" / "000001.png", _image(8))
            _write(tmp_path / "gt" / "test" / seq / "blur" / "000001.png", _image(8))
        _write(tmp_path / "pred" / "000001.png", _image(8))
        rc, err = self._run(capsys, "--protocol", "gopro", tmp_path / "pred", tmp_path / "gt")
        assert rc == 2 and "only match for several ground-truth images" in err
        assert "GOPR0001_00_00/000001.png, GOPR0002_00_00/000001.png" in err

    def test_too_small_for_the_protocol(self, tmp_path, capsys):
        _write(tmp_path / "gt" / "a.png", _image(12))
        _write(tmp_path / "pred" / "a.png", _image(12))
        rc, err = self._run(capsys, "--protocol", "realblur", tmp_path / "pred", tmp_path / "gt")
        assert rc == 2 and "a.png vs " in err and "too small" in err


def test_identical_images_give_standard_json(tmp_path):
    """An infinite PSNR is written as null, and the file parses as strict JSON."""
    img = _image(32)
    _write(tmp_path / "gt" / "a.png", img)
    _write(tmp_path / "pred" / "a.png", img)
    out = tmp_path / "s.json"
    assert main(["score", "--protocol", "gopro", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json", str(out),
                 "--quiet"]) == 0

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    summary = json.loads(out.read_text(), parse_constant=refuse)
    assert summary["psnr"] is None and summary["ssim"] == pytest.approx(1.0)
