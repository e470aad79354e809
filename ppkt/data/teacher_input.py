"""What the frozen 2D teacher sees of an RGB-D frame (``data.teacher_input``).

* ``rgb`` — the colour image (PPKT, SLidR, ScaLR).
* ``hha`` — the frame's depth as an image (Gupta et al., ECCV 2014, "Learning rich features from RGB-D
  images"): three channels an ImageNet network reads like colours, each invariant to a horizontal flip —
  **H**\\ orizontal disparity ``min(1, 0.5 m / depth)``, **H**\\ eight above the frame's lowest surface
  (the 1st percentile of its points along the world up axis, ÷ 3 m, clipped to [0, 1]) and the **A**\\ ngle
  between the surface normal and the up axis (0–180° → [0, 1]). Normals come from central differences of the
  back-projected depth; a pixel without valid depth (or without a valid neighbour pair) is 0 in every
  channel. The up axis is ``data.up_axis`` of the world frame of the poses, pointing up.
* ``gravity`` — HHA without its one viewpoint-dependent channel: the disparity gives way to the height at
  a finer scale (÷ 1 m), then the height (÷ 3 m) and the angle as in ``hha``. Every channel is measured
  along gravity from the frame's lowest surface, not from where the camera stood. Measured on the embedded
  demo it did not make the student less view-dependent (scene view consistency 0.82 vs HHA's 0.85; RGB's
  0.95), and its transfer gains were within one run's spread of HHA's (README, "Transfer variants").
  A curvature channel was tried in place of the disparity and dropped: on depth
  with centimetre noise it measured the noise, which grows with the distance.
* ``rgb+hha`` — both: the teacher runs on each and its feature maps are concatenated per layer
  (:class:`~ppkt.models.teachers.StackedTeacher`), so the student learns what either holds.

The teacher's image of a frame is ``[3·k, H, W]`` in ``[0, 1]``, the ``k`` parts (:func:`input_parts`)
stacked along the channels; every image transform (crop, resize, flip) treats the channels alike. The 3D
student's point colours are always the frame's RGB. LiDAR scans have no depth image: only ``rgb``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ppkt.data.types import Frame

#: the values of ``data.teacher_input``
TEACHER_INPUTS: tuple[str, ...] = ("rgb", "hha", "gravity", "rgb+hha")

#: HHA's scales: disparity 1 at this depth (m) and nearer; height 1 at this height (m) and above
HHA_NEAR = 0.5
HHA_HEIGHT = 3.0
#: ``gravity``'s fine height scale: its first channel is 1 at this height (m) and above
GRAVITY_FINE_HEIGHT = 1.0


def input_parts(teacher_input: str) -> list[str]:
    """The images the teacher sees, in channel order: ``"rgb+hha"`` → ``["rgb", "hha"]``."""
    if teacher_input not in TEACHER_INPUTS:
        raise ValueError(f"teacher input must be one of {list(TEACHER_INPUTS)}, got {teacher_input!r}")
    return teacher_input.split("+")


def hha_image(
    depth: np.ndarray,
    K: np.ndarray,
    pose: np.ndarray,
    up_axis: int = 2,
    first: Literal["disparity", "height"] = "disparity",
) -> Tensor:
    """``[3, H, W]`` float32 HHA encoding of a depth image ``[H, W]`` (metres, ≤ 0 or non-finite = invalid)
    with intrinsics ``K`` and camera-to-world ``pose`` (see the module docstring); ``first="height"``
    puts the height at the finer scale in the first channel instead of the disparity (``gravity``)."""
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    d = np.where(valid, d, 0.0)
    H, W = d.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], axis=-1)
    du = np.zeros_like(cam)
    dv = np.zeros_like(cam)
    du[:, 1:-1] = cam[:, 2:] - cam[:, :-2]
    dv[1:-1] = cam[2:] - cam[:-2]
    ok = valid.copy()
    ok[:, 1:-1] &= valid[:, 2:] & valid[:, :-2]
    ok[1:-1] &= valid[2:] & valid[:-2]
    ok[:, [0, -1]] = False
    ok[[0, -1], :] = False
    normal = np.cross(du, dv)
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    ok &= length[..., 0] > 0
    normal = normal / np.maximum(length, 1e-12)
    normal *= np.where((normal * cam).sum(-1, keepdims=True) > 0, -1.0, 1.0)  # towards the camera
    R, t = pose[:3, :3], pose[:3, 3]
    up_normal = normal @ R[up_axis]  # the up component of the world-frame normal
    height = cam @ R[up_axis] + t[up_axis]
    floor = np.percentile(height[valid], 1) if valid.any() else 0.0
    above = height - floor
    if first == "height":
        lead = np.clip(above / GRAVITY_FINE_HEIGHT, 0.0, 1.0)
    else:
        lead = np.minimum(1.0, HHA_NEAR / np.maximum(d, 1e-9))
    out = np.stack(
        [
            lead,
            np.clip(above / HHA_HEIGHT, 0.0, 1.0),
            np.degrees(np.arccos(np.clip(up_normal, -1.0, 1.0))) / 180.0,
        ]
    )
    out[:, ~valid] = 0.0
    out[2, ~ok] = 0.0
    return torch.from_numpy(out.astype(np.float32))


def teacher_image(frame: Frame, teacher_input: str = "rgb", up_axis: int = 2, content: bool = True) -> Tensor:
    """``[3·k, H, W]`` float32 in ``[0, 1]``: the teacher's image of ``frame`` (see the module docstring).
    ``content=False``: zeros of that shape — for loaders whose teacher maps come from the feature cache and
    whose transforms read no pixel (no superpixels): there only the image's size moves the pairing and the
    crop of the cached maps, and computing the image (HHA: ~30 ms a frame) would be wasted."""
    if not content:
        H, W = frame.depth.shape
        return torch.zeros(3 * len(input_parts(teacher_input)), H, W)
    parts = []
    for part in input_parts(teacher_input):
        if part == "rgb":
            parts.append(torch.from_numpy(frame.color).permute(2, 0, 1).float() / 255.0)
        else:
            first: Literal["disparity", "height"] = "height" if part == "gravity" else "disparity"
            parts.append(hha_image(frame.depth, frame.K, frame.pose, up_axis, first))
    return torch.cat(parts)
