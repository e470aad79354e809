"""KITTI LiDAR + camera readers: the object benchmark, odometry sequences and SemanticKITTI.

* ``kitti`` (object benchmark): a root holding ``training/`` and/or ``testing/`` (each one scene), or one of
  them, with ``velodyne/<id>.bin`` (float32 x, y, z, reflectance), ``image_2/<id>.png`` and
  ``calib/<id>.txt`` (``P2``, ``R0_rect``, ``Tr_velo_to_cam``).
* ``kitti_odometry``: ``sequences/NN/{velodyne/*.bin, image_2/*.png, calib.txt (P2, Tr), poses.txt}`` (a
  root holding ``sequences/``, the ``sequences`` folder itself, or one sequence folder); poses may also be
  the odometry devkit's ``poses/NN.txt`` beside ``sequences/``. One scene per sequence.
* ``semantickitti``: the same plus ``labels/<id>.label`` (uint32: lower 16 bits the semantic id, upper 16
  the instance), mapped with the official learning map to the 19 classes
  (:mod:`~ppkt.data.protocols.semantickitti`). SemanticKITTI's own download has no images: a sequence
  without ``image_2/`` reads as scans without cameras (fine for segmentation; pretraining needs images).

The left colour camera (``P2``) is the scan's one camera, named ``image_2``. Its LiDAR-to-camera transform
folds in the rectification and the camera's offset from the reference camera 0
(:func:`~ppkt.data.io.kitti_calib.camera_of_projection`), so ``K · (lidar_to_camera · x)`` is exactly
``P2 · R0_rect · Tr_velo_to_cam · x`` (object) or ``P2 · Tr · x`` (odometry, whose ``Tr`` is already
rectified). Reflectance is stored in ``[0, 1]`` and kept as is. Odometry poses (``poses.txt``, line ``i``
= scan ``i``) are camera-0-to-world; the scan's LiDAR-to-world pose is ``Tr⁻¹ · pose · Tr``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppkt.data.io.files import natural_key
from ppkt.data.io.images import read_color
from ppkt.data.io.kitti_calib import camera_of_projection, read_kitti_calib, rigid_calib
from ppkt.data.io.matrices import read_pose_lines
from ppkt.data.io.points import read_bin_points, read_point_labels
from ppkt.data.protocols import semantickitti
from ppkt.data.readers.scan_base import ScanReader
from ppkt.data.types import Scan
from ppkt.errors import DataError

#: the camera every KITTI scan carries (the left colour camera, projection ``P2``)
CAMERA = "image_2"


def scan_names(folder: Path, velodyne: str = "velodyne") -> list[str]:
    """The ``*.bin`` scans' names in ``folder/velodyne``, naturally sorted (:class:`DataError` if none)."""
    velodyne_dir = folder / velodyne
    names = sorted((p.stem for p in velodyne_dir.glob("*.bin")), key=natural_key)
    if not names:
        raise DataError(f"{velodyne_dir}: no LiDAR scans (no *.bin file)")
    return names


def scan_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz [N, 3], reflectance [N])`` float32 of a KITTI ``.bin`` scan (float32 × 4)."""
    table = read_bin_points(path, 4)
    return np.ascontiguousarray(table[:, :3]), np.ascontiguousarray(table[:, 3])


class KittiObjectSplit(ScanReader):
    """One split folder (``training`` or ``testing``) of the KITTI object benchmark (module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.scene = self.root.name
        self.frames = scan_names(self.root)
        self.cameras = [CAMERA]

    def frame_files(self, name: str) -> list[Path]:
        r = self.root
        return [r / "velodyne" / f"{name}.bin", r / "image_2" / f"{name}.png", r / "calib" / f"{name}.txt"]

    def describe(self) -> dict[str, object]:
        return {"reader": "kitti"}

    def _read_scan(self, name: str) -> Scan:
        points_path, image_path, calib_path = self.frame_files(name)
        points, reflectance = scan_points(points_path)
        calib = read_kitti_calib(calib_path, {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)})
        K, offset = camera_of_projection(calib["P2"], calib_path, "P2")
        rect = rigid_calib(calib["R0_rect"], calib_path, "R0_rect")
        velo_to_cam = rigid_calib(calib["Tr_velo_to_cam"], calib_path, "Tr_velo_to_cam")
        return Scan(
            scene=self.scene,
            name=name,
            points=points,
            intensity=reflectance,
            images=[read_color(image_path)],
            cameras=[CAMERA],
            K=[K],
            lidar_to_camera=[offset @ rect @ velo_to_cam],
            points_path=points_path,
            image_paths=[image_path],
            calib_path=calib_path,
        )


