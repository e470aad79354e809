"""Shared data types of ppkt.data: one RGB-D frame, one LiDAR scan with its cameras, their sources, a fused
scene, cached teacher features.

They live at the bottom of the package (only numpy/torch and ppkt.errors below them), so every reader,
dataset and transform imports them without cycles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import Tensor


@dataclass
class Frame:
    """One RGB-D frame read from disk (numpy arrays, metres, camera-to-world pose)."""

    scene: str
    name: str
    color: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W] metres, 0 = invalid
    K: np.ndarray  # float64 [3, 3]
    pose: np.ndarray  # float64 [4, 4] camera-to-world
    label: np.ndarray | None = None  # int64 [H, W], 0 = unlabelled
    instance: np.ndarray | None = None  # int64 [H, W], 0 = none
    color_path: Path | None = None
    depth_path: Path | None = None
    pose_path: Path | None = None
    label_path: Path | None = None
    instance_path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the frame."""
        return (int(self.depth.shape[0]), int(self.depth.shape[1]))


@runtime_checkable
class FrameSource(Protocol):
    """One scene's frames. ``frames`` are the frame names in trajectory order; ``read(i)`` raises
    :class:`~ppkt.errors.DataError` naming the file on any problem with frame ``i``."""

    root: Path
    scene: str
    frames: list[str]

    def __len__(self) -> int: ...

    def read(self, i: int) -> Frame: ...

    def frame_files(self, name: str) -> list[Path]:
        """The files frame ``name`` is read from (cache fingerprints hash their sizes and mtimes)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-compatible description of the format and its settings (part of cache recipes)."""
        ...


@dataclass
class Scan:
    """One LiDAR sweep with the calibrated camera images taken with it (numpy arrays, metres).

    A point ``p`` (LiDAR frame) lands in camera ``c`` at pixel ``K[c] · (lidar_to_camera[c] · p)`` (divided by
    its depth); pixel ``(u, v)`` = (column, row), integer coordinates are pixel centres, the camera frame is
    OpenCV's (x right, y down, z forward).
    """

    scene: str  # sequence / scene folder name
    name: str  # frame id
    points: np.ndarray  # float32 [N, 3], metres, in the LiDAR frame
    intensity: (
        np.ndarray | None
    )  # float32 [N] (reflectance/remission; scaled to [0, 1] where the format says)
    images: list[np.ndarray]  # uint8 [H_c, W_c, 3], one per camera (sizes may differ)
    cameras: list[str]  # camera names, same order
    K: list[np.ndarray]  # float64 [3, 3] per camera (pixel units)
    # float64 [4, 4] per camera: x_cam = T @ x_lidar (rectified where the format rectifies, e.g. KITTI R0_rect
    # folded in)
    lidar_to_camera: list[np.ndarray]
    pose: np.ndarray | None = None  # float64 [4, 4] LiDAR-to-world
    label: np.ndarray | None = None  # int64 [N], 0 = unlabelled, else benchmark class id + 1 (already mapped)
    points_path: Path | None = None
    image_paths: list[Path] | None = None
    label_path: Path | None = None
    calib_path: Path | None = None  # the file the cameras' calibration was read from (named by errors)

    def __len__(self) -> int:
        return int(self.points.shape[0])


@runtime_checkable
class ScanSource(Protocol):
    """One LiDAR sequence / scene (the :class:`FrameSource` interface, reading :class:`Scan` s): ``frames``
    are the scan names in time order; ``read(i)`` raises :class:`~ppkt.errors.DataError` naming the file on
    any problem with scan ``i``."""

    root: Path
    scene: str
    frames: list[str]
    cameras: list[str]  # the camera names of every scan, in the order of its images

    def __len__(self) -> int: ...

    def read(self, i: int) -> Scan: ...

    def frame_files(self, name: str) -> list[Path]:
        """The files scan ``name`` is read from (cache fingerprints hash their sizes and mtimes)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-compatible description of the format and its settings (part of cache recipes)."""
        ...


@dataclass
class CachedFeatures:
    """The teacher's maps of the whole images of one frame (one per camera: ``V`` = 1 for RGB-D), or of ``V``
    images of one size, stacked (``[V, C_i, …]``).

    ``maps[i]``: ``[V, C_i, ceil(Hc / s_i), ceil(Wc / s_i)]`` for each image resized to ``image_size = (Hc,
    Wc)``; cell ``j`` of map ``i`` covers cache-image pixels ``[j s_i, (j + 1) s_i)`` (the UPL convention).
    ``frame_size = (H, W)`` is the original images' size, the coordinate system of a sample's ``view``.
    """

    maps: list[Tensor]
    strides: list[int]
    image_size: tuple[int, int]
    frame_size: tuple[int, int]


@dataclass
class FusedScene:
    """One scene fused into a labelled point cloud (one point per voxel).

    Attributes:
        name: scene name (the folder name).
        xyz: ``[N, 3]`` float32 world coordinates (mean of each voxel's points); a scene far from the world
            origin (geo-referenced poses) is shifted by :func:`~ppkt.geometry.float32_shift` first.
        rgb: ``[N, 3]`` float32 mean colour in ``[0, 1]``.
        label: ``[N]`` int64 class id, 0 = unlabelled.
        num_classes: number of class ids *including* 0 (ids ``0 … num_classes − 1``); a segmentation
            network predicts the ``num_classes − 1`` classes ``1 …``, as labels ``class − 1``.
        class_names: the names of ids ``0 … num_classes − 1`` when the dataset says (``dataset.json``).
    """

    name: str
    xyz: np.ndarray
    rgb: np.ndarray
    label: np.ndarray
    num_classes: int
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


@dataclass(frozen=True)
class FrameRef:
    """One frame: a scene (frame source) and the frame's position in it."""

    folder: FrameSource
    index: int

    @property
    def name(self) -> str:
        return f"{self.folder.scene}/{self.folder.frames[self.index]}"


class FeatureStore(Protocol):
    """Where cached teacher maps are read from (:class:`~ppkt.data.teacher_cache.FeatureCache`)."""

    root: Path

    def load(
        self, source: FrameSource, index: int, cameras: list[str] | None = None
    ) -> CachedFeatures | None: ...
