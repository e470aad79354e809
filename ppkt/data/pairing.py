"""Pairing: from RGB-D :class:`~ppkt.data.types.Frame` s to a :class:`~ppkt.data.sample.PairedSample`.

* :func:`frame_to_sample` — one frame (PPKT): every valid depth pixel becomes a point paired with its own
  pixel.
* :func:`frames_to_sample` — several frames of one scene fused (scene-level, multi-view): every fused point
  is paired with its pixel in every frame that sees it (a z-buffer test against each frame's depth).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ppkt.data.sample import PairedSample
from ppkt.data.types import Frame
from ppkt.errors import DataError
from ppkt.geometry import backproject_depth, float32_shift, project_points


def frame_to_sample(frame: Frame, *, min_depth: float = 0.0, max_depth: float = float("inf")) -> PairedSample:
    """Back-project every valid depth pixel to a world point paired with its own pixel.

    The sample holds one image with its intrinsics and pose; ``pair_point = arange(N)`` and ``pair_uv`` is
    each point's pixel. Labels (when the frame has them) become ``class − 1`` with ``−1`` = unlabelled.
    Points far from the world origin (geo-referenced poses) are shifted by
    :func:`~ppkt.geometry.float32_shift` of the camera centre before the float32 cast (and the pose with
    them); indoor coordinates are unchanged.
    """
    depth = torch.from_numpy(frame.depth)
    K = torch.from_numpy(frame.K).to(torch.float64)
    pose = torch.from_numpy(frame.pose).to(torch.float64)
    bp = backproject_depth(depth.to(torch.float64), K, pose, min_depth=min_depth, max_depth=max_depth)
    u, v = bp.uv[:, 0], bp.uv[:, 1]
    color = torch.from_numpy(frame.color)
    image = color.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    n = bp.points_world.shape[0]
    shift = float32_shift(pose[None, :3, 3])
    camera = pose.clone()
    camera[:3, 3] -= shift.reshape(3).to(torch.float64)
    labels = None
    if frame.label is not None:
        labels = torch.from_numpy(frame.label)[v, u].long() - 1
    return PairedSample(
        points=(bp.points_world - shift).float(),
        colors=color[v, u].float() / 255.0,
        images=image,
        intrinsics=K[None].clone(),
        poses=camera[None],
        pair_point=torch.arange(n),
        pair_image=torch.zeros(n, dtype=torch.long),
        pair_uv=bp.uv.float(),
        labels=labels,
        name=f"{frame.scene}/{frame.name}",
    )


def _voxel_mean(xyz: Tensor, rgb: Tensor, voxel_size: float) -> tuple[Tensor, Tensor]:
    """One point per ``voxel_size`` voxel: the mean position and colour of its points."""
    _, inverse = torch.unique(torch.floor(xyz / voxel_size).long(), dim=0, return_inverse=True)
    n = int(inverse.max()) + 1
    count = torch.zeros(n, dtype=xyz.dtype).index_add_(0, inverse, torch.ones_like(xyz[:, 0]))[:, None]
    mean_xyz = torch.zeros(n, 3, dtype=xyz.dtype).index_add_(0, inverse, xyz) / count
    mean_rgb = torch.zeros(n, 3, dtype=rgb.dtype).index_add_(0, inverse, rgb) / count.to(rgb.dtype)
    return mean_xyz, mean_rgb


def frames_to_sample(
    frames: Sequence[Frame],
    *,
    fuse_voxel_size: float,
    depth_tolerance: float = 0.05,
    min_depth: float = 0.0,
    max_depth: float = float("inf"),
) -> PairedSample:
    """Fuse several RGB-D frames of one scene and pair every fused point with its pixel in **every** frame
    that sees it (scene-level, multi-view pairing).

    The frames are back-projected into world coordinates and voxel-averaged at ``fuse_voxel_size`` — the
    fused-scene geometry that fine-tuning sees (:func:`~ppkt.data.fusion.fuse_scene`). Each fused point is
    then projected into each frame and paired with that frame's pixel when it is visible there: in front of
    the camera, inside the image, and not behind the frame's measured depth by more than
    ``depth_tolerance`` metres (the depth image is the z-buffer, :func:`~ppkt.geometry.project_points`).
    The sample holds one image per frame (all frames of a scene share a size); ``pair_image`` says which.
    Labels are not carried (pretraining uses none). A common :func:`~ppkt.geometry.float32_shift` (of the
    first camera centre) keeps geo-referenced coordinates exact.
    """
    if not frames:
        raise ValueError("frames_to_sample: no frames")
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        names = ", ".join(f"{f.scene}/{f.name} {f.shape}" for f in frames)
        raise DataError(f"frames of one sample must share one image size: {names}")
    poses = torch.stack([torch.from_numpy(f.pose).to(torch.float64) for f in frames])
    shift = float32_shift(poses[:1, :3, 3]).reshape(3).to(torch.float64)
    poses[:, :3, 3] -= shift
    Ks = torch.stack([torch.from_numpy(f.K).to(torch.float64) for f in frames])
    depths = [torch.from_numpy(f.depth).to(torch.float64) for f in frames]
    colors = [torch.from_numpy(f.color) for f in frames]
    xyz, rgb = [], []
    for depth, K, pose, color in zip(depths, Ks, poses, colors, strict=True):
        bp = backproject_depth(depth, K, pose, min_depth=min_depth, max_depth=max_depth)
        xyz.append(bp.points_world)
        rgb.append(color[bp.uv[:, 1], bp.uv[:, 0]].to(torch.float64) / 255.0)
    points, point_rgb = _voxel_mean(torch.cat(xyz), torch.cat(rgb), fuse_voxel_size)
    pair_point, pair_image, pair_uv = [], [], []
    for v, (depth, K, pose) in enumerate(zip(depths, Ks, poses, strict=True)):
        proj = project_points(
            points, K, pose, frames[v].shape, depth_image=depth, tolerance=depth_tolerance, min_depth=min_depth
        )
        idx = proj.visible.nonzero().squeeze(1)
        pair_point.append(idx)
        pair_image.append(torch.full_like(idx, v))
        pair_uv.append(proj.uv[idx])
    images = torch.stack(colors).permute(0, 3, 1, 2).float() / 255.0
    return PairedSample(
        points=points.float(),
        colors=point_rgb.float(),
        images=images,
        intrinsics=Ks,
        poses=poses,
        pair_point=torch.cat(pair_point),
        pair_image=torch.cat(pair_image),
        pair_uv=torch.cat(pair_uv).float(),
        name=f"{frames[0].scene}/{'+'.join(f.name for f in frames)}",
    )
