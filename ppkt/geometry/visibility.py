"""LiDAR → camera: pinhole projection and the z-buffer visibility test (pure tensor functions).

Conventions as everywhere in ppkt: OpenCV camera (x right, y down, z forward), pixel ``(u, v)`` = (column,
row), integer coordinates are pixel centres, so a point falls in pixel ``round(u), round(v)``.

The test, for one camera and points already in its frame:

1. **candidates**: points with depth ``z ≥ min_depth`` whose pixel lies inside the image;
2. **z-buffer**: every candidate writes its depth into its pixel, the nearest depth wins;
3. **window**: the buffer is min-pooled over ``window × window`` pixels centred on each pixel (``window = 1``:
   the pixel itself). A LiDAR scan is sparse in the image — returns of one surface land a few pixels
   apart — so with a per-pixel buffer a farther point between the projected returns of a nearer surface
   "shows through"; a window as wide as the returns' spacing closes those gaps (a point within
   ``window // 2`` pixels of a nearer return counts as behind it);
4. **occlusion**: a candidate is visible when its depth is at most
   ``nearest + tolerance + relative_tolerance · nearest``; otherwise it is hidden behind a nearer return
   and gets no pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pinhole_project(points_cam: Tensor, K: Tensor, min_depth: float = 1e-3) -> tuple[Tensor, Tensor]:
    """``uv [N, 2]`` pixel coordinates of ``[N, 3]`` camera-frame points and ``in_front [N]``
    (``z ≥ min_depth`` and ``z > 0``); ``uv`` is meaningless where not in front (no division by ~0 happens
    there)."""
    K = K.to(points_cam.dtype)
    z = points_cam[:, 2]
    in_front = (z >= min_depth) & (z > 0)
    zs = torch.where(in_front, z, torch.ones_like(z))
    x, y = points_cam[:, 0] / zs, points_cam[:, 1] / zs
    u = K[0, 0] * x + K[0, 1] * y + K[0, 2]
    v = K[1, 1] * y + K[1, 2]
    return torch.stack([u, v], dim=1), in_front


def pixel_of(uv: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``(flat [N], inside [N])``: the row-major index ``v·W + u`` of each point's pixel (rounded ``uv``;
    clamped into the image where outside) and whether that pixel is inside the ``(H, W)`` image."""
    H, W = image_size
    ui, vi = torch.round(uv[:, 0]).long(), torch.round(uv[:, 1]).long()
    inside = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    return (vi * W + ui).clamp(0, H * W - 1), inside


def zbuffer(flat: Tensor, depth: Tensor, image_size: tuple[int, int], window: int = 1) -> Tensor:
    """``[H, W]`` nearest depth per pixel of points at row-major pixels ``flat [M]`` with ``depth [M]``
    (``inf`` where no point lands), min-pooled over ``window × window`` pixels (odd ``window``)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of pixels >= 1, got {window}")
    H, W = image_size
    buf = torch.full((H * W,), float("inf"), dtype=depth.dtype, device=depth.device)
    buf.scatter_reduce_(0, flat, depth, reduce="amin")
    buf = buf.view(H, W)
    if window > 1:
        pooled = F.max_pool2d(-buf[None, None], kernel_size=window, stride=1, padding=window // 2)
        buf = -pooled[0, 0]
    return buf


def visible_points(
    points_cam: Tensor,
    K: Tensor,
    image_size: tuple[int, int],
    *,
    min_depth: float,
    tolerance: float,
    relative_tolerance: float = 0.0,
    window: int = 1,
) -> tuple[Tensor, Tensor]:
    """The z-buffer visibility test (module docstring) of ``[N, 3]`` camera-frame points.

    Returns ``(uv [N, 2], visible [N] bool)``: pixel coordinates and whether each point is in front
    (``z ≥ min_depth``), inside the ``(H, W)`` image and not hidden behind a nearer return.
    """
    uv, in_front = pinhole_project(points_cam, K, min_depth)
    flat, inside = pixel_of(uv, image_size)
    candidate = in_front & inside
    z = points_cam[:, 2]
    buf = zbuffer(flat[candidate], z[candidate], image_size, window).reshape(-1)
    nearest = buf[flat]
    visible = candidate & (z <= nearest + tolerance + relative_tolerance * nearest)
    return uv, visible
