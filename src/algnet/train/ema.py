"""Exponential moving average of a model's weights, the weights validated and exported when on."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    """Exponential moving average of a model's weights (``ema = decay * ema + (1 - decay) * w``).

    The averaged copy keeps the source's ``model_config``, so it exports like the model itself.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, cur in zip(self.module.state_dict().values(), model.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.lerp_(cur, 1.0 - self.decay)
            else:
                avg.copy_(cur)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
