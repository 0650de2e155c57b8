"""Exact resume: an interrupted and resumed run ends with bitwise the weights of an uninterrupted one."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_cases import make_pairs, one_thread_reference_scan
import torch

from algnet.errors import AlgnetError
from algnet.train.config import config_from_dict, dump_config
from algnet.train.trainer import build_model, train

TINY_MODEL = {"name": "algnet", "kwargs": {"width": 8, "enc_blocks": [1, 1, 1, 1], "mid_blocks": 1,
                                           "dec_blocks": [1, 1, 1, 1]}}





def tiny_config(data_root: Path, **train):
    return config_from_dict({
        "model": TINY_MODEL,
        "data": {"root": str(data_root), "train": {"kind": "folders", "crop_size": 16}, "val": None},
        "optim": {"lr": 1e-3, "ema": 0.9, "grad_clip": 1.0},
        "train": {"batch_size": 2, "total_steps": 8, "val_every": 100, "save_every": 100, "log_every": 1,
                  "num_workers": 0, **train},
    })


@pytest.fixture(autouse=True, scope="module")
def deterministic_cpu():
    with one_thread_reference_scan():
        yield


def load_state(out: Path) -> dict:
    return torch.load(out / "last.pt", map_location="cpu", weights_only=True)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    for section in ("model", "ema"):
        assert a[section].keys() == b[section].keys()
        for k in a[section]:
            assert torch.equal(a[section][k], b[section][k]), f"{section}.{k} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), f"optimizer state {i}.{k} differs"
    assert a["scheduler"] == b["scheduler"]
    assert (a["step"], a["epoch"], a["batch_in_epoch"]) == (b["step"], b["epoch"], b["batch_in_epoch"])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run of 7 steps (3 batches per epoch: it ends inside epoch 2)."""
    base = tmp_path_factory.mktemp("resume")
    data = make_pairs(base / "data", n=6)
    cfg = tiny_config(data)
    result = train(cfg, base / "full", max_steps=7, device="cpu")
    assert result.status == "stopped" and result.step == 7
    return cfg, data, load_state(base / "full")


def assert_trained(before: dict, after: dict) -> None:
    """Steps moved the weights: almost every tensor changed, some by more than 1e-4 (Adam moves a
    weight by up to ~lr per step; lr here decays from 1e-3 to 4e-5). Two runs that both did nothing
    would be bitwise equal too."""
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= 0.9 * len(before), f"only {len(changed)} of {len(before)} tensors changed"
    assert max((before[k].float() - after[k].float()).abs().max().item() for k in before) > 1e-4


def test_max_steps_then_resume_is_bitwise_exact(reference_run, tmp_path):
    cfg, _, full = reference_run
    out = tmp_path / "run"
    first = train(cfg, out, max_steps=4, device="cpu")  # stops inside epoch 1
    state = load_state(out)
    assert (first.step, state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    second = train(cfg, out, resume=True, max_steps=7, device="cpu")
    assert second.step == 7
    assert_bitwise_equal(load_state(out), full)
    assert_trained(state["model"], full["model"])  # the resumed steps 5-7 trained
    torch.manual_seed(cfg.train.seed)
    assert_trained(build_model(cfg).state_dict(), state["model"])  # and so did steps 1-4
    # The exported inference weights are the EMA's.
    from safetensors.torch import load_file

    exported = load_file(out / "last.safetensors")
    assert all(torch.equal(exported[k], full["ema"][k]) for k in exported)


def test_checkpoint_loads_weights_only_and_holds_everything(reference_run):
    _, _, full = reference_run
    for key in ("model", "optimizer", "scheduler", "scaler", "ema", "step", "epoch", "batch_in_epoch", "rng", "config"):
        assert key in full
    assert set(full["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert full["config"]["model"] == TINY_MODEL


def test_run_folder_guards(reference_run, tmp_path):
    cfg, _, _ = reference_run
    with pytest.raises(AlgnetError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", resume=True, device="cpu")
    train(cfg, tmp_path / "once", max_steps=1, device="cpu")
    with pytest.raises(AlgnetError, match="already holds a run"):
        train(cfg, tmp_path / "once", max_steps=1, device="cpu")


def test_sigint_saves_and_resume_is_bitwise_exact(reference_run, tmp_path):
    """Ctrl-C in a real `algnet train` process: it finishes the step, saves, says how to resume."""
    cfg = copy.deepcopy(reference_run[0])
    cfg.train.save_every = 1
    cfg.train.total_steps = 1000  # it cannot finish before the signal
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "NUMBA_THREADING_LAYER": "workqueue"}  # reference scan inherited
    proc = subprocess.Popen([sys.executable, "-m", "algnet", "train", str(path), "--out", str(out), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "resume with: algnet train" in err and "--resume" in err
    at_stop = load_state(out)
    stopped = at_stop["step"]
    assert stopped >= 1
    train(cfg, out, resume=True, max_steps=stopped + 2, device="cpu")
    reference = tmp_path / "reference"
    train(cfg, reference, max_steps=stopped + 2, device="cpu")
    assert_bitwise_equal(load_state(out), load_state(reference))
    assert_trained(at_stop["model"], load_state(out)["model"])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_resumes_with_its_scaler(reference_run, tmp_path, amp):
    cfg = copy.deepcopy(reference_run[0])
    cfg.train.amp = amp
    train(cfg, tmp_path / "run", max_steps=2, device="cpu")
    train(cfg, tmp_path / "run", resume=True, max_steps=3, device="cpu")
    train(cfg, tmp_path / "full", max_steps=3, device="cpu")
    resumed, full = load_state(tmp_path / "run"), load_state(tmp_path / "full")
    assert_bitwise_equal(resumed, full)
    torch.manual_seed(cfg.train.seed)
    assert_trained(build_model(cfg).state_dict(), full["model"])
    # fp16 keeps a loss scale (GradScaler) in last.pt; bf16 needs none.
    assert (resumed["scaler"].get("scale") == 65536.0) == (amp == "fp16")
    assert all(torch.isfinite(v).all() for v in full["model"].values())
