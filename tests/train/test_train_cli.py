"""`algnet train` end to end on a tiny config: files written, metrics right, NaN stops cleanly."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from train_cases import make_pairs, one_thread_reference_scan
import torch
import yaml
from skimage.metrics import peak_signal_noise_ratio

import algnet
from algnet.cli import main
from algnet.losses import MultiScaleLoss
from algnet.train.config import load_config


@pytest.fixture(autouse=True)
def fast_cpu(request):
    """Tiny crops run fastest on one thread with the reference scan; the full synthetic-tiny run
    (marked slow) keeps the defaults it promises users: every core and the fused scan."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    with one_thread_reference_scan():
        yield


def _write_pairs(root: Path, n: int, size: int, seed: int) -> Path:
    return make_pairs(root, n, size, seed)


@pytest.fixture
def tiny_yaml(tmp_path) -> Path:
    train_root = _write_pairs(tmp_path / "train", n=4, size=24, seed=0)
    val_root = _write_pairs(tmp_path / "val", n=2, size=20, seed=1)  # 20x20: not a multiple of 16
    cfg = {
        "model": {"name": "algnet", "kwargs": {"width": 8, "enc_blocks": [1, 1, 1, 1], "mid_blocks": 1,
                                               "dec_blocks": [1, 1, 1, 1]}},
        "data": {"train": {"kind": "folders", "root": str(train_root), "crop_size": 16},
                 "val": {"kind": "folders", "root": str(val_root), "crop_size": None, "flips": False}},
        "optim": {"lr": 1e-3},
        "train": {"batch_size": 2, "total_steps": 4, "val_every": 2, "save_every": 2, "log_every": 1, "num_workers": 0},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_writes_the_run_folder(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny_yaml), "--out", str(out), "--device", "cpu", "--set", "train.seed=3"]) == 0
    # config.yaml is the resolved config, overrides included, and loads back.
    resolved = load_config(str(out / "config.yaml"))
    assert resolved == load_config(str(tiny_yaml), ["train.seed=3"])
    # One metrics line per validation (steps 2 and 4), with the required fields.
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [2, 4]
    for m in lines:
        assert {"step", "psnr", "ssim", "input_psnr", "lr", "loss", "time"} <= set(m)
        assert all(math.isfinite(m[k]) for k in ("psnr", "ssim", "input_psnr", "lr", "loss"))
    # input_psnr is skimage's PSNR of the blurred validation images, averaged.
    val = Path(yaml.safe_load(tiny_yaml.read_text())["data"]["val"]["root"])
    expected = np.mean([peak_signal_noise_ratio(cv2.imread(str(val / "sharp" / f)) / 255.0,
                                                cv2.imread(str(val / "blur" / f)) / 255.0, data_range=1)
                        for f in ("000.png", "001.png")])
    assert lines[0]["input_psnr"] == pytest.approx(expected, abs=1e-4)
    assert lines[1]["lr"] == pytest.approx(1e-7)  # cosine reaches min_lr at total_steps
    # last.pt is plain data; best/last .safetensors rebuild the model.
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 4
    best = algnet.load_checkpoint(out / "best.safetensors")
    last = algnet.load_checkpoint(out / "last.safetensors")
    for k, v in last.state_dict().items():
        assert torch.equal(v, state["model"][k])
    # The best checkpoint scores what metrics.jsonl says it scored.
    best_step = max(lines, key=lambda m: m["psnr"])
    x = torch.from_numpy(cv2.imread(str(val / "blur" / "000.png"))[..., ::-1] / 255.0).float().permute(2, 0, 1)[None]
    y = cv2.imread(str(val / "sharp" / "000.png"))[..., ::-1] / 255.0
    y2 = cv2.imread(str(val / "sharp" / "001.png"))[..., ::-1] / 255.0
    x2 = torch.from_numpy(cv2.imread(str(val / "blur" / "001.png"))[..., ::-1] / 255.0).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        preds = [best(t)[-1][0].clamp(0, 1).permute(1, 2, 0).numpy() for t in (x, x2)]
    psnr = np.mean([peak_signal_noise_ratio(g.astype(np.float32), p, data_range=1) for g, p in zip((y, y2), preds)])
    assert psnr == pytest.approx(best_step["psnr"], abs=1e-3)
    assert (out / "tb").is_dir()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_yaml, tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    forward = MultiScaleLoss.forward

    def poisoned(self, outputs, target):
        calls["n"] += 1
        loss = forward(self, outputs, target)
        return loss * float("nan") if calls["n"] >= 3 else loss  # the 3rd step's loss is NaN

    monkeypatch.setattr(MultiScaleLoss, "forward", poisoned)
    out = tmp_path / "nan"
    code = main(["train", str(tiny_yaml), "--out", str(out), "--device", "cpu", "--set", "train.save_every=1",
                 "--set", "data.val=null"])
    err = capsys.readouterr().err
    assert code == 2
    assert "algnet train: error: the training loss is nan at step 3" in err
    assert "(step 2) is the last good checkpoint" in err
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    algnet.load_checkpoint(out / "last.safetensors")


def test_interrupt_and_errors_are_one_line(tiny_yaml, tmp_path, capsys):
    assert main(["train", str(tiny_yaml), "--out", str(tmp_path / "x"), "--set", "train.batchsize=2"]) == 2
    assert "unknown key 'train.batchsize'" in capsys.readouterr().err
    assert main(["train", "no-such-config"]) == 2
    assert "no shipped config" in capsys.readouterr().err
    assert main(["train", str(tiny_yaml), "--out", str(tmp_path / "y"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_synthetic_tiny_learns_to_deblur(tmp_path):
    """The shipped demo recipe: minutes on a 2-core CPU, >= 2 dB over the blurred held-out photos."""
    out = tmp_path / "st"
    assert main(["train", "synthetic-tiny", "--out", str(out), "--device", "cpu"]) == 0
    final = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["step"] == load_config("synthetic-tiny").train.total_steps
    assert final["psnr"] >= final["input_psnr"] + 2.0, final
    assert (out / "best.safetensors").stat().st_size <= 15e6
