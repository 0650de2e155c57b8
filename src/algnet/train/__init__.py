"""Training: typed YAML configs, the resumable trainer, and DDP across GPUs and nodes.

``algnet train CONFIG`` (see :mod:`algnet.train.cli`) or, from Python::

    from algnet.train import load_config, train
    result = train(load_config("synthetic-tiny"), "runs/synthetic-tiny")
"""

from __future__ import annotations

import importlib

# Resolved on first use, so that ``algnet --help`` (which imports algnet.train.cli) stays fast.
_EXPORTS = {
    "Config": "config", "ModelConfig": "config", "DatasetConfig": "config", "DataConfig": "config",
    "OptimConfig": "config", "LossConfig": "config", "TrainConfig": "config", "load_config": "config",
    "list_configs": "config", "Trainer": "trainer", "TrainResult": "trainer", "train": "trainer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
