"""The skeleton every LiDAR reader shares: reading a scan by index with the checks every format needs.

A reader subclasses :class:`ScanReader` (the :class:`~ppkt.data.types.ScanSource` protocol) and writes only
what is specific to its format: ``_read_scan(name)`` (the files → a :class:`~ppkt.data.types.Scan`),
``frame_files`` and ``describe``. :func:`check_scan` then checks what holds for every format: point, label
and intensity counts agree, every camera has an image, plausible pixel intrinsics and a rigid LiDAR-to-camera
transform, and the pose is rigid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppkt.data.io.matrices import check_principal_point
from ppkt.data.readers.base import IndexedReader
from ppkt.data.types import Scan
from ppkt.errors import DataError
from ppkt.geometry.rigid import check_rigid


def check_scan(scan: Scan) -> Scan:
    """The checks of every scan, whatever its format; :class:`DataError` names the file."""
    where = scan.points_path or f"scan {scan.scene}/{scan.name}"
    n = scan.points.shape[0]
    if scan.points.ndim != 2 or scan.points.shape[1] != 3 or scan.points.dtype != np.float32:
        raise DataError(
            f"{where}: points must be float32 [N, 3], got {scan.points.dtype} {scan.points.shape}"
        )
    if n == 0:
        raise DataError(f"{where}: scan holds no points")
    if scan.intensity is not None and scan.intensity.shape != (n,):
        raise DataError(f"{where}: {scan.intensity.shape[0]} intensities for {n} points")
    if scan.label is not None and scan.label.shape != (n,):
        raise DataError(f"{scan.label_path or where}: {scan.label.shape[0]} labels for {n} points")
    counts = {len(scan.cameras), len(scan.images), len(scan.K), len(scan.lidar_to_camera)}
    if len(counts) != 1:
        raise DataError(
            f"{where}: {len(scan.cameras)} cameras, {len(scan.images)} images, {len(scan.K)} intrinsics and "
            f"{len(scan.lidar_to_camera)} LiDAR-to-camera transforms: one of each per camera"
        )
    paths = scan.image_paths or [Path(f"image of camera {c}") for c in scan.cameras]
    calib = scan.calib_path or where
    for cam, image, K, T, path in zip(scan.cameras, scan.images, scan.K, scan.lidar_to_camera, paths):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(
                f"{path}: camera {cam} image must be uint8 [H, W, 3], got {image.dtype} {image.shape}"
            )
        check_principal_point(K, image.shape[:2], f"{calib} (camera {cam})", path)
        why = check_rigid(T)
        if why is not None:
            raise DataError(f"{calib}: LiDAR-to-camera transform of camera {cam} is not rigid: {why}")
    if scan.pose is not None:
        why = check_rigid(scan.pose)
        if why is not None:
            raise DataError(f"{where}: scan pose is not a rigid transform: {why}")
    return scan


class ScanReader(IndexedReader[Scan]):
    """One LiDAR sequence or scene (the :class:`~ppkt.data.types.ScanSource` protocol): ``frames`` are the
    scan names in time order; :meth:`read` raises :class:`DataError` naming the file."""

    cameras: list[str]

    def _read_scan(self, name: str) -> Scan:
        raise NotImplementedError

    def _read_checked(self, name: str) -> Scan:
        scan = check_scan(self._read_scan(name))
        if scan.cameras != self.cameras:
            raise DataError(
                f"{scan.points_path}: cameras {scan.cameras}, expected {self.cameras} for {self.scene}"
            )
        return scan
