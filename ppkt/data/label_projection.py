"""Per-pixel labels of an RGB-D frame from a labelled point cloud (e.g. ScanNet's annotated mesh vertices).

Real RGB-D datasets label their reconstructions, not their frames: ScanNet gives a class per mesh vertex.
:func:`project_cloud_labels` carries those labels into one frame: every labelled point is moved into the
camera (``inverse(pose)``), projected with the frame's intrinsics
(:func:`~ppkt.geometry.visibility.pinhole_project`, pixel = rounded ``uv``), and kept only where the frame
**measured** a depth that agrees with the point's depth within ``tolerance`` metres — the frame's own depth
image is the visibility test, so a point behind a wall or outside the sensor's range labels nothing.
Where several kept points land in one pixel the nearest wins (:func:`~ppkt.geometry.visibility.zbuffer`).
The result is sparse (pixels between projected vertices stay 0, unlabelled); it is exact where it is not 0.
"""

from __future__ import annotations

import numpy as np
import torch

from ppkt.data.types import FusedScene
from ppkt.geometry.visibility import pinhole_project, pixel_of, zbuffer

__all__ = ["project_cloud_labels"]


def project_cloud_labels(
    cloud: FusedScene,
    pose: np.ndarray,
    K: np.ndarray,
    depth: np.ndarray,
    tolerance: float = 0.05,
) -> np.ndarray:
    """``[H, W]`` int64 labels of a frame (camera-to-world ``pose [4, 4]``, intrinsics ``K [3, 3]``, depth
    ``[H, W]`` metres, 0 = invalid) from ``cloud``'s labelled points (label > 0) in the same world frame; 0
    where no visible labelled point lands (module docstring)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 metres, got {tolerance}")
    H, W = int(depth.shape[0]), int(depth.shape[1])
    out = torch.zeros(H * W, dtype=torch.long)
    keep = cloud.label > 0
    if not np.any(keep):
        return out.view(H, W).numpy()
    world_to_cam = np.linalg.inv(np.asarray(pose, dtype=np.float64))
    xyz = np.asarray(cloud.xyz[keep], dtype=np.float64)
    cam = torch.from_numpy(xyz @ world_to_cam[:3, :3].T + world_to_cam[:3, 3])
    uv, in_front = pinhole_project(cam, torch.from_numpy(np.asarray(K, dtype=np.float64)))
    flat, inside = pixel_of(uv, (H, W))
    measured = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float64)).reshape(-1)[flat]
    z = cam[:, 2]
    ok = in_front & inside & (measured > 0) & ((z - measured).abs() <= tolerance)
    if not bool(ok.any()):
        return out.view(H, W).numpy()
    flat, z = flat[ok], z[ok]
    labels = torch.from_numpy(np.asarray(cloud.label[keep], dtype=np.int64))[ok]
    nearest = zbuffer(flat, z, (H, W)).reshape(-1)
    winner = z <= nearest[flat]
    out[flat[winner]] = labels[winner]
    return out.view(H, W).numpy()
