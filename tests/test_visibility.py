"""LiDAR → camera projection and the z-buffer visibility test on 4-point hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppkt.geometry import pinhole_project, pixel_of, quaternion_to_matrix, visible_points, zbuffer

K = torch.tensor([[10.0, 0.0, 2.0], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
INF = float("inf")


def test_pinhole_project_with_skew_and_points_behind() -> None:
    Ks = K.clone()
    Ks[0, 1] = 1.0
    pts = torch.tensor(
        [[1.0, 1.0, 2.0], [0.0, 0.0, 1.0], [-0.5, 0.25, 0.5], [0.0, 0.0, -1.0]], dtype=torch.float64
    )
    uv, in_front = pinhole_project(pts, Ks, min_depth=0.5)
    # (1, 1, 2): x = y = 0.5 → u = 10·0.5 + 1·0.5 + 2 = 7.5, v = 10·0.5 + 2 = 7
    torch.testing.assert_close(
        uv[:3], torch.tensor([[7.5, 7.0], [2.0, 2.0], [-7.5, 7.0]]).double(), rtol=0, atol=0
    )
    assert in_front.tolist() == [True, True, True, False]  # depth 0.5 = min_depth is in front
    zero = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1e-9]], dtype=torch.float64)
    assert pinhole_project(zero, Ks, 0.0)[1].tolist() == [False, True]  # depth 0 is never in front


def test_pixel_of_rounds_to_pixel_centres() -> None:
    uv = torch.tensor([[0.4, 0.4], [3.6, 0.0], [-0.6, 1.0], [1.0, 3.4]], dtype=torch.float64)
    flat, inside = pixel_of(uv, (4, 4))
    assert inside.tolist() == [True, False, False, True]
    assert flat[inside].tolist() == [0, 3 * 4 + 1]


def test_zbuffer_keeps_the_nearest_depth_and_min_pools_over_the_window() -> None:
    flat = torch.tensor([5, 5, 6, 15])  # (u, v) = (1, 1), (1, 1), (2, 1), (3, 3) in a 4×4 image
    depth = torch.tensor([3.0, 2.0, 4.0, 1.0], dtype=torch.float64)
    buf = zbuffer(flat, depth, (4, 4))
    expected = torch.full((4, 4), INF, dtype=torch.float64)
    expected[1, 1], expected[1, 2], expected[3, 3] = 2.0, 4.0, 1.0
    assert torch.equal(buf, expected)
    pooled = zbuffer(flat, depth, (4, 4), window=3)
    assert pooled[0].tolist() == [2.0, 2.0, 2.0, 4.0]  # row 0 sees rows 0-1
    assert pooled[2].tolist() == [2.0, 2.0, 1.0, 1.0]  # (3, 3) = 1 reaches columns 2-3 of row 2
    assert pooled[3].tolist() == [INF, INF, 1.0, 1.0]
    with pytest.raises(ValueError, match="odd"):
        zbuffer(flat, depth, (4, 4), window=2)


def test_visible_points_per_pixel_and_with_a_window() -> None:
    pts = torch.tensor(
        [[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.2, 0.0, 2.0], [0.0, 0.0, -1.0], [1.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    # pixels: (2, 2) at 1 m; (2, 2) at 2 m, behind it; (3, 2) at 2 m, next to it; behind; outside (u=12)
    uv, vis = visible_points(pts, K, (4, 4), min_depth=0.1, tolerance=0.1)
    assert vis.tolist() == [True, False, True, False, False]
    torch.testing.assert_close(uv[:3], torch.tensor([[2.0, 2.0], [2.0, 2.0], [3.0, 2.0]]).double())
    _, vis3 = visible_points(pts, K, (4, 4), min_depth=0.1, tolerance=0.1, window=3)
    assert vis3.tolist() == [True, False, False, False, False]  # (3, 2) is within a pixel of the 1 m return
    # 2 m ≤ 1 + 0.5 + 0.6·1: within the tolerance, visible again
    _, loose = visible_points(pts, K, (4, 4), min_depth=0.1, tolerance=0.5, relative_tolerance=0.6, window=3)
    assert loose.tolist() == [True, True, True, False, False]
    _, near = visible_points(pts, K, (4, 4), min_depth=1.5, tolerance=0.1)
    assert near.tolist() == [False, True, True, False, False]  # the 1 m point is closer than min_depth


def test_quaternion_to_matrix() -> None:
    np.testing.assert_array_equal(quaternion_to_matrix([1.0, 0.0, 0.0, 0.0]), np.eye(3))
    np.testing.assert_array_equal(quaternion_to_matrix([2.0, 0.0, 0.0, 0.0]), np.eye(3))  # normalised first
    c = math.cos(math.pi / 4)
    np.testing.assert_allclose(
        quaternion_to_matrix([c, 0.0, 0.0, c]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15
    )
    np.testing.assert_allclose(
        quaternion_to_matrix([0.0, 1.0, 0.0, 0.0]), np.diag([1.0, -1.0, -1.0]), atol=1e-15
    )
    with pytest.raises(ValueError, match="quaternion"):
        quaternion_to_matrix([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="quaternion"):
        quaternion_to_matrix([0.0, 0.0, 0.0, 0.0])
