"""Voxelization: per-voxel input features, the point->voxel map, and at most one pair per voxel."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ppkt.data.transforms.base import S, Transform
from ppkt.errors import DataError
from ppkt.geometry import voxelize

#: per-voxel input features :class:`Voxelize` can build (``data.features``)
FEATURES: tuple[str, ...] = ("rgb", "ones", "height", "intensity", "elevation")
#: voxel grids :class:`Voxelize` can build (``data.voxel``)
GRIDS: tuple[str, ...] = ("cubic", "cylindrical")


class Voxelize(Transform[S]):
    """Voxelize the points and reduce the pairing to at most one (random) pair per voxel.

    Grids (``grid``): ``cubic`` — cells of ``voxel_size`` metres along x, y, z; ``cylindrical`` — cells of
    ``(ρ, φ, z)`` about the up axis through the origin (a LiDAR scan's sensor): ``voxel_size`` metres of
    radius ``ρ``, ``angle_step`` degrees of azimuth ``φ`` and ``voxel_size`` metres along the up axis (SLidR:
    0.1 m and 1°), so cells grow with the distance from the sensor as the scan's point spacing does. The
    network sees the integer cell coordinates in either case.

    Voxel coordinates are shifted so the sample's smallest is 0 (a translation: the networks are
    translation-equivariant, and the packed keys stay small).

    Features per voxel (concatenated in the given order): ``rgb`` (mean colour − ½), ``ones``, ``height``
    (mean coordinate along ``up_axis``, metres, relative to the sample's lowest point), ``intensity`` (mean
    LiDAR return intensity in ``[0, 1]``; a sample without intensities is a :class:`DataError`),
    ``elevation`` (mean coordinate along ``up_axis`` in the sample's own frame, metres — for a LiDAR scan,
    relative to the sensor).
    """

    def __init__(
        self,
        voxel_size: float,
        features: Sequence[str] = ("rgb",),
        up_axis: int = 2,
        grid: str = "cubic",
        angle_step: float = 1.0,
    ) -> None:
        bad = [f for f in features if f not in FEATURES]
        if bad or not features:
            raise ValueError(f"unknown voxel features {bad}; choose from {list(FEATURES)}")
        if grid not in GRIDS:
            raise ValueError(f"unknown voxel grid {grid!r}; choose from {list(GRIDS)}")
        if not angle_step > 0:
            raise ValueError(f"angle_step must be > 0 degrees, got {angle_step}")
        self.voxel_size = voxel_size
        self.features = tuple(features)
        self.up_axis = up_axis
        self.grid = grid
        self.angle_step = angle_step

    @property
    def num_features(self) -> int:
        return sum(3 if f == "rgb" else 1 for f in self.features)

    def grid_points(self, points: torch.Tensor) -> torch.Tensor:
        """``[N, 3]`` coordinates whose unit cells are the voxels: ``points / voxel_size`` (cubic), or
        ``(ρ / voxel_size, φ / angle_step, up / voxel_size)`` (cylindrical, ``φ`` in degrees)."""
        if self.grid == "cubic":
            return points / self.voxel_size
        a, b = [i for i in range(3) if i != self.up_axis]
        x, y, z = points[:, a].double(), points[:, b].double(), points[:, self.up_axis].double()
        rho = torch.sqrt(x * x + y * y) / self.voxel_size
        phi = torch.atan2(y, x) * (180.0 / math.pi) / self.angle_step
        return torch.stack([rho, phi, z / self.voxel_size], dim=1)

    def apply(self, s: S) -> S:
        if self.grid == "cubic":
            vox = voxelize(s.points, self.voxel_size)
        else:
            vox = voxelize(self.grid_points(s.points), 1.0)
        M = vox.coords.shape[0]
        counts = vox.counts.to(s.points.dtype).unsqueeze(1)

        def mean(x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(M, x.shape[1], dtype=x.dtype)
            return out.index_add_(0, vox.inverse, x) / counts

        up = s.points[:, self.up_axis : self.up_axis + 1]
        parts = []
        for f in self.features:
            if f == "rgb":
                parts.append(mean(s.colors.float()) - 0.5)
            elif f == "ones":
                parts.append(torch.ones(M, 1))
            elif f == "height":
                parts.append(mean(up - up.min()) if len(up) else torch.zeros(M, 1))
            elif f == "elevation":
                parts.append(mean(up.float()))
            else:
                if s.intensity is None:
                    raise DataError(
                        f"sample {s.name!r}: data.features asks for 'intensity' but the data have no "
                        "intensities (only LiDAR scans do)"
                    )
                parts.append(mean(s.intensity.float().reshape(-1, 1)))
        coords = vox.coords - vox.coords.min(dim=0).values if M else vox.coords  # non-negative grid
        s.set_voxels(coords, vox.inverse, torch.cat(parts, dim=1).float())
        return s
