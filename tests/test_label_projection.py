"""Per-pixel labels of an RGB-D frame from a labelled cloud (ScanNet's mesh vertices), the depth as the
visibility test."""

from __future__ import annotations

import numpy as np
import pytest

from ppkt.data.label_projection import project_cloud_labels
from ppkt.data.types import FusedScene

K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])  # 64 x 48 image, centre (31.5, 23.5)


def _cloud(xyz: list[list[float]], label: list[int]) -> FusedScene:
    pts = np.asarray(xyz, dtype=np.float32)
    return FusedScene("s", pts, np.zeros_like(pts), np.asarray(label, dtype=np.int64), 4)


def _pixel(x: float, y: float, z: float) -> tuple[int, int]:
    """(row, col) of a camera-frame point under K."""
    return round(50.0 * y / z + 23.5), round(50.0 * x / z + 31.5)


def test_points_label_the_pixels_where_the_frame_measured_them() -> None:
    depth = np.full((48, 64), 2.0, dtype=np.float32)
    depth[:, :8] = 0.0  # invalid depth: labels nothing
    pts = [
        [0.0, 0.0, 2.0],  # on the measured surface: labels its pixel
        [0.4, 0.2, 2.03],  # within the 5 cm tolerance
        [-0.4, 0.0, 3.0],  # behind the measured surface (hidden): nothing
        [0.2, -0.2, 1.5],  # in front of it (the frame saw something farther): nothing
        [-1.8, 0.0, 2.0],  # lands where depth is invalid: nothing
        [5.0, 0.0, 2.0],  # outside the image: nothing
        [0.0, 0.0, -2.0],  # behind the camera: nothing
        [0.0, 0.4, 2.0],  # unlabelled point (0): nothing
    ]
    out = project_cloud_labels(_cloud(pts, [1, 2, 3, 3, 3, 3, 3, 0]), np.eye(4), K, depth, tolerance=0.05)
    assert out.shape == (48, 64) and out.dtype == np.int64
    assert out[_pixel(0.0, 0.0, 2.0)] == 1 and out[_pixel(0.4, 0.2, 2.03)] == 2
    assert np.count_nonzero(out) == 2


def test_the_nearest_of_two_points_in_one_pixel_wins_and_the_pose_is_applied() -> None:
    depth = np.full((48, 64), 2.0, dtype=np.float32)
    pose = np.eye(4)
    pose[:3, 3] = [1.0, -2.0, 0.5]  # camera-to-world: the camera sits at (1, -2, 0.5), axes aligned
    world = np.array([[0.11, 0.07, 1.0]]) * [[2.02], [1.99]] + pose[:3, 3]  # one ray, both within tolerance
    out = project_cloud_labels(_cloud(world.tolist(), [2, 1]), pose, K, depth, tolerance=0.05)
    assert out[_pixel(0.22, 0.14, 2.0)] == 1 and np.count_nonzero(out) == 1


def test_no_labelled_points_and_bad_tolerance() -> None:
    depth = np.full((48, 64), 2.0, dtype=np.float32)
    assert not project_cloud_labels(_cloud([[0, 0, 2]], [0]), np.eye(4), K, depth).any()
    with pytest.raises(ValueError, match="tolerance"):
        project_cloud_labels(_cloud([[0, 0, 2]], [1]), np.eye(4), K, depth, tolerance=-1.0)
