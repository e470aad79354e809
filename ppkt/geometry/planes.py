"""The dominant planes of a point cloud (RANSAC): floors, walls, table tops — label-free.

Indoor scans are mostly a few large planes (in the embedded rooms floor and walls are 92 % of the points),
so pairs drawn uniformly over voxels teach the student mostly planes. :func:`plane_mask` finds up to
``max_planes`` planes one after the other (each the plane through three random points with the most
points within ``threshold``, kept if it holds at least ``min_fraction`` of the cloud; its points are removed
before the next search), the way SegContrast removes the ground before it clusters a LiDAR scan.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["plane_mask"]


def plane_mask(
    points: Tensor,
    *,
    threshold: float,
    max_planes: int = 4,
    min_fraction: float = 0.05,
    hypotheses: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``[N]`` bool: which of ``points [N, 3]`` lie on one of the cloud's dominant planes (see the module
    docstring). Deterministic for a given ``generator`` state."""
    n = points.shape[0]
    on_plane = torch.zeros(n, dtype=torch.bool, device=points.device)
    if n < 3 or max_planes < 1:
        return on_plane
    x = points.float()
    need = max(3, int(min_fraction * n))
    for _ in range(max_planes):
        rest = torch.nonzero(~on_plane).squeeze(1)
        if rest.numel() < need:
            break
        pick = torch.randint(rest.numel(), (hypotheses, 3), generator=generator, device=points.device)
        a, b, c = (x[rest[pick[:, k]]] for k in range(3))
        normal = torch.linalg.cross(b - a, c - a)
        norm = normal.norm(dim=1)
        ok = norm > 1e-9
        if not ok.any():
            break
        normal, a = normal[ok] / norm[ok, None], a[ok]
        dist = ((x[rest][None] - a[:, None]) * normal[:, None]).sum(-1).abs()  # [H, R]
        inliers = dist < threshold
        count = inliers.sum(1)
        best = int(count.argmax())
        if int(count[best]) < need:
            break
        on_plane[rest[inliers[best]]] = True
    return on_plane
