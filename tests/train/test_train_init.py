"""`algnet train --init CKPT`: fine-tuning starts from any checkpoint's weights, strictly by default."""

import pytest
import torch
from safetensors.torch import load_file
from train_cases import one_thread_reference_scan

import algnet
from algnet.cli import main

TINY = {"width": 8, "enc_blocks": (1, 1, 1, 1), "mid_blocks": 1, "dec_blocks": (1, 1, 1, 1)}
# synthetic-tiny with that model, small crops, no validation: one step takes a second
FAST = ["--set", "model.kwargs={width: 8, enc_blocks: [1, 1, 1, 1], mid_blocks: 1, dec_blocks: [1, 1, 1, 1]}",
        "--set", "data.train.crop_size=32", "--set", "train.batch_size=2", "--set", "data.val=null",
        "--set", "train.num_workers=0", "--device", "cpu"]


@pytest.fixture(autouse=True)
def fast_cpu():
    with one_thread_reference_scan():
        yield


def _checkpoint(path, seed, **kwargs):
    torch.manual_seed(seed)
    model = algnet.create_model("algnet", **{**TINY, **kwargs})
    return model, algnet.save_checkpoint(model, path)


def _train(tmp_path, name, *extra):
    return main(["train", "synthetic-tiny", "--out", str(tmp_path / name), "--max-steps", "1",
                 "--set", "optim.lr=1e-12", "--set", "optim.min_lr=1e-12", *FAST, *extra])


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_init_starts_from_the_checkpoint_weights(tmp_path, capsys):
    """At lr 1e-12 one step moves no weight by 1e-5: the run's weights are the checkpoint's, whose
    seed (7) differs from the run's (0), so a run that ignored --init ends far from them."""
    model, ckpt = _checkpoint(tmp_path / "start.safetensors", seed=7)
    want = model.state_dict()
    assert _train(tmp_path, "init", "--init", str(ckpt)) == 0
    assert _max_diff(load_file(tmp_path / "init" / "last.safetensors"), want) < 1e-5
    assert _train(tmp_path, "fresh") == 0
    assert _max_diff(load_file(tmp_path / "fresh" / "last.safetensors"), want) > 1e-2
    state = torch.load(tmp_path / "init" / "last.pt", weights_only=True)
    assert state["step"] == 1 and state["scheduler"]["last_epoch"] == 1  # a fresh schedule, not the checkpoint's


def test_init_reads_wrapped_ddp_pth(tmp_path):
    model, _ = _checkpoint(tmp_path / "unused.safetensors", seed=7)
    pth = tmp_path / "wrapped.pth"
    torch.save({"params": {f"module.{k}": v for k, v in model.state_dict().items()}}, pth)
    assert _train(tmp_path, "pth", "--init", str(pth)) == 0
    assert _max_diff(load_file(tmp_path / "pth" / "last.safetensors"), model.state_dict()) < 1e-5


def test_mismatched_checkpoint_is_reported(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path / "wide.safetensors", seed=7, width=16)
    assert _train(tmp_path, "wide", "--init", str(ckpt)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wide.safetensors" in err and "--init-partial" in err
    assert "shape mismatch (checkpoint vs model): intro.weight (16, 3, 3, 3) vs (8, 3, 3, 3)" in err
    assert not (tmp_path / "wide" / "last.pt").exists()


def test_init_partial_loads_what_matches_and_lists_the_rest(tmp_path, capsys):
    """A checkpoint with two middle blocks: the first loads, the second's tensors are listed."""
    model, ckpt = _checkpoint(tmp_path / "deep.safetensors", seed=7, mid_blocks=2)
    assert _train(tmp_path, "strict", "--init", str(ckpt)) == 2
    assert "unexpected keys: middle_blks.1." in capsys.readouterr().err
    assert _train(tmp_path, "partial", "--init", str(ckpt), "--init-partial") == 0
    err = capsys.readouterr().err
    want = model.state_dict()
    extra = sorted(k for k in want if k.startswith("middle_blks.1."))
    got = load_file(tmp_path / "partial" / "last.safetensors")
    assert extra and not any(k in got for k in extra)
    assert _max_diff(got, {k: v for k, v in want.items() if k not in extra}) < 1e-5
    assert f"loaded {len(got)} of the model's {len(got)} tensors" in err
    listed = next(line for line in err.splitlines() if "skipped (not in the model): " in line).split(": ", 1)[1]
    assert sorted(listed.split(", ")) == extra


def test_init_with_resume_is_refused(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path / "c.safetensors", seed=7)
    assert _train(tmp_path, "x", "--init", str(ckpt), "--resume") == 2
    assert "--init" in capsys.readouterr().err
    assert _train(tmp_path, "y", "--init-partial") == 2
