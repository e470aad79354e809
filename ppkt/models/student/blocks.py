"""Blocks of the sparse student U-Net; each maps a SparseTensor ``[M, Cin]`` to ``[M', Cout]``.

Batch normalisation is ``BatchNorm1d`` over the feature matrix ``[M, C]`` (statistics over all active
voxels of the batch), as in MinkowskiEngine's ``MinkowskiBatchNorm``. ``bn_eps``/``bn_momentum`` are
PyTorch's (Pointcept's SpUNet uses ``eps=1e-3, momentum=0.01``; MinkowskiEngine PyTorch's defaults).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ppkt.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d


class SparseBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` on the features ``[M, C]`` of a SparseTensor (coordinates unchanged)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_feats(super().forward(x.feats))


class ConvBNReLU(nn.Module):
    """``conv -> BN -> ReLU`` with ``conv`` one of: submanifold (``kind="subm"``), ``"down"``, ``"up"``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kind: str = "subm",
        kernel_size: int = 3,
        stride: int = 2,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.conv: SubMConv3d | SparseConv3d | SparseInverseConv3d
        if kind == "subm":
            self.conv = SubMConv3d(in_channels, out_channels, kernel_size)
        elif kind == "down":
            self.conv = SparseConv3d(in_channels, out_channels, kernel_size, stride)
        elif kind == "up":
            self.conv = SparseInverseConv3d(in_channels, out_channels, kernel_size, stride)
        else:
            raise ValueError(f"unknown conv kind {kind!r}; expected 'subm', 'down' or 'up'")
        self.bn = SparseBatchNorm(out_channels, eps=bn_eps, momentum=bn_momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        y = self.bn(self.conv(x))
        return y.replace_feats(F.relu(y.feats))


class BasicBlock(nn.Module):
    """Residual block: ``subm3 -> BN -> ReLU -> subm3 -> BN`` plus skip (identity or 1×1 conv + BN), ReLU.

    Keeps the coordinates: ``[M, in_channels] -> [M, out_channels]``.
    """

    expansion = 1

    def __init__(
        self, in_channels: int, out_channels: int, bn_momentum: float = 0.1, bn_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.conv1 = SubMConv3d(in_channels, out_channels, 3)
        self.bn1 = SparseBatchNorm(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = SubMConv3d(out_channels, out_channels, 3)
        self.bn2 = SparseBatchNorm(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.downsample: nn.Sequential | None = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                SubMConv3d(in_channels, out_channels, 1),
                SparseBatchNorm(out_channels, eps=bn_eps, momentum=bn_momentum),
            )

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out.replace_feats(F.relu(out.feats))))
        residual = x if self.downsample is None else self.downsample(x)
        return out.replace_feats(F.relu(out.feats + residual.feats))


def make_layer(
    in_channels: int, out_channels: int, blocks: int, bn_momentum: float = 0.1, bn_eps: float = 1e-5
) -> nn.Sequential:
    """``blocks`` BasicBlocks, the first projecting ``in_channels -> out_channels``."""
    if blocks < 1:
        raise ValueError(f"a level needs at least one block, got {blocks}")
    layers = [BasicBlock(in_channels, out_channels, bn_momentum, bn_eps)]
    layers += [BasicBlock(out_channels, out_channels, bn_momentum, bn_eps) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
