"""The learning-rate schedule: a per-step cosine decay from ``optim.lr`` to ``optim.min_lr``
(docs/DESIGN.md section 5)."""

from __future__ import annotations

import math


class CosineFactor:
    """``LambdaLR`` factor of a cosine decay from ``lr`` to ``min_lr`` over ``total`` steps.

    A class rather than a closure so the scheduler's state_dict stays plain data.
    """

    def __init__(self, lr: float, min_lr: float, total: int):
        self.lr, self.min_lr, self.total = lr, min_lr, total

    def __call__(self, step: int) -> float:
        return cosine_factor(step, self.lr, self.min_lr, self.total)


def cosine_factor(step: int, lr: float, min_lr: float, total: int) -> float:
    """lr(step) / lr for ``lr(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t / total)) / 2``."""
    t = min(step, total) / total
    return (min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))) / lr
