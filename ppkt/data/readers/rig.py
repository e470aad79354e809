"""The generic LiDAR + cameras rig folder (``data.layout=rig``): users' own sensors, the synthetic LiDAR data.

::

    <root>/dataset.json                 optional, as in the RGB-D folder layout: class names
    <root>/rig.json                     the cameras of every scene (a scene may override it with its own)
    <root>/<scene>/points/<frame>.bin | .npy | .ply
    <root>/<scene>/images/<cam>/<frame>.png | .jpg
    <root>/<scene>/labels/<frame>.npy   optional: one integer class per point, 0 = unlabelled
    <root>/<scene>/poses.txt            optional: line i = frame i's LiDAR-to-world, 12 (3x4) or 16 numbers

``rig.json``::

    {"cameras": {"<cam>": {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                           "lidar_to_camera": [[...4x4...]],      # x_cam = T · x_lidar (OpenCV camera)
                           "image_size": [H, W]}},               # optional: checked against the images
     "points": {"columns": ["x", "y", "z", "intensity"]}}         # optional: the float32 columns of .bin

A root that itself holds ``points/`` is one scene. Frames are the point files' names, naturally sorted;
cameras keep the order of ``rig.json``. ``.npy`` points are ``[N, C]`` with the ``columns`` of ``rig.json``
(or just x, y, z); ``.ply`` points have vertex ``x, y, z`` and optionally ``intensity``. Intensity is kept
as stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppkt.data.io.files import natural_key
from ppkt.data.io.images import read_color
from ppkt.data.io.matrices import read_pose_lines
from ppkt.data.io.points import (
    POINT_SUFFIXES,
    read_bin_points,
    read_npy_points,
    read_ply_points,
    read_point_labels,
)
from ppkt.data.readers.scan_base import ScanReader
from ppkt.data.types import Scan
from ppkt.errors import DataError
from ppkt.geometry.rigid import check_rigid

RIG_FILE = "rig.json"
DEFAULT_COLUMNS = ("x", "y", "z", "intensity")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class RigCamera:
    name: str
    K: np.ndarray  # [3, 3]
    lidar_to_camera: np.ndarray  # [4, 4]
    image_size: tuple[int, int] | None


@dataclass(frozen=True)
class Rig:
    """A parsed, validated ``rig.json``."""

    path: Path
    cameras: tuple[RigCamera, ...]
    columns: tuple[str, ...]


def _matrix(value: object, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        M = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where} is not a numeric matrix ({e})") from e
    if M.shape != shape or not np.all(np.isfinite(M)):
        raise DataError(f"{where} must be a finite {shape[0]}x{shape[1]} matrix, got {np.shape(M)}")
    return M


def read_rig(path: Path) -> Rig:
    """Parse and validate a ``rig.json``; :class:`DataError` names the file and the entry."""
    if not path.is_file():
        raise DataError(f"{path}: missing rig file (camera intrinsics and LiDAR-to-camera transforms)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: garbled rig file ({e})") from e
    cams = doc.get("cameras") if isinstance(doc, dict) else None
    if not isinstance(cams, dict) or not cams:
        raise DataError(f'{path}: expected {{"cameras": {{"<name>": {{"K": ..., "lidar_to_camera": ...}}}}}}')
    cameras = []
    for name, cam in cams.items():
        where = f"{path}: camera {name!r}"
        if not isinstance(cam, dict) or "K" not in cam or "lidar_to_camera" not in cam:
            raise DataError(f"{where} needs 'K' (3x3) and 'lidar_to_camera' (4x4)")
        K = _matrix(cam["K"], (3, 3), f"{where} 'K'")
        if (
            K[0, 0] <= 0
            or K[1, 1] <= 0
            or not np.allclose([K[1, 0], K[2, 0], K[2, 1], K[2, 2]], [0, 0, 0, 1])
        ):
            raise DataError(f"{where} 'K' must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
        T = _matrix(cam["lidar_to_camera"], (4, 4), f"{where} 'lidar_to_camera'")
        why = check_rigid(T)
        if why is not None:
            raise DataError(f"{where} 'lidar_to_camera' is not a rigid transform: {why}")
        size = cam.get("image_size")
        if size is not None and (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(s, int) and s > 0 for s in size)
        ):
            raise DataError(f"{where} 'image_size' must be [H, W] positive integers, got {size!r}")
        cameras.append(RigCamera(str(name), K, T, None if size is None else (size[0], size[1])))
    points = doc.get("points") or {}
    columns = tuple(points.get("columns", DEFAULT_COLUMNS)) if isinstance(points, dict) else ()
    if not all(isinstance(c, str) for c in columns) or columns[:3] != ("x", "y", "z"):
        raise DataError(f"{path}: points.columns must start with 'x', 'y', 'z', got {list(columns)}")
    return Rig(path, tuple(cameras), columns)


def write_rig(path: Path, cameras: Sequence[RigCamera], columns: Sequence[str] = DEFAULT_COLUMNS) -> Path:
    """Write the ``rig.json`` :func:`read_rig` reads back (for writers of the rig layout, such as a
    synthetic LiDAR generator); validated by reading it back."""
    doc = {
        "cameras": {
            c.name: {
                "K": np.asarray(c.K, dtype=np.float64).tolist(),
                "lidar_to_camera": np.asarray(c.lidar_to_camera, dtype=np.float64).tolist(),
                **(
                    {}
                    if c.image_size is None
                    else {"image_size": [int(c.image_size[0]), int(c.image_size[1])]}
                ),
            }
            for c in cameras
        },
        "points": {"columns": list(columns)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    read_rig(path)
    return path


class RigScene(ScanReader):
    """One scene folder of the rig layout (module docstring)."""

    def __init__(self, root: str | Path, rig: Rig) -> None:
        self.root = Path(root)
        self.scene = self.root.name
        self.rig = rig
        self.cameras = [c.name for c in rig.cameras]
        self._points: dict[str, Path] = {}
        for path in sorted((self.root / "points").iterdir()):
            if path.suffix in POINT_SUFFIXES and not path.is_dir():
                if path.stem in self._points:
                    raise DataError(
                        f"{path}: frame {path.stem!r} has two point files ({self._points[path.stem].name})"
                    )
                self._points[path.stem] = path
        self.frames = sorted(self._points, key=natural_key)
        if not self.frames:
            raise DataError(f"{self.root / 'points'}: no point files ({', '.join(POINT_SUFFIXES)})")
        self._poses: np.ndarray | None = None

    def image_path(self, camera: str, name: str) -> Path:
        """The image of ``camera`` for frame ``name`` (the ``.png`` path when none exists: errors name it)."""
        folder = self.root / "images" / camera
        for suffix in IMAGE_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
        return folder / f"{name}.png"

    def label_path(self, name: str) -> Path | None:
        folder = self.root / "labels"
        return folder / f"{name}.npy" if folder.is_dir() else None

    def frame_files(self, name: str) -> list[Path]:
        paths = [
            self._points[name],
            *(self.image_path(c.name, name) for c in self.rig.cameras),
            self.rig.path,
        ]
        extra = [self.label_path(name), self.root / "poses.txt"]
        return paths + [p for p in extra if p is not None and p.is_file()]

    def describe(self) -> dict[str, object]:
        return {
            "reader": "rig",
            "cameras": [c.name for c in self.rig.cameras],
            "columns": list(self.rig.columns),
        }

    def _read_points(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        columns = self.rig.columns
        if path.suffix == ".ply":
            return read_ply_points(path)
        table = read_bin_points(path, len(columns)) if path.suffix == ".bin" else read_npy_points(path)
        if table.shape[1] == 3:
            columns = ("x", "y", "z")
        elif table.shape[1] != len(columns):
            raise DataError(f"{path}: {table.shape[1]} columns, {self.rig.path} says {list(columns)}")
        xyz = np.ascontiguousarray(table[:, :3])
        if "intensity" not in columns:
            return xyz, None
        return xyz, np.ascontiguousarray(table[:, columns.index("intensity")])

    def _pose(self, name: str) -> np.ndarray | None:
        path = self.root / "poses.txt"
        if not path.is_file():
            return None
        if self._poses is None:
            self._poses = read_pose_lines(path)
            if len(self._poses) != len(self.frames):
                raise DataError(
                    f"{path}: {len(self._poses)} poses for {len(self.frames)} frames (one line per frame)"
                )
        return self._poses[self.frames.index(name)]

    def _label(self, name: str, count: int) -> np.ndarray | None:
        path = self.label_path(name)
        if path is None:
            return None
        label = read_point_labels(path, "<i8", count).astype(np.int64)
        if label.min() < 0:
            raise DataError(f"{path}: negative label {int(label.min())} (0 = unlabelled, classes from 1)")
        return label

    def _read_scan(self, name: str) -> Scan:
        points_path = self._points[name]
        points, intensity = self._read_points(points_path)
        image_paths = [self.image_path(c.name, name) for c in self.rig.cameras]
        images = [read_color(p) for p in image_paths]
        for cam, image, path in zip(self.rig.cameras, images, image_paths):
            if cam.image_size is not None and image.shape[:2] != cam.image_size:
                raise DataError(
                    f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW), {self.rig.path} says camera "
                    f"{cam.name!r} is {cam.image_size[0]}x{cam.image_size[1]}"
                )
        return Scan(
            scene=self.scene,
            name=name,
            points=points,
            intensity=intensity,
            images=images,
            cameras=[c.name for c in self.rig.cameras],
            K=[c.K.copy() for c in self.rig.cameras],
            lidar_to_camera=[c.lidar_to_camera.copy() for c in self.rig.cameras],
            pose=self._pose(name),
            label=self._label(name, points.shape[0]),
            points_path=points_path,
            image_paths=image_paths,
            label_path=self.label_path(name),
            calib_path=self.rig.path,
        )


def open_rig(root: str | Path) -> list[RigScene]:
    """The scenes of a rig root (sub-folders with ``points/``), or the one scene ``root`` is."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    if (root / "points").is_dir():
        folders = [root]
    else:
        folders = sorted(
            (d for d in root.iterdir() if (d / "points").is_dir()), key=lambda d: natural_key(d.name)
        )
    if not folders:
        raise DataError(f"{root}: no rig scene folders found (no folder holds a points/ folder)")
    shared = read_rig(root / RIG_FILE) if (root / RIG_FILE).is_file() else None
    scenes = []
    for folder in folders:
        own = folder / RIG_FILE
        if own.is_file() and folder != root:
            rig = read_rig(own)
        elif shared is not None:
            rig = shared
        else:
            raise DataError(
                f"{root / RIG_FILE}: missing rig file (camera intrinsics and LiDAR-to-camera transforms)"
            )
        scenes.append(RigScene(folder, rig))
    return scenes
