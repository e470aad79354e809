"""Pairing: from an RGB-D :class:`~ppkt.data.types.Frame` to a :class:`~ppkt.data.sample.PairedSample`
(back-projection: every valid depth pixel becomes a point paired with its own pixel)."""

from __future__ import annotations

import torch

from ppkt.data.sample import PairedSample
from ppkt.data.types import Frame
from ppkt.geometry import backproject_depth, float32_shift


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
