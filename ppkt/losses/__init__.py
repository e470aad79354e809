"""Losses and their factory (``name → class``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ppkt.losses.lovasz import lovasz_softmax
from ppkt.losses.ppnce import PPNCELoss

LOSSES: dict[str, type[nn.Module]] = {"ppnce": PPNCELoss}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a loss by name; raises ``ValueError`` listing the known names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)


__all__ = ["LOSSES", "PPNCELoss", "build_loss", "lovasz_softmax"]
