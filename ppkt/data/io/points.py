"""LiDAR point files and per-point label files, with errors naming the file.

* ``.bin``: raw little-endian float32 records of ``width`` columns (KITTI: x, y, z, reflectance; nuScenes:
  x, y, z, intensity, ring) — a file whose size is not a multiple of ``4 · width`` bytes has another width
  or dtype, or is truncated;
* ``.npy``: a float ``[N, C]`` array, ``C ≥ 3``;
* ``.ply``: the vertex properties ``x, y, z`` and optionally ``intensity`` (or ``reflectance``/``remission``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppkt.data.io.files import not_a_file
from ppkt.data.io.ply import read_ply_vertices
from ppkt.errors import DataError

#: file suffixes :func:`read_point_file` reads
POINT_SUFFIXES = (".bin", ".npy", ".ply")


def _check_file(path: Path, what: str) -> None:
    problem = not_a_file(path, what)
    if problem is not None:
        raise DataError(f"{path}: {problem}")


def _finite_points(path: Path, table: np.ndarray) -> np.ndarray:
    if table.shape[0] == 0:
        raise DataError(f"{path}: point file holds no points")
    bad = ~np.all(np.isfinite(table[:, :3]), axis=1)
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} of {table.shape[0]} points have non-finite coordinates")
    return table


def read_bin_points(path: Path, width: int) -> np.ndarray:
    """float32 ``[N, width]`` records of a raw ``.bin`` point file."""
    _check_file(path, "point file")
    size = path.stat().st_size
    if size % (4 * width) != 0:
        raise DataError(
            f"{path}: size {size} bytes is not a multiple of {4 * width} (float32 × {width} columns): wrong "
            "point dtype or width, or a truncated file"
        )
    try:
        table = np.fromfile(path, dtype="<f4").reshape(-1, width)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable point file ({e})") from e
    return _finite_points(path, table.astype(np.float32, copy=False))


def read_npy_points(path: Path) -> np.ndarray:
    """float32 ``[N, C]`` (``C ≥ 3``) of a ``.npy`` point file."""
    _check_file(path, "point file")
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable .npy point file ({e})") from e
    if table.ndim != 2 or table.shape[1] < 3 or not np.issubdtype(table.dtype, np.number):
        raise DataError(
            f"{path}: expected a numeric [N, >=3] array of points, got {table.dtype} {table.shape}"
        )
    return _finite_points(path, table.astype(np.float32))


def read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(xyz [N, 3] float32, intensity [N] float32 or None)`` of a ``.ply`` point file."""
    vertices = read_ply_vertices(path)
    missing = [c for c in "xyz" if c not in vertices]
    if missing:
        raise DataError(f"{path}: PLY vertices lack {missing} (have {sorted(vertices)})")
    xyz = _finite_points(path, np.stack([vertices[c] for c in "xyz"], axis=1).astype(np.float32))
    for name in ("intensity", "reflectance", "remission"):
        if name in vertices:
            return xyz, vertices[name].astype(np.float32)
    return xyz, None


def read_point_labels(path: Path, dtype: str, count: int) -> np.ndarray:
    """The raw per-point labels of a binary label file (numpy ``dtype``, e.g. ``"<u4"`` for SemanticKITTI,
    ``"u1"`` for nuScenes-lidarseg) or a ``.npy`` array; :class:`DataError` unless there are ``count``."""
    _check_file(path, "label file")
    try:
        if path.suffix == ".npy":
            labels = np.load(path, allow_pickle=False)
        else:
            itemsize = np.dtype(dtype).itemsize
            size = path.stat().st_size
            if size % itemsize != 0:
                raise DataError(
                    f"{path}: size {size} bytes is not a multiple of {itemsize} ({np.dtype(dtype)})"
                )
            labels = np.fromfile(path, dtype=dtype)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable label file ({e})") from e
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected one integer label per point, got {labels.dtype} {labels.shape}")
    if labels.shape[0] != count:
        raise DataError(f"{path}: {labels.shape[0]} labels for {count} points")
    return labels
