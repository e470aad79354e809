"""KITTI raw recordings (``data.layout=kitti_raw``): the synchronised drives of the KITTI raw data.

::

    2011_09_26/                                  a date folder (the root may also be one drive, or hold dates)
      calib_cam_to_cam.txt                       P_rect_02 (3×4), R_rect_00 (3×3), …
      calib_velo_to_cam.txt                      R (3×3), T (3): LiDAR → unrectified camera 0
      2011_09_26_drive_0001_sync/                one scene per drive
        velodyne_points/data/<i>.bin             float32 x, y, z, reflectance
        image_02/data/<i>.png                    left colour camera

A point ``x`` lands at ``P_rect_02 · R_rect_00 · [R | T] · x`` (the raw devkit's formula); as for the other
KITTI layouts the camera's offset from the rectified camera 0 is folded into the LiDAR-to-camera transform
(:func:`~ppkt.data.io.kitti_calib.camera_of_projection`). Scans carry no pose (the raw data's GPS/IMU
``oxts`` are not read) and no labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppkt.data.io.files import natural_key
from ppkt.data.io.images import read_color
from ppkt.data.io.kitti_calib import camera_of_projection, read_kitti_calib, rigid_calib
from ppkt.data.readers.kitti import CAMERA, scan_names, scan_points
from ppkt.data.readers.scan_base import ScanReader
from ppkt.data.types import Scan
from ppkt.errors import DataError

VELODYNE = "velodyne_points/data"
IMAGES = "image_02/data"


class KittiRawDrive(ScanReader):
    """One ``*_sync`` drive folder of the KITTI raw data; the calibration files are in its parent."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.scene = self.root.name
        self.frames = scan_names(self.root, VELODYNE)
        self.cameras = [CAMERA]
        self.cam_to_cam = self.root.parent / "calib_cam_to_cam.txt"
        self.velo_to_cam = self.root.parent / "calib_velo_to_cam.txt"

    def frame_files(self, name: str) -> list[Path]:
        r = self.root
        return [r / VELODYNE / f"{name}.bin", r / IMAGES / f"{name}.png", self.cam_to_cam, self.velo_to_cam]

    def describe(self) -> dict[str, object]:
        return {"reader": "kitti_raw"}

    def _calibration(self) -> tuple[np.ndarray, np.ndarray]:
        """``(K, lidar_to_camera)`` of camera 2."""
        cams = read_kitti_calib(self.cam_to_cam, {"P_rect_02": (3, 4), "R_rect_00": (3, 3)})
        velo = read_kitti_calib(self.velo_to_cam, {"R": (3, 3), "T": (3, 1)})
        K, offset = camera_of_projection(cams["P_rect_02"], self.cam_to_cam, "P_rect_02")
        rect = rigid_calib(cams["R_rect_00"], self.cam_to_cam, "R_rect_00")
        velo_to_cam = rigid_calib(np.hstack([velo["R"], velo["T"]]), self.velo_to_cam, "R, T")
        return K, offset @ rect @ velo_to_cam

    def _read_scan(self, name: str) -> Scan:
        points_path, image_path = self.root / VELODYNE / f"{name}.bin", self.root / IMAGES / f"{name}.png"
        points, reflectance = scan_points(points_path)
        K, lidar_to_camera = self._calibration()
        return Scan(
            scene=self.scene,
            name=name,
            points=points,
            intensity=reflectance,
            images=[read_color(image_path)],
            cameras=[CAMERA],
            K=[K],
            lidar_to_camera=[lidar_to_camera],
            points_path=points_path,
            image_paths=[image_path],
            calib_path=self.cam_to_cam,
        )


def open_kitti_raw(root: str | Path) -> list[KittiRawDrive]:
    """The drives (folders holding ``velodyne_points/data``) of a KITTI raw root: one drive, a date folder
    or a folder of date folders, naturally sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    if (root / VELODYNE).is_dir():
        drives = [root]
    else:
        candidates = [d for d in root.iterdir() if d.is_dir()]
        candidates += [d for c in candidates for d in c.iterdir() if d.is_dir()]
        drives = sorted((d for d in candidates if (d / VELODYNE).is_dir()), key=lambda d: natural_key(d.name))
    if not drives:
        raise DataError(f"{root}: no KITTI raw drives found (no folder with {VELODYNE}/)")
    return [KittiRawDrive(d) for d in drives]
