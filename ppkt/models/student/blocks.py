"""Blocks of the sparse student U-Net; each maps a SparseTensor ``[M, Cin]`` to ``[M', Cout]``.

Batch normalisation is ``BatchNorm1d`` over the feature matrix ``[M, C]`` (statistics over all active
voxels of the batch), as in MinkowskiEngine's ``MinkowskiBatchNorm``; synchronised across DDP processes
when asked (:func:`sync_batchnorm`). ``bn_eps``/``bn_momentum`` are PyTorch's (Pointcept's SpUNet uses
``eps=1e-3, momentum=0.01``; MinkowskiEngine PyTorch's defaults).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.distributed import gather_rows, world_size
from ppkt.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d


class SparseBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` on the features ``[M, C]`` of a SparseTensor (coordinates unchanged).

    With ``sync = True``, training under DDP normalises with the statistics of the voxels of every
    process, as one process would with their union (torch's ``SyncBatchNorm`` needs a GPU; this runs
    on any device and keeps the state dict of a plain BatchNorm).
    """

    sync: bool = False

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        if self.sync and self.training and world_size() > 1:
            return x.replace_feats(synced_batch_norm(self, x.feats))
        return x.replace_feats(super().forward(x.feats))


def synced_batch_norm(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """Training-mode ``bn(x)`` for ``x [m, C]`` with the mean and variance over every process's rows.

    Each process contributes its row count, mean and sum of squared deviations (gathered with gradients)
    and the global ones are Chan's parallel combination; the running statistics are updated as
    ``BatchNorm`` does (unbiased variance, ``momentum`` or a cumulative average when it is ``None``)."""
    xf = x.float()
    m, c = xf.shape
    mean = xf.mean(0) if m else xf.new_zeros(c)
    stats, _ = gather_rows(torch.cat([xf.new_tensor([m]), mean, ((xf - mean) ** 2).sum(0)]).unsqueeze(0))
    counts, means, m2 = stats[:, :1], stats[:, 1 : 1 + c], stats[:, 1 + c :]
    n = counts.sum()
    mean = (counts * means).sum(0) / n
    var = (m2.sum(0) + (counts * (means - mean) ** 2).sum(0)) / n
    y = (xf - mean) * torch.rsqrt(var + bn.eps)
    if bn.weight is not None and bn.bias is not None:
        y = y * bn.weight + bn.bias
    if bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            f = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), f)
            bn.running_var.lerp_((var * n / (n - 1).clamp(min=1)).to(bn.running_var.dtype), f)
    return y.to(x.dtype)


def sync_batchnorm(module: nn.Module, sync: bool = True) -> int:
    """Set ``sync`` on every :class:`SparseBatchNorm` of ``module``; returns how many there are."""
    norms = [m for m in module.modules() if isinstance(m, SparseBatchNorm)]
    for bn in norms:
        bn.sync = sync
    return len(norms)


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
