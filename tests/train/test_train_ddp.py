"""DistributedDataParallel: two gloo processes with global batch 4 train like one process with batch 4."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_cases import make_pairs
import torch

from algnet.train.config import config_from_dict, dump_config
from algnet.train.trainer import build_model, train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pairs(root: Path, n: int = 8, size: int = 24) -> Path:
    return make_pairs(root, n, size, seed=1)


def _gradient_free_parameters(cfg) -> set[str]:
    """Biases of the convolutions that an InstanceNorm follows (the end of each SFE): the norm
    subtracts them again, so their exact gradient is zero and their float gradient is rounding
    noise, which Adam scales to +-lr per step; one and two processes move them differently."""
    model = build_model(cfg)
    free = set()
    for name, module in model.named_modules():
        children = list(module.named_children()) if isinstance(module, torch.nn.Sequential) else []
        for (prev_name, prev), (_, cur) in zip(children, children[1:]):
            if isinstance(cur, torch.nn.InstanceNorm2d):
                convs = [n for n, m in prev.named_modules() if isinstance(m, torch.nn.Conv2d)]
                free.add(f"{name}.{prev_name}.{convs[-1]}.bias".replace("..", "."))
    return free


@pytest.fixture
def one_thread():
    """Like each torchrun worker (OMP_NUM_THREADS=1); also the fastest for 16x16 crops."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_gloo_ranks_match_one_process(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("ALGNET_SCAN_BACKEND", "reference")  # fast and sequential for 16x16 crops
    cfg = config_from_dict({
        "model": {"name": "algnet", "kwargs": {"width": 8, "enc_blocks": [1, 1, 1, 1], "mid_blocks": 1,
                                               "dec_blocks": [1, 1, 1, 1]}},
        "data": {"root": str(_pairs(tmp_path / "data")), "train": {"kind": "folders", "crop_size": 16}, "val": None},
        # Adam divides by sqrt(v): the rounding of tiny gradients (one batch-4 mean vs the mean of two
        # batch-2 means) is amplified in a few weights; a small lr keeps the difference under 1e-5.
        "optim": {"lr": 1e-4},
        "train": {"batch_size": 4, "total_steps": 3, "save_every": 100, "val_every": 100, "num_workers": 0},
    })
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_THREADING_LAYER": "workqueue"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "algnet", "train", str(path), "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list((tmp_path / "ddp").glob(".*.tmp"))  # atomic writes left no temporary files

    torch.manual_seed(123)  # the trainer seeds itself; the caller's RNG must not matter
    train(cfg, tmp_path / "single", device="cpu")
    ddp = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    one = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    assert ddp["step"] == one["step"] == 3
    assert not any(k.startswith("module.") for k in ddp["model"])  # the unwrapped model is saved
    free = _gradient_free_parameters(cfg)
    assert len(free) == 3 and all(k in one["model"] for k in free)  # SFE2, SFE4, SFE8
    for k, v in one["model"].items():
        if k not in free:
            torch.testing.assert_close(ddp["model"][k], v, rtol=0, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # And training did move the weights, so the comparison means something.
    torch.manual_seed(cfg.train.seed)
    init = build_model(cfg)
    assert max((one["model"][k] - v).abs().max().item() for k, v in init.state_dict().items()) > 5e-5


def test_batch_must_split_evenly(tmp_path):
    from algnet.errors import AlgnetError
    from algnet.train.distributed import DistContext
    from algnet.train.trainer import Trainer

    cfg = config_from_dict({"train": {"batch_size": 3}, "data": {"val": None}})
    with pytest.raises(AlgnetError, match="not divisible by the 2 processes"):
        Trainer(cfg, tmp_path, DistContext(rank=0, world_size=2))._setup()
