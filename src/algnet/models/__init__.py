"""Networks: ALGNet, its variants and the NAFNet baseline, plus checkpoint loading and TLC."""

from . import variants  # noqa: F401  (registers the named variants)
from .algnet import ALGBlock, ALGNet
from .checkpoint import CheckpointError, filter_official_state_dict, infer_model_config, load_checkpoint, save_checkpoint
from .mamba import Mamba
from .nafnet import NAFNet
from .registry import create_model, list_models, register_model
from .tlc import to_tlc

__all__ = [
    "ALGBlock", "ALGNet", "NAFNet", "Mamba", "CheckpointError", "create_model", "list_models", "register_model",
    "load_checkpoint", "save_checkpoint", "filter_official_state_dict", "infer_model_config", "to_tlc",
]
