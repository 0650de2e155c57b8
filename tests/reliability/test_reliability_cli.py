"""Bad input through the command line: a one-line error, exit code 2, no traceback, no partial output.

Each case runs the real ``algnet`` entry point in a subprocess, as a user would.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import algnet

TINY = dict(width=8, enc_blocks=(1, 1, 1, 1), mid_blocks=1, dec_blocks=(1, 1, 1, 1))


def algnet_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "algnet", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    model = algnet.create_model("algnet", **TINY)
    ckpt = algnet.save_checkpoint(model, root / "tiny.safetensors")
    img = (np.random.default_rng(0).random((32, 40, 3)) * 255).astype(np.uint8)
    good = root / "good.png"
    cv2.imwrite(str(good), img)
    (root / "empty.png").write_bytes(b"")
    (root / "cut.png").write_bytes(good.read_bytes()[:120])
    (root / "notes.png").write_text("this is not an image\n")
    (root / "no_images").mkdir()
    (root / "no_images" / "readme.txt").write_text("nothing here")
    return dict(root=root, ckpt=ckpt, good=good, model=model)


@pytest.mark.parametrize("name, fragment", [
    ("missing.png", "missing.png"),
    ("empty.png", "empty.png"),
    ("cut.png", "cut.png"),
    ("notes.png", "notes.png"),
    ("no_images", "no_images"),
])
def test_deblur_bad_inputs(world, tmp_path, name, fragment):
    out = tmp_path / "out"
    result = algnet_cli("deblur", world["root"] / name, "-o", out, "--checkpoint", world["ckpt"], "--device", "cpu")
    assert_one_line_error(result, fragment)
    assert not out.exists() or not any(p.suffix == ".png" for p in out.rglob("*")), "no partial output"


def test_deblur_creates_missing_output_folder(world, tmp_path):
    out = tmp_path / "a" / "b"
    result = algnet_cli("deblur", world["good"], "-o", out, "--checkpoint", world["ckpt"], "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert cv2.imread(str(out / "good.png")).shape == (32, 40, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_deblur_refuses_to_overwrite_its_input(world, tmp_path):
    src = tmp_path / "img.png"
    src.write_bytes(world["good"].read_bytes())
    before = src.read_bytes()
    result = algnet_cli("deblur", src, "-o", tmp_path, "--checkpoint", world["ckpt"], "--device", "cpu")
    assert_one_line_error(result, "--overwrite")
    assert src.read_bytes() == before
    result = algnet_cli("deblur", src, "-o", tmp_path, "--checkpoint", world["ckpt"], "--device", "cpu", "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_refusals(world, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _RunsCode(marker)}, f)
    result = algnet_cli("deblur", world["good"], "-o", tmp_path / "o1", "--checkpoint", evil, "--device", "cpu")
    assert_one_line_error(result, "refused", "evil.pth")
    assert not marker.exists(), "the pickle's code ran"

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(world["ckpt"].read_bytes()[:-500])
    assert_one_line_error(algnet_cli("deblur", world["good"], "-o", tmp_path / "o2", "--checkpoint", cut, "--device", "cpu"), "truncated")

    other = tmp_path / "nafnet.pth"
    torch.save(algnet.create_model("nafnet32", **TINY).state_dict(), other)
    result = algnet_cli("deblur", world["good"], "-o", tmp_path / "o3", "--checkpoint", other, "--model", "algnet", "--device", "cpu")
    assert_one_line_error(result, "missing keys", "nafnet.pth")

    sd = world["model"].state_dict()
    sd["bogus.weight"] = torch.zeros(1)
    extra = tmp_path / "extra.pth"
    torch.save(sd, extra)
    assert_one_line_error(algnet_cli("deblur", world["good"], "-o", tmp_path / "o4", "--checkpoint", extra, "--device", "cpu"),
                          "unexpected keys", "bogus.weight")
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in ("o1", "o2", "o3", "o4"))


def _pairs(folder: Path, names, size=(24, 24)):
    for sub in ("blur", "sharp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        for sub in ("blur", "sharp"):
            cv2.imwrite(str(folder / sub / name), np.full((*size, 3), 40 * i + (sub == "blur") * 7, np.uint8))


def test_score_mismatched_pairs(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _pairs(gt, ["a.png", "b.png"])
    pred.mkdir()
    cv2.imwrite(str(pred / "a.png"), np.zeros((24, 24, 3), np.uint8))
    assert_one_line_error(algnet_cli("score", "--protocol", "gopro", pred, gt, "--json", tmp_path / "s.json"), "b.png")
    assert not (tmp_path / "s.json").exists()
    cv2.imwrite(str(pred / "b.png"), np.zeros((20, 24, 3), np.uint8))
    assert_one_line_error(algnet_cli("score", "--protocol", "gopro", pred, gt), "b.png")
    assert_one_line_error(algnet_cli("score", "--protocol", "gopro", tmp_path / "nowhere", gt), "nowhere")


def test_eval_missing_partner(world, tmp_path):
    data = tmp_path / "set"
    _pairs(data, ["a.png", "b.png"])
    (data / "sharp" / "b.png").unlink()
    config = tmp_path / "eval.yaml"
    config.write_text(f"dataset: folders\nroot: {data}\nsplit: test\nprotocol: gopro\n")
    assert_one_line_error(algnet_cli("eval", config, "--checkpoint", world["ckpt"], "--device", "cpu"), "b.png")
    assert_one_line_error(algnet_cli("eval", tmp_path / "nope.yaml", "--checkpoint", world["ckpt"]), "nope.yaml")


def test_train_mismatched_pairs_and_bad_config(tmp_path):
    data = tmp_path / "set"
    _pairs(data, ["a.png", "b.png", "c.png"], size=(40, 40))
    (data / "blur" / "c.png").unlink()
    overrides = ["--set", "model.kwargs={width: 8, enc_blocks: [1, 1, 1, 1], mid_blocks: 1, dec_blocks: [1, 1, 1, 1]}",
                 "--set", f"data.train={{kind: folders, root: {data}, crop_size: 32}}",
                 "--set", f"data.val={{kind: folders, root: {data}, crop_size: null}}",
                 "--set", "train.batch_size=2", "--set", "train.total_steps=2", "--set", "train.num_workers=0"]
    out = tmp_path / "run"
    result = algnet_cli("train", "synthetic-tiny", "--out", out, "--device", "cpu", *overrides)
    assert_one_line_error(result, "c.png")
    assert not (out / "last.pt").exists()
    assert_one_line_error(algnet_cli("train", "synthetic-tiny", "--out", out, "--set", "train.batch_sise=2"), "batch_sise")
    assert_one_line_error(algnet_cli("train", tmp_path / "missing.yaml", "--out", out), "missing.yaml")
