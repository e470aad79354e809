"""Heads on top of the 3D student's per-voxel features ``[M, C]``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """PPKT's 3D projection: a linear map (a 1×1×1 convolution) to ``out_dim``, then L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int = 64) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[M, in_dim] → [M, out_dim]`` with unit rows."""
        return F.normalize(self.linear(x), dim=1)


class SegmentationHead(nn.Module):
    """A linear classifier on voxel features: ``[M, in_dim] → [M, num_classes]`` logits."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)
