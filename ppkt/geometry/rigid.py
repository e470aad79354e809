"""Small rigid-transform helpers."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def check_rigid(T: np.ndarray, atol: float = 1e-3) -> str | None:
    """Return why ``T`` is not a 4×4 rigid transform, or ``None`` when it is one."""
    if T.shape != (4, 4):
        return f"expected a 4x4 matrix, got shape {T.shape}"
    if not np.all(np.isfinite(T)):
        return "contains non-finite values"
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=atol):
        return f"last row is {T[3].tolist()}, expected [0, 0, 0, 1]"
    R = T[:3, :3]
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > atol:
        return f"rotation is not orthonormal (max |RᵀR − I| = {err:.3g})"
    if np.linalg.det(R) < 0:
        return "rotation has determinant −1 (a reflection)"
    return None


def rotation_about_axis(angle: float, axis: int = 2, dtype: torch.dtype = torch.float32) -> Tensor:
    """3×3 rotation by ``angle`` radians about coordinate ``axis`` (0 = x, 1 = y, 2 = z)."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    R = torch.eye(3, dtype=dtype)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def quaternion_to_matrix(q: np.ndarray | list[float]) -> np.ndarray:
    """3×3 float64 rotation of a unit quaternion ``(w, x, y, z)`` (nuScenes' order; it is normalised first).
    Raises ``ValueError`` for a quaternion that is not 4 finite numbers of non-zero norm."""
    a = np.asarray(q, dtype=np.float64)
    if a.shape != (4,) or not np.all(np.isfinite(a)) or np.linalg.norm(a) < 1e-12:
        raise ValueError(f"expected a quaternion of 4 finite numbers (w, x, y, z), not all 0, got {q!r}")
    w, x, y, z = a / np.linalg.norm(a)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
