"""The model registry: named variants, each a tiny builder (timm's pattern)."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers a builder under its function name; duplicate names are an error."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def create_model(name: str, **overrides) -> nn.Module:
    """Builds a registered variant; keyword overrides replace the variant's defaults."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = _REGISTRY[name](**overrides)
    # Recorded so checkpoints can rebuild the same architecture (see checkpoint.save_checkpoint).
    model.model_config = {"name": name, "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}}
    return model


def list_models() -> list[str]:
    return sorted(_REGISTRY)
