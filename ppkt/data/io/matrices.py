"""Text matrices: intrinsics and poses, validated, with errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppkt.data.io.files import not_a_file
from ppkt.errors import DataError
from ppkt.geometry.rigid import check_rigid


def _load_text_matrix(path: Path, what: str) -> np.ndarray:
    problem = not_a_file(path, f"{what} file")
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    try:
        rows = [[float(x) for x in line.split()] for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: malformed {what} (not a numeric matrix: {e})") from e
    if not rows:
        raise DataError(f"{path}: malformed {what} (empty file)")
    if len({len(row) for row in rows}) != 1:
        raise DataError(f"{path}: malformed {what} (rows of different lengths {[len(r) for r in rows]})")
    return np.array(rows, dtype=np.float64)


def read_intrinsics(path: Path) -> np.ndarray:
    """Read and validate a 3×3 (or 4×4 with the 3×3 block in the top-left) pinhole matrix."""
    K = _load_text_matrix(path, "intrinsics")
    if K.shape == (4, 4):
        K = K[:3, :3]
    if K.shape != (3, 3):
        raise DataError(f"{path}: malformed intrinsics, expected a 3x3 matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise DataError(f"{path}: malformed intrinsics, contains non-finite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(
            f"{path}: malformed intrinsics, focal lengths must be positive (fx={K[0, 0]}, fy={K[1, 1]})"
        )
    if not np.allclose([K[1, 0], K[2, 0], K[2, 1], K[2, 2]], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise DataError(
            f"{path}: malformed intrinsics, expected rows [fx s cx] [0 fy cy] [0 0 1], got {K.tolist()}"
        )
    return K


#: smallest focal length, in image sizes, of a pinhole camera: ``f = 0.05·W`` is a 169° field of view
MIN_FOCAL_FRACTION = 0.05


def check_principal_point(K: np.ndarray, hw: tuple[int, int], intrinsics: object, image: Path) -> None:
    """:class:`DataError` naming ``intrinsics`` unless ``K`` can belong to an image of size ``hw``: the
    principal point ``(cx, cy)`` lies inside the image, is not within one pixel of its corner while the
    image is 8 px or more (normalised intrinsics: ``cx = 0.5``), and the focal lengths are at least
    :data:`MIN_FOCAL_FRACTION` of the image size (a field of view under ~170°). Otherwise the intrinsics
    belong to another resolution or are normalised, and every point would silently land in the wrong place
    (normalised ones also blow the scene up to hundreds of metres: a slow, memory-hungry, useless run)."""
    H, W = hw
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    values = f"(fx={fx:g}, fy={fy:g}, cx={cx:g}, cy={cy:g})"
    fix = "multiply fx and cx by the image width and fy and cy by the image height"
    if not (0 <= cx <= W and 0 <= cy <= H):
        raise DataError(
            f"{intrinsics}: principal point ({cx}, {cy}) lies outside the {W}x{H} image {image} "
            "(intrinsics of another resolution, or normalised ones? scale them to the image size)"
        )
    if cx <= 1 and cy <= 1 and max(H, W) >= 8:
        raise DataError(
            f"{intrinsics}: intrinsics {values} look normalised (in image sizes, not pixels) for the {W}x{H} "
            f"image {image}: {fix}"
        )
    if fx < MIN_FOCAL_FRACTION * W or fy < MIN_FOCAL_FRACTION * H:
        fov = 2 * np.degrees(np.arctan(max(W / (2 * fx), H / (2 * fy))))
        raise DataError(
            f"{intrinsics}: focal lengths {values} give a {fov:.0f}° field of view over the {W}x{H} image "
            f"{image}, not a pinhole camera: normalised intrinsics? {fix}"
        )


def read_pose(path: Path) -> np.ndarray:
    """Read and validate a 4×4 rigid camera-to-world transform."""
    T = _load_text_matrix(path, "pose")
    if T.shape != (4, 4):
        raise DataError(f"{path}: pose must be a 4x4 matrix, got shape {T.shape}")
    why = check_rigid(T)
    if why is not None:
        raise DataError(f"{path}: pose is not a rigid transform: {why}")
    return T


def read_pose_lines(path: Path) -> np.ndarray:
    """``[n, 4, 4]`` float64 poses of a file with one pose per line: 12 numbers (a row-major 3×4 ``[R | t]``,
    KITTI's ``poses.txt``) or 16 (a 4×4); each must be rigid. :class:`DataError` names the file and line."""
    rows = _load_text_matrix(path, "poses")
    if rows.shape[1] not in (12, 16):
        raise DataError(f"{path}: {rows.shape[1]} numbers a line, expected 12 (3x4 poses) or 16 (4x4)")
    poses = np.tile(np.eye(4), (rows.shape[0], 1, 1))
    poses[:, : rows.shape[1] // 4] = rows.reshape(rows.shape[0], -1, 4)
    for i, T in enumerate(poses):
        why = check_rigid(T)
        if why is not None:
            raise DataError(f"{path}: line {i + 1} is not a rigid pose: {why}")
    return poses
