"""Pairing: from what a reader returns to a :class:`~ppkt.data.sample.PairedSample`.

* :func:`frame_to_sample` — an RGB-D :class:`~ppkt.data.types.Frame` (PPKT): every valid depth pixel becomes a
  point paired with its own pixel;
* :func:`frames_to_sample` — several RGB-D frames of one scene fused (scene-level, multi-view): every fused
  point is paired with its pixel in every frame that sees it (a z-buffer test against each frame's depth);
* :func:`scan_to_sample` — a LiDAR :class:`~ppkt.data.types.Scan` (projection into every camera with the
  z-buffer visibility test of :mod:`ppkt.geometry.visibility`, and a rule for points several cameras see).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ppkt.data.sample import PairedSample
from ppkt.data.teacher_input import teacher_image
from ppkt.data.types import Frame, Scan
from ppkt.errors import DataError
from ppkt.geometry import (
    backproject_depth,
    float32_shift,
    pinhole_project,
    pixel_of,
    project_points,
    visible_points,
)
from ppkt.geometry.voxelize import first_by_priority, pack_keys


def frame_to_sample(
    frame: Frame,
    *,
    min_depth: float = 0.0,
    max_depth: float = float("inf"),
    teacher_input: str = "rgb",
    up_axis: int = 2,
    image_content: bool = True,
) -> PairedSample:
    """Back-project every valid depth pixel to a world point paired with its own pixel.

    The sample holds one image with its intrinsics and pose — the teacher's image of the frame
    (:func:`~ppkt.data.teacher_input.teacher_image`: ``teacher_input``, world up axis ``up_axis``; the points'
    colours are the RGB whatever it is; ``image_content=False``: zeros of its shape, for loaders that read the
    teacher's maps from the feature cache); ``pair_point = arange(N)`` and ``pair_uv`` is each point's pixel.
    Labels (when the frame has them) become ``class − 1`` with ``−1`` = unlabelled.
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
    image = teacher_image(frame, teacher_input, up_axis, image_content)[None]
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


#: ``multi_camera`` rules of :func:`scan_to_sample` for a point that several cameras see
MULTI_CAMERA_RULES = ("all", "nearest", "random")

#: default occlusion test of :func:`scan_to_sample` (see :mod:`ppkt.geometry.visibility`): a point farther
#: than ``nearest + OCCLUSION_TOLERANCE + OCCLUSION_RELATIVE · nearest`` metres, with ``nearest`` the
#: nearest return within ``OCCLUSION_WINDOW × OCCLUSION_WINDOW`` pixels of its own, is hidden
OCCLUSION_TOLERANCE = 0.2
OCCLUSION_RELATIVE = 0.05
OCCLUSION_WINDOW = 3


def resize_image(
    image: torch.Tensor, K: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[3, H, W]`` image and its ``K`` resized to ``size`` (pixel centres: ``u' = (u + ½)·W'/W − ½``)."""
    H, W = image.shape[-2:]
    if size == (H, W):
        return image, K
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    sx, sy = size[1] / W, size[0] / H
    A = torch.tensor([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return out.clamp(0.0, 1.0), A @ K


def scan_to_sample(
    scan: Scan,
    *,
    min_depth: float,
    multi_camera: str,
    image_size: tuple[int, int] | None = None,
    rng: torch.Generator | None = None,
    occlusion_tolerance: float = OCCLUSION_TOLERANCE,
    occlusion_relative: float = OCCLUSION_RELATIVE,
    occlusion_window: int = OCCLUSION_WINDOW,
) -> PairedSample:
    """Project a LiDAR scan into its cameras and pair every visible point with its pixel.

    * **Images**: ``images [V, 3, H, W]`` in ``[0, 1]``, one per camera. Cameras of different sizes are
      resized (bilinear) to ``image_size``, or without it to the first camera's size, and their ``K`` scaled
      with them; with ``image_size`` every camera is resized to it.
    * **Visibility** (per camera, at the output size, :func:`~ppkt.geometry.visible_points`): a point pairs
      with a pixel when its depth is ``≥ min_depth``, it lies inside the image and no return within
      ``occlusion_window`` pixels of its pixel is nearer by more than ``occlusion_tolerance +
      occlusion_relative · nearest`` metres.
    * **Several cameras** (``multi_camera``): ``"all"`` keeps every camera's pair of a point; ``"nearest"``
      keeps the pair of the camera whose centre is closest to the point; ``"random"`` draws one camera for
      the whole scan (uniformly, from ``rng`` or torch's global generator, as ScaLR does) and keeps only its
      image and pairs (``V = 1``; the other cameras are not even projected).
    * **Points** stay in the LiDAR frame and all stay in the sample, paired or not (the 3D network sees the
      whole scan); ``cameras`` names each image's camera; ``poses[v]`` is camera-to-LiDAR (the inverse of
      ``lidar_to_camera[v]``), so the pairing follows the usual transforms. ``colors`` are zeros (a LiDAR
      has no colour), ``intensity`` holds the scan's intensity for the feature builder and ``labels`` are
      ``class − 1`` (``−1`` = unlabelled).

    Raises :class:`DataError` naming the file when the scan has no camera, or a camera sees no point (in
    front and inside its image, before the occlusion test: a wrong calibration).
    """
    if multi_camera not in MULTI_CAMERA_RULES:
        raise ValueError(f"multi_camera must be one of {list(MULTI_CAMERA_RULES)}, got {multi_camera!r}")
    if not scan.cameras:
        raise DataError(
            f"{scan.points_path}: scan {scan.scene}/{scan.name} has no camera images to pair with"
        )
    first = scan.images[0].shape
    size = (int(image_size[0]), int(image_size[1])) if image_size is not None else (first[0], first[1])
    views = list(range(len(scan.cameras)))
    if multi_camera == "random":  # one camera for the whole scan: the others are not even projected
        views = [int(torch.randint(len(views), (), generator=rng))]
    points = torch.from_numpy(scan.points).to(torch.float64)
    images, intrinsics, poses, pair_point, pair_image, pair_uv, distance = [], [], [], [], [], [], []
    for v, c in enumerate(views):
        name = scan.cameras[c]
        image = torch.from_numpy(scan.images[c]).permute(2, 0, 1).float() / 255.0
        image, K = resize_image(image, torch.from_numpy(scan.K[c]).to(torch.float64), size)
        T = torch.from_numpy(scan.lidar_to_camera[c]).to(torch.float64)
        cam = points @ T[:3, :3].T + T[:3, 3]
        uv, in_front = pinhole_project(cam, K, min_depth)
        if not bool((in_front & pixel_of(uv, size)[1]).any()):
            image_path = scan.image_paths[c] if scan.image_paths else f"camera {name}"
            raise DataError(
                f"{image_path}: camera {name} sees no point of scan {scan.points_path} (none in front of it "
                f"and inside its image): wrong calibration {scan.calib_path or ''}?"
            )
        uv, visible = visible_points(
            cam,
            K,
            size,
            min_depth=min_depth,
            tolerance=occlusion_tolerance,
            relative_tolerance=occlusion_relative,
            window=occlusion_window,
        )
        idx = visible.nonzero().squeeze(1)
        images.append(image)
        intrinsics.append(K)
        poses.append(torch.linalg.inv(T))
        pair_point.append(idx)
        pair_image.append(torch.full_like(idx, v))
        pair_uv.append(uv[idx].float())
        distance.append(cam[idx].norm(dim=1))
    point, image_of, uv_all, dist = (torch.cat(x) for x in (pair_point, pair_image, pair_uv, distance))
    if multi_camera == "nearest" and point.numel():
        uniq, group = torch.unique(point, return_inverse=True)
        keep = first_by_priority(group, dist, uniq.shape[0])
        point, image_of, uv_all = point[keep], image_of[keep], uv_all[keep]
    labels = None if scan.label is None else torch.from_numpy(scan.label).long() - 1
    intensity = None if scan.intensity is None else torch.from_numpy(scan.intensity).float()
    return PairedSample(
        points=torch.from_numpy(scan.points).float(),
        colors=torch.zeros(points.shape[0], 3),
        intensity=intensity,
        labels=labels,
        images=torch.stack(images),
        intrinsics=torch.stack(intrinsics),
        poses=torch.stack(poses),
        pair_point=point,
        pair_image=image_of,
        pair_uv=uv_all,
        name=f"{scan.scene}/{scan.name}",
        cameras=[scan.cameras[c] for c in views],
    )


def _voxel_mean(xyz: Tensor, rgb: Tensor, voxel_size: float) -> tuple[Tensor, Tensor]:
    """One point per ``voxel_size`` voxel: the mean position and colour of its points."""
    _, inverse = torch.unique(pack_keys(torch.floor(xyz / voxel_size).long()), return_inverse=True)
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
    teacher_input: str = "rgb",
    up_axis: int = 2,
    image_content: bool = True,
) -> PairedSample:
    """Fuse several RGB-D frames of one scene and pair every fused point with its pixel in **every** frame
    that sees it (scene-level, multi-view pairing). Each frame's image is the teacher's
    (:func:`~ppkt.data.teacher_input.teacher_image`, as in :func:`frame_to_sample`, ``image_content`` too).

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
            points,
            K,
            pose,
            frames[v].shape,
            depth_image=depth,
            tolerance=depth_tolerance,
            min_depth=min_depth,
        )
        idx = proj.visible.nonzero().squeeze(1)
        pair_point.append(idx)
        pair_image.append(torch.full_like(idx, v))
        pair_uv.append(proj.uv[idx])
    images = torch.stack([teacher_image(f, teacher_input, up_axis, image_content) for f in frames])
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
