"""Back-projection of depth images to 3D points that remember their pixel.

Conventions (used everywhere in ppkt):

* camera frame: OpenCV — x right, y down, z forward (metres);
* pixel ``(u, v)`` = (column, row); integer coordinates are pixel *centres*;
* ``p_cam = d · K⁻¹ [u, v, 1]ᵀ`` and ``p_world = T · p_cam`` with ``T`` the 4×4 camera-to-world pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class BackProjection:
    """Valid depth pixels lifted to 3D.

    Attributes:
        points_cam: ``[N, 3]`` points in the camera frame.
        points_world: ``[N, 3]`` points in the world frame (equal to ``points_cam`` when no pose is given).
        uv: ``[N, 2]`` int64 pixel of each point, ``(u, v)`` = (column, row).
        batch: ``[N]`` int64 index of the image each point came from (0 for an unbatched input).
    """

    points_cam: Tensor
    points_world: Tensor
    uv: Tensor
    batch: Tensor


def _batched(t: Tensor, dims: int, name: str) -> Tensor:
    if t.dim() == dims:
        return t.unsqueeze(0)
    if t.dim() == dims + 1:
        return t
    raise ValueError(f"{name}: expected {dims} or {dims + 1} dimensions, got shape {tuple(t.shape)}")


#: far-from-origin coordinates are shifted by a multiple of this many metres before a float32 cast
FLOAT32_SHIFT_STEP = 1024.0


def float32_shift(points: Tensor) -> Tensor:
    """A ``[3]`` float64 shift to subtract from float64 ``points [N, 3]`` before casting them to float32.

    Zero when the points' mean lies within 512 m of the origin (indoor scans: their coordinates are kept
    exactly); otherwise that mean rounded to a multiple of :data:`FLOAT32_SHIFT_STEP`. Geo-referenced poses
    (UTM, ~1e6 m) would otherwise lose float32 precision to ~0.5 m, more than a voxel.
    """
    if points.shape[0] == 0:
        return torch.zeros(3, dtype=torch.float64)
    centre = points.to(torch.float64).mean(0)
    return torch.round(centre / FLOAT32_SHIFT_STEP) * FLOAT32_SHIFT_STEP


def transform_points(points: Tensor, transform: Tensor) -> Tensor:
    """Apply a 4×4 rigid transform to ``[N, 3]`` points (``R p + t``)."""
    return points @ transform[:3, :3].transpose(0, 1) + transform[:3, 3]


def backproject_depth(
    depth: Tensor,
    K: Tensor,
    pose: Tensor | None = None,
    *,
    min_depth: float = 0.0,
    max_depth: float = math.inf,
) -> BackProjection:
    """Lift every valid depth pixel to a 3D point, keeping its pixel.

    Args:
        depth: ``[H, W]`` or ``[B, H, W]`` metric depth; ``<= min_depth``, ``> max_depth`` or non-finite
            values are invalid.
        K: ``[3, 3]`` or ``[B, 3, 3]`` pinhole intrinsics.
        pose: optional ``[4, 4]`` or ``[B, 4, 4]`` camera-to-world transforms.

    Returns:
        A :class:`BackProjection`; points are ordered by (image, row, column).
    """
    d = _batched(depth, 2, "depth")
    B = d.shape[0]
    Kb = _batched(K, 2, "K").to(device=d.device)
    if Kb.shape[0] not in (1, B) or Kb.shape[1:] != (3, 3):
        raise ValueError(f"K: expected [3,3] or [{B},3,3], got {tuple(K.shape)}")
    dtype = d.dtype if d.is_floating_point() else torch.float32
    d = d.to(dtype)
    valid = torch.isfinite(d) & (d > min_depth) & (d <= max_depth)
    b, v, u = valid.nonzero(as_tuple=True)
    z = d[b, v, u]
    Kb = Kb.to(dtype).expand(B, 3, 3)
    fx, fy = Kb[b, 0, 0], Kb[b, 1, 1]
    cx, cy, skew = Kb[b, 0, 2], Kb[b, 1, 2], Kb[b, 0, 1]
    y = (v.to(dtype) - cy) / fy
    x = (u.to(dtype) - cx - skew * y) / fx
    points_cam = torch.stack([x * z, y * z, z], dim=1)
    if pose is None:
        points_world = points_cam
    else:
        Tb = _batched(pose, 2, "pose").to(device=d.device, dtype=dtype)
        if Tb.shape[0] not in (1, B) or Tb.shape[1:] != (4, 4):
            raise ValueError(f"pose: expected [4,4] or [{B},4,4], got {tuple(pose.shape)}")
        Tb = Tb.expand(B, 4, 4)
        R, t = Tb[b, :3, :3], Tb[b, :3, 3]
        points_world = torch.bmm(R, points_cam.unsqueeze(2)).squeeze(2) + t
    return BackProjection(points_cam, points_world, torch.stack([u, v], dim=1), b)
