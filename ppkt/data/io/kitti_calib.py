"""KITTI calibration files (``calib/<id>.txt`` of the object benchmark, ``calib.txt`` of odometry sequences):
``KEY: v1 v2 …`` lines, validated, and the camera model they imply.

A KITTI projection matrix ``P`` (3×4, rectified camera ``c``) maps a point of the rectified reference frame
(camera 0) to camera ``c``'s pixels: ``pixel ~ P · x``. It is ``K · [I | t]``: the pinhole matrix ``K =
P[:, :3]`` and the offset ``t = K⁻¹ · P[:, 3]`` of camera ``c`` from camera 0 (≈ 6 cm along x for the left
colour camera ``P2``). :func:`camera_of_projection` splits it so the offset can be folded into the
LiDAR-to-camera transform: ``K · ([I | t] · R0_rect · Tr_velo_to_cam · x)`` =
``P2 · R0_rect · Tr_velo_to_cam · x``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppkt.data.io.files import not_a_file
from ppkt.errors import DataError
from ppkt.geometry.rigid import check_rigid


def read_kitti_calib(path: Path, keys: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """The matrices ``keys`` (name → shape, e.g. ``{"P2": (3, 4)}``) of a KITTI calibration file, float64.

    :class:`DataError` naming the file on a missing file, a missing key, a wrong number of values, text that
    is not numbers, or non-finite values. Other keys are ignored.
    """
    problem = not_a_file(path, "calibration file")
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable calibration file ({e})") from e
    found: dict[str, str] = {}
    for line in lines:
        if ":" in line:
            key, text = line.split(":", 1)
            found[key.strip()] = text
    out: dict[str, np.ndarray] = {}
    for key, shape in keys.items():
        if key not in found:
            raise DataError(f"{path}: calibration has no {key!r} line (found {sorted(found)})")
        try:
            values = np.array([float(v) for v in found[key].split()], dtype=np.float64)
        except ValueError as e:
            raise DataError(f"{path}: calibration {key!r} is not a list of numbers ({e})") from e
        if values.size != shape[0] * shape[1]:
            raise DataError(
                f"{path}: calibration {key!r} has {values.size} values, expected {shape[0] * shape[1]} "
                f"({shape[0]}x{shape[1]})"
            )
        if not np.all(np.isfinite(values)):
            raise DataError(f"{path}: calibration {key!r} contains non-finite values")
        out[key] = values.reshape(shape)
    return out


def homogeneous(M: np.ndarray) -> np.ndarray:
    """A 3×3 rotation or 3×4 ``[R | t]`` as a 4×4 homogeneous transform."""
    T = np.eye(4)
    T[: M.shape[0], : M.shape[1]] = M
    return T


def rigid_calib(M: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``M`` (3×3 or 3×4) as a 4×4 rigid transform; :class:`DataError` naming the file and key if not."""
    T = homogeneous(M)
    why = check_rigid(T)
    if why is not None:
        raise DataError(f"{path}: calibration {key!r} is not a rigid transform: {why}")
    return T


def camera_of_projection(P: np.ndarray, path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(K [3, 3], offset [4, 4])`` with ``P = K · offset[:3]`` for a rectified KITTI projection matrix
    (``K`` upper triangular with ``K[2] = [0, 0, 1]``, ``offset`` a pure translation)."""
    K = P[:, :3].copy()
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9) or abs(K[1, 0]) > 1e-9:
        raise DataError(
            f"{path}: calibration {key!r} is not a rectified projection [fx s cx tx; 0 fy cy ty; 0 0 1 tz] "
            f"(got {P.tolist()})"
        )
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(
            f"{path}: calibration {key!r} has non-positive focal lengths (fx={K[0, 0]}, fy={K[1, 1]})"
        )
    offset = np.eye(4)
    offset[:3, 3] = np.linalg.solve(K, P[:, 3])
    return K, offset
