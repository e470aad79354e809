"""The :class:`SparseTensor` container of :mod:`ppkt.sparse` (both conv backends).

A sparse tensor is a feature matrix ``feats`` float ``[M, C]`` attached to int32 coordinates ``coords``
``[M, 4]`` rows ``(batch, x, y, z)``, unique per row, at tensor-stride ``stride`` (1 for the input).
Coordinates at stride ``s`` are stored **divided by** ``s`` (level coordinates, see
:mod:`ppkt.sparse.kernel_map`). Every tensor derived from one input (conv outputs,
:meth:`SparseTensor.replace_feats`) shares a single :class:`~ppkt.sparse.kernel_map.KernelMapCache`, so all
layers at the same resolution level reuse the same kernel maps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ppkt.sparse.kernel_map import KernelMapCache


class SparseTensor:
    """Features ``[M, C]`` at integer voxel coordinates ``[M, 4]`` of one resolution level.

    Args:
        feats: float ``[M, C]`` features.
        coords: integer ``[M, 4]`` ``(batch, x, y, z)`` level coordinates (converted to int32), unique rows,
            on the same device as ``feats``.
        stride: tensor-stride of this level (1 for network inputs).
        cache: kernel-map cache to share; ``None`` creates a new one (a new input hierarchy).
    """

    __slots__ = ("cache", "coords", "feats", "stride")

    def __init__(self, feats: Tensor, coords: Tensor, stride: int = 1, cache: KernelMapCache | None = None):
        if feats.ndim != 2:
            raise ValueError(f"feats must have shape [M, C], got {tuple(feats.shape)}")
        if coords.ndim != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must have shape [M, 4] (batch, x, y, z), got {tuple(coords.shape)}")
        if coords.shape[0] != feats.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        if coords.dtype.is_floating_point or coords.dtype == torch.bool:
            raise ValueError(f"coords must be an integer tensor, got {coords.dtype}")
        if coords.device != feats.device:
            raise ValueError(f"coords on {coords.device} but feats on {feats.device}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if coords.dtype != torch.int32:
            coords = coords.to(torch.int32)
        self.feats = feats
        self.coords = coords
        self.stride = int(stride)
        self.cache = KernelMapCache() if cache is None else cache
        self.cache.register_level(self.stride, coords)

    @property
    def num_points(self) -> int:
        return int(self.feats.shape[0])

    @property
    def num_channels(self) -> int:
        return int(self.feats.shape[1])

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def replace_feats(self, feats: Tensor) -> SparseTensor:
        """Same coordinates, stride and cache with new features ``[M, C']``."""
        if feats.ndim != 2 or feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"expected features of shape [{self.coords.shape[0]}, C], got {tuple(feats.shape)}"
            )
        out = SparseTensor.__new__(SparseTensor)
        out.feats, out.coords, out.stride, out.cache = feats, self.coords, self.stride, self.cache
        return out

    def dense(self, spatial_shape: tuple[int, int, int], batch_size: int | None = None) -> Tensor:
        """Scatter into a dense ``[B, C, Z, Y, X]`` grid (coordinates must be non-negative and in range)."""
        if batch_size is None:
            batch_size = int(self.coords[:, 0].max()) + 1 if self.num_points else 0
        z, y, x = spatial_shape
        out = self.feats.new_zeros(batch_size, z, y, x, self.num_channels)
        c = self.coords.long()
        out[c[:, 0], c[:, 3], c[:, 2], c[:, 1]] = self.feats
        return out.permute(0, 4, 1, 2, 3).contiguous()

    def __repr__(self) -> str:
        return (
            f"SparseTensor(points={self.num_points}, channels={self.num_channels}, stride={self.stride}, "
            f"dtype={self.dtype}, device={self.device})"
        )


def sparse_cat(tensors: list[SparseTensor] | tuple[SparseTensor, ...]) -> SparseTensor:
    """Concatenate the features (``dim=1``) of tensors at the same level of the same hierarchy."""
    if not tensors:
        raise ValueError("sparse_cat needs at least one tensor")
    first = tensors[0]
    for t in tensors[1:]:
        # a cache holds one coordinate set per stride (checked on registration), so this implies equal coords
        if t.cache is not first.cache or t.stride != first.stride:
            raise ValueError(
                "sparse_cat: tensors must share coordinates (same input hierarchy and stride); got strides "
                f"{[u.stride for u in tensors]}"
            )
    return first.replace_feats(torch.cat([t.feats for t in tensors], dim=1))
