"""Optimisers and learning-rate schedules shared by pretraining and fine-tuning.

Weight decay follows nanoGPT's rule: only parameters with ``dim() >= 2`` (conv kernels, linear weights)
decay; biases and BatchNorm weights and biases (1-D) do not. :func:`build_optimizer` splits every parameter
group the caller gives into its decaying and its non-decaying parameters (:func:`param_groups`), so the
optimizer's groups are those split groups; a group's other options (its ``lr``, a ``name``) are kept, so a
per-group schedule is built from the optimizer's groups (see ``SegmentationModule.configure_optimizers``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


def decays(p: Tensor) -> bool:
    """Whether ``p`` gets weight decay: matrices and conv kernels (``dim() >= 2``), not biases or norms."""
    return p.dim() >= 2


def param_groups(params: Iterable[Any], weight_decay: float) -> list[dict[str, Any]]:
    """Parameters, named parameters or parameter groups (anything a torch optimizer takes) split into
    weight-decay groups.

    Each group (a plain iterable of parameters is one group) becomes up to two groups that keep its other
    options (e.g. its own ``lr``): its :func:`decays` parameters with the group's ``weight_decay`` (or
    ``weight_decay`` when the group sets none), and the others with ``weight_decay = 0``; empty groups are
    left out. Parameter order is kept within each of the two.
    """
    items = list(params)
    groups = items if items and isinstance(items[0], dict) else [{"params": items}]
    out: list[dict[str, Any]] = []
    for group in groups:
        ps = group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        names = group.get("param_names")
        for decay in (True, False):  # a (name, parameter) pair decays as its parameter
            keep = [i for i, p in enumerate(ps) if decays(p[1] if isinstance(p, tuple) else p) == decay]
            if not keep:
                continue
            sub = {**group, "params": [ps[i] for i in keep]}
            sub["weight_decay"] = group.get("weight_decay", weight_decay) if decay else 0.0
            if names is not None:
                sub["param_names"] = [names[i] for i in keep]
            out.append(sub)
    return out


def build_optimizer(
    name: str, params: Iterable[Any], lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """``adamw`` or ``sgd`` (SLidR's: momentum, dampening 0.1) over :func:`param_groups` of ``params``
    (parameters or parameter groups, whose own ``lr`` etc. are kept): weight decay reaches only
    ``dim() >= 2`` parameters."""
    groups = param_groups(params, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=0.1, weight_decay=weight_decay)
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
