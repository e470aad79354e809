"""Optimisers and learning-rate schedules shared by pretraining and fine-tuning."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def build_optimizer(
    name: str, params: Iterable[Any], lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """``adamw`` or ``sgd`` (SLidR's: momentum, dampening 0.1). ``params`` may be parameter groups."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=0.1, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: ['adamw', 'sgd']")


def warmup_cosine(total_steps: int, warmup_steps: int, schedule: str = "cosine", floor: float = 0.01) -> Any:
    """Multiplier ``step → factor`` for ``LambdaLR``: linear warm-up, then cosine decay to ``floor``."""
    total = max(1, total_steps)
    warm = max(0, min(warmup_steps, total - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if schedule == "constant":
            return 1.0
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def trainable(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]
