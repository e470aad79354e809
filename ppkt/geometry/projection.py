"""Projection of world points into a camera with a z-buffer visibility test.

A point is *visible* when it projects inside the image, lies in front of the camera, and is not hidden
behind a nearer surface: its camera depth must be within ``tolerance`` of the z-buffer at its pixel. The
z-buffer is either a measured depth image (RGB-D) or is built from the points themselves (LiDAR + camera:
the nearest point per pixel wins). Without this test, occluded LiDAR points get paired with the pixels of
whatever occludes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ppkt.geometry.backproject import transform_points
from ppkt.geometry.visibility import pinhole_project, pixel_of, zbuffer


@dataclass
class Projection:
    """Result of :func:`project_points` for ``N`` points.

    Attributes:
        uv: ``[N, 2]`` float pixel coordinates ``(u, v)`` (integer = pixel centre); meaningless where invalid.
        depth: ``[N]`` depth of each point in the camera frame (z).
        visible: ``[N]`` bool — in front, inside the image and not occluded.
    """

    uv: Tensor
    depth: Tensor
    visible: Tensor

    @property
    def pixel(self) -> Tensor:
        """``[N, 2]`` int64 nearest pixel (rounded ``uv``)."""
        return torch.round(self.uv).long()


def project_points(
    points_world: Tensor,
    K: Tensor,
    cam_to_world: Tensor,
    image_size: tuple[int, int],
    *,
    depth_image: Tensor | None = None,
    tolerance: float = 0.05,
    relative_tolerance: float = 0.0,
    min_depth: float = 1e-3,
) -> Projection:
    """Project ``[N, 3]`` world points into one camera and test their visibility.

    Args:
        points_world: ``[N, 3]`` points.
        K: ``[3, 3]`` intrinsics.
        cam_to_world: ``[4, 4]`` camera-to-world pose (its inverse maps world → camera).
        image_size: ``(H, W)``.
        depth_image: optional ``[H, W]`` depth (0 / non-finite = no measurement). When absent, the z-buffer
            is the minimum point depth per pixel.
        tolerance: absolute depth slack in metres for the occlusion test.
        relative_tolerance: extra slack proportional to depth (e.g. 0.02 for 2 %).
        min_depth: points closer than this are behind the camera (invisible).

    LiDAR scans use :func:`~ppkt.geometry.visibility.visible_points` (points in the camera frame, a z-buffer
    window for sparse returns).
    """
    H, W = image_size
    dtype = points_world.dtype
    world_to_cam = torch.linalg.inv(cam_to_world.to(dtype))
    p = transform_points(points_world, world_to_cam)
    z = p[:, 2]
    uv, in_front = pinhole_project(p, K, min_depth)
    flat, inside = pixel_of(uv, image_size)
    inside &= in_front
    if depth_image is None:
        zbuf = zbuffer(flat[inside], z[inside], image_size).reshape(-1)
    else:
        if depth_image.shape != (H, W):
            raise ValueError(f"depth_image: expected shape {(H, W)}, got {tuple(depth_image.shape)}")
        zbuf = depth_image.to(dtype).reshape(-1).clone()
        zbuf[~torch.isfinite(zbuf) | (zbuf <= 0)] = float("nan")
    ref = zbuf[flat]
    visible = inside & torch.isfinite(ref) & (z <= ref + tolerance + relative_tolerance * ref)
    return Projection(uv=uv, depth=z, visible=visible)