class KittiSequence(ScanReader):
    """One sequence folder of KITTI odometry (``labels=False``) or SemanticKITTI (``labels=True``)."""

    def __init__(self, root: str | Path, labels: bool = False) -> None:
        self.root = Path(root)
        self.scene = self.root.name
        self.labels = labels
        self.frames = scan_names(self.root)
        self.has_images = (self.root / "image_2").is_dir()
        self.cameras = [CAMERA] if self.has_images else []
        self._poses: np.ndarray | None = None

    @property
    def calib_path(self) -> Path:
        return self.root / "calib.txt"

    @property
    def poses_path(self) -> Path | None:
        """``poses.txt`` of the sequence (SemanticKITTI) or ``../../poses/NN.txt`` (odometry devkit)."""
        for path in (self.root / "poses.txt", self.root.parent.parent / "poses" / f"{self.scene}.txt"):
            if path.is_file():
                return path
        return None

    def label_path(self, name: str) -> Path | None:
        folder = self.root / "labels"
        return folder / f"{name}.label" if self.labels and folder.is_dir() else None

    def frame_files(self, name: str) -> list[Path]:
        paths = [self.root / "velodyne" / f"{name}.bin"]
        if self.has_images:
            paths += [self.root / "image_2" / f"{name}.png", self.calib_path]
        poses, label = self.poses_path, self.label_path(name)
        return paths + [p for p in (poses, label) if p is not None]

    def describe(self) -> dict[str, object]:
        return {"reader": "semantickitti" if self.labels else "kitti_odometry"}

    def _calibration(self) -> tuple[np.ndarray, np.ndarray]:
        """``(K, lidar_to_camera)`` of camera 2 from ``calib.txt``."""
        calib = read_kitti_calib(self.calib_path, {"P2": (3, 4), "Tr": (3, 4)})
        K, offset = camera_of_projection(calib["P2"], self.calib_path, "P2")
        return K, offset @ rigid_calib(calib["Tr"], self.calib_path, "Tr")

    def _pose(self, name: str) -> np.ndarray | None:
        path = self.poses_path
        if path is None:
            return None
        if not self.calib_path.is_file():
            raise DataError(
                f"{self.calib_path}: missing calibration file (needed to read the poses of {path})"
            )
        if self._poses is None:
            self._poses = read_pose_lines(path)
        index = int(name) if name.isdigit() else self.frames.index(name)
        if index >= len(self._poses):
            raise DataError(f"{path}: no pose for scan {name} (the file has {len(self._poses)} lines)")
        calib = read_kitti_calib(self.calib_path, {"Tr": (3, 4)})
        velo_to_cam0 = rigid_calib(calib["Tr"], self.calib_path, "Tr")
        return np.linalg.inv(velo_to_cam0) @ self._poses[index] @ velo_to_cam0

    def _label(self, name: str, count: int) -> np.ndarray | None:
        path = self.label_path(name)
        if path is None:
            return None
        raw = read_point_labels(path, "<u4", count)
        label, unknown = semantickitti.map_labels(raw)
        if unknown.any():
            ids = sorted({int(i) for i in (raw[unknown] & 0xFFFF)})[:10]
            raise DataError(
                f"{path}: {int(unknown.sum())} labels with semantic ids {ids} unknown to SemanticKITTI"
            )
        return label

    def _read_scan(self, name: str) -> Scan:
        points_path = self.root / "velodyne" / f"{name}.bin"
        points, reflectance = scan_points(points_path)
        scan = Scan(
            scene=self.scene,
            name=name,
            points=points,
            intensity=reflectance,
            images=[],
            cameras=[],
            K=[],
            lidar_to_camera=[],
            pose=self._pose(name),
            label=self._label(name, points.shape[0]),
            points_path=points_path,
            image_paths=[],
            label_path=self.label_path(name),
        )
        if self.has_images:
            image_path = self.root / "image_2" / f"{name}.png"
            K, lidar_to_camera = self._calibration()
            scan.images, scan.cameras, scan.K = [read_color(image_path)], [CAMERA], [K]
            scan.lidar_to_camera, scan.image_paths, scan.calib_path = (
                [lidar_to_camera],
                [image_path],
                self.calib_path,
            )
        return scan


def _folders_with_scans(root: Path, candidates: list[Path], kind: str) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    if (root / "velodyne").is_dir():
        return [root]
    found = [d for d in candidates if (d / "velodyne").is_dir()]
    if not found:
        raise DataError(f"{root}: no {kind} folders found (no folder with a velodyne/ folder)")
    return sorted(found, key=lambda d: natural_key(d.name))


def open_kitti(root: str | Path) -> list[KittiObjectSplit]:
    """The splits (``training``, ``testing``) of a KITTI object root, or the one split folder ``root`` is."""
    root = Path(root)
    subdirs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    return [KittiObjectSplit(d) for d in _folders_with_scans(root, subdirs, "KITTI split")]


def open_kitti_sequences(root: str | Path, labels: bool = False) -> list[KittiSequence]:
    """The sequences of a KITTI odometry / SemanticKITTI root (holding ``sequences/``), of the ``sequences``
    folder itself, or the one sequence folder ``root`` is, naturally sorted."""
    root = Path(root)
    base = root / "sequences" if (root / "sequences").is_dir() else root
    subdirs = [d for d in base.iterdir() if d.is_dir()] if base.is_dir() else []
    return [KittiSequence(d, labels) for d in _folders_with_scans(root, subdirs, "sequence")]
