"""Voxelization: per-voxel input features, the point->voxel map, and at most one pair per voxel."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ppkt.data.transforms.base import S, Transform
from ppkt.geometry import voxelize

#: per-voxel input features :class:`Voxelize` can build (``data.features``)
FEATURES: tuple[str, ...] = ("rgb", "ones", "height")


class Voxelize(Transform[S]):
    """Voxelize the points and reduce the pairing to at most one (random) pair per voxel.

    Voxel coordinates are shifted so the sample's smallest is 0 (a translation: the networks are
    translation-equivariant, and the packed keys stay small).

    Features per voxel (concatenated in the given order): ``rgb`` (mean colour − ½), ``ones``, ``height``
    (mean coordinate along ``up_axis``, metres, relative to the sample's lowest point).
    """

    def __init__(self, voxel_size: float, features: Sequence[str] = ("rgb",), up_axis: int = 2) -> None:
        bad = [f for f in features if f not in FEATURES]
        if bad or not features:
            raise ValueError(f"unknown voxel features {bad}; choose from {list(FEATURES)}")
        self.voxel_size = voxel_size
        self.features = tuple(features)
        self.up_axis = up_axis

    @property
    def num_features(self) -> int:
        return sum(3 if f == "rgb" else 1 for f in self.features)

    def apply(self, s: S) -> S:
        vox = voxelize(s.points, self.voxel_size)
        M = vox.coords.shape[0]
        counts = vox.counts.to(s.points.dtype).unsqueeze(1)

        def mean(x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(M, x.shape[1], dtype=x.dtype)
            return out.index_add_(0, vox.inverse, x) / counts

        parts = []
        for f in self.features:
            if f == "rgb":
                parts.append(mean(s.colors.float()) - 0.5)
            elif f == "ones":
                parts.append(torch.ones(M, 1))
            else:
                up = s.points[:, self.up_axis : self.up_axis + 1]
                parts.append(mean(up - up.min()) if len(up) else torch.zeros(M, 1))
        coords = vox.coords - vox.coords.min(dim=0).values if M else vox.coords  # non-negative grid
        s.set_voxels(coords, vox.inverse, torch.cat(parts, dim=1).float())
        return s
