"""``algnet eval`` end to end with a tiny checkpoint: its JSON equals ``algnet score`` on the saved images."""

import csv
import json

import cv2
import numpy as np
import pytest
import torch

import algnet
from algnet.cli import main
from algnet.errors import AlgnetError
from algnet.evaluation.runner import load_eval_config, run_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint and a 'folders' test set of two 32x32 images."""
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    model = algnet.create_model("algnet", width=8, enc_blocks=(1, 1, 1, 1), mid_blocks=1, dec_blocks=(1, 1, 1, 1))
    ckpt = algnet.save_checkpoint(model, root / "tiny.safetensors")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        sharp = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
        for folder, img in (("sharp", sharp), ("blur", cv2.GaussianBlur(sharp, (5, 5), 1.5))):
            (root / "set" / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "set" / folder / name), img)
    config = root / "eval.yaml"
    config.write_text(f"eval:\n  dataset: folders\n  root: {root / 'set'}\n  protocol: gopro\n")
    return root, ckpt, config


def test_eval_equals_score_of_saved_images(tiny, capsys):
    root, ckpt, config = tiny
    out = root / "out"
    rc = main(["eval", str(config), "--checkpoint", str(ckpt), "--device", "cpu", "--quiet",
               "--save-images", str(out / "images"), "--json", str(out / "eval.json"), "--csv", str(out / "eval.csv"),
               "--figures", str(out / "figures"), "--figures-count", "1"])
    assert rc == 0
    assert "protocol gopro: 2 images" in capsys.readouterr().out
    evaluated = json.loads((out / "eval.json").read_text())
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "b.png"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["a.png", "b.png"]  # 1 worst + 1 best
    rc = main(["score", "--protocol", "gopro", str(out / "images"), str(root / "set"), "--json", str(out / "score.json"), "--quiet"])
    assert rc == 0
    scored = json.loads((out / "score.json").read_text())
    for key in ("protocol", "count", "psnr", "ssim"):
        assert evaluated[key] == scored[key]
    assert evaluated["count"] == 2 and evaluated["dataset"] == "folders" and 5 < evaluated["psnr"] < 60
    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert [r["name"] for r in rows] == ["a.png", "b.png"]


def test_run_model_is_last_output_clamped(tiny):
    _, ckpt, _ = tiny
    model = algnet.load_checkpoint(ckpt)
    image = np.random.default_rng(1).random((24, 40, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(image).permute(2, 0, 1)[None])[-1].clamp(0, 1)[0].permute(1, 2, 0).numpy()
    got = run_model(model, image, torch.device("cpu"))
    assert got.shape == (24, 40, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


class TestConfig:
    def test_top_level_and_defaults(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("dataset: realblur_j\nroot: /data/RealBlur\n")
        config = load_eval_config(path)
        assert (config.dataset, str(config.root), config.split, config.protocol) == ("realblur_j", "/data/RealBlur", "test", "realblur")

    @pytest.mark.parametrize("text,message", [
        ("dataset: gopro\nroot: x\nbatch: 4\n", "unknown key"),
        ("dataset: gopro\n", "missing key 'root'"),
        ("dataset: imagenet\nroot: x\n", "'imagenet' is not one of"),
        ("dataset: dpdd\nroot: x\nprotocol: matlab\n", "unknown protocol 'matlab'"),
        ("[1, 2\n", "not valid YAML"),
    ])
    def test_errors(self, tmp_path, text, message):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(AlgnetError, match=message):
            load_eval_config(path)

    def test_cli_error_is_one_line(self, tmp_path, capsys, tiny):
        _, ckpt, _ = tiny
        rc = main(["eval", str(tmp_path / "missing.yaml"), "--checkpoint", str(ckpt), "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == 2 and err.strip() == f"algnet eval: error: {tmp_path / 'missing.yaml'}: no such config file"


def test_eval_dpdd_scores_unquantised_floats(tiny, tmp_path):
    """dpdd: truncated 8-bit input and ground truth, the clamped float output scored as is."""
    from algnet.metrics import dpdd_metrics

    _, ckpt, _ = tiny
    rng = np.random.default_rng(2)
    raws = []
    for i in range(2):
        gt = rng.integers(0, 65536, (32, 32, 3)).astype(np.uint16)
        blur = cv2.GaussianBlur(gt, (5, 5), 1.5)
        for folder, img in (("target", gt), ("source", blur)):
            (tmp_path / "DPDD" / "test_c" / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "DPDD" / "test_c" / folder / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        raws.append((blur, gt))
    config = tmp_path / "dpdd.yaml"
    config.write_text(f"dataset: dpdd\nroot: {tmp_path / 'DPDD'}\n")
    out = tmp_path / "dpdd.json"
    assert main(["eval", str(config), "--checkpoint", str(ckpt), "--device", "cpu", "--quiet", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    model = algnet.fuse(algnet.load_checkpoint(ckpt))  # what `algnet eval` runs
    direct = [dpdd_metrics(run_model(model, (b >> 8).astype(np.float32) / 255, torch.device("cpu")),
                           (g >> 8).astype(np.float32) / 255) for b, g in raws]
    assert summary["protocol"] == "dpdd" and summary["lpips"] is None
    for key in ("psnr", "ssim", "mae"):
        assert summary[key] == pytest.approx(np.mean([d[key] for d in direct]), abs=1e-9)
