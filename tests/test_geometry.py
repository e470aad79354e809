"""Geometry on hand-computed 4-point cases with exact expected values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppkt.geometry import backproject_depth, check_rigid, project_points, rotation_about_axis, voxelize

K = torch.tensor([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_backproject_camera_points_and_pixels() -> None:
    depth = torch.tensor([[1.0, 0.0], [2.0, 4.0]], dtype=torch.float64)  # (u=1, v=0) is invalid
    bp = backproject_depth(depth, K)
    expected = torch.tensor([[-0.25, -0.25, 1.0], [-0.5, 0.5, 2.0], [1.0, 1.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(bp.points_cam, expected, rtol=0, atol=0)
    assert bp.uv.tolist() == [[0, 0], [0, 1], [1, 1]]
    assert bp.batch.tolist() == [0, 0, 0]


def test_backproject_world_with_pose_and_batch() -> None:
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = rotation_about_axis(math.pi / 2, axis=2, dtype=torch.float64)
    T[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    depth = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 4.0]]], dtype=torch.float64)
    bp = backproject_depth(depth, K, torch.stack([torch.eye(4, dtype=torch.float64), T]))
    # image 0: (-0.25, -0.25, 1) unchanged; image 1: R(1, 1, 4) = (-1, 1, 4) + t
    expected = torch.tensor([[-0.25, -0.25, 1.0], [0.0, 3.0, 7.0]], dtype=torch.float64)
    torch.testing.assert_close(bp.points_world, expected, rtol=0, atol=1e-15)
    assert bp.batch.tolist() == [0, 1]
    assert bp.uv.tolist() == [[0, 0], [1, 1]]


def test_backproject_range_and_nonfinite_are_invalid() -> None:
    depth = torch.tensor([[float("nan"), 0.5], [3.0, -1.0]])
    bp = backproject_depth(depth, K.float(), min_depth=0.6, max_depth=2.5)
    assert bp.points_cam.shape == (0, 3)


def test_backproject_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="depth"):
        backproject_depth(torch.zeros(1, 1, 2, 2), K)
    with pytest.raises(ValueError, match="K"):
        backproject_depth(torch.ones(2, 2, 2), torch.eye(3).expand(3, 3, 3))


def test_projection_zbuffer_hides_points_behind_nearer_ones() -> None:
    Kp = torch.tensor([[10.0, 0.0, 2.0], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    pts = torch.tensor(
        [[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.1, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    proj = project_points(pts, Kp, torch.eye(4, dtype=torch.float64), (4, 4))
    assert proj.visible.tolist() == [True, False, True, False, False]
    torch.testing.assert_close(proj.uv[:3], torch.tensor([[2.0, 2.0], [2.0, 2.0], [3.0, 2.0]]).double())
    torch.testing.assert_close(proj.depth, torch.tensor([1.0, 2.0, 1.0, -1.0, 1.0]).double())


def test_projection_with_depth_image_and_pose() -> None:
    Kp = torch.tensor([[10.0, 0.0, 2.0], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[2, 3] = -1.0  # camera 1 m behind the world origin, looking along +z
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]).double()
    depth = torch.full((4, 4), 2.0, dtype=torch.float64)
    depth[2, 3] = 0.5  # a nearer surface in front of point 2
    depth[3, 2] = 0.0  # no measurement at point 3's pixel
    proj = project_points(pts, Kp, T, (4, 4), depth_image=depth)
    # point 0 at z=1 (in front of the 2 m surface: visible); point 1 at z=2 (on it); point 2 hidden;
    # point 3 has no depth to compare with (not visible)
    assert proj.visible.tolist() == [True, True, False, False]
    assert proj.pixel.tolist() == [[2, 2], [2, 2], [3, 2], [2, 3]]


def test_voxelize_inverse_representatives_counts() -> None:
    pts = torch.tensor([[0.1, 0.1, 0.1], [0.2, 0.3, 0.05], [0.6, 0.1, 0.1], [-0.1, 0.0, 0.0]])
    vox = voxelize(pts, 0.5)
    assert vox.coords.tolist() == [[-1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert vox.inverse.tolist() == [1, 1, 2, 0]
    assert vox.representative.tolist() == [3, 0, 2]
    assert vox.counts.tolist() == [1, 2, 1]
    assert voxelize(pts, 0.5, representative="centre").representative.tolist() == [3, 1, 2]
    assert vox.coords.dtype == torch.int32


def test_voxelize_batch_never_merges_samples() -> None:
    pts = torch.tensor([[0.1, 0.1, 0.1], [0.2, 0.3, 0.05], [0.6, 0.1, 0.1], [-0.1, 0.0, 0.0]])
    vox = voxelize(pts, 0.5, batch=torch.tensor([0, 1, 0, 0]))
    assert vox.coords.tolist() == [[0, -1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]
    assert vox.inverse.tolist() == [1, 3, 2, 0]


def test_voxelize_random_representative_is_a_member_and_seeded() -> None:
    pts = torch.rand(1000, 3)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    v1 = voxelize(pts, 0.25, representative="random", generator=g1)
    v2 = voxelize(pts, 0.25, representative="random", generator=g2)
    assert torch.equal(v1.representative, v2.representative)
    assert torch.equal(v1.inverse[v1.representative], torch.arange(v1.coords.shape[0]))
    assert int(v1.counts.sum()) == 1000


def test_voxelize_errors() -> None:
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(torch.zeros(4, 3), 0.0)
    with pytest.raises(ValueError, match="points"):
        voxelize(torch.zeros(4, 2), 0.1)


def test_check_rigid() -> None:
    T = np.eye(4)
    assert check_rigid(T) is None
    T2 = T.copy()
    T2[0, 0] = 2.0
    assert "orthonormal" in str(check_rigid(T2))
    T3 = T.copy()
    T3[1, 3] = np.inf
    assert "non-finite" in str(check_rigid(T3))
    assert "determinant" in str(check_rigid(np.diag([1.0, 1.0, -1.0, 1.0])))


def test_far_from_origin_coordinates_keep_float32_precision() -> None:
    """Geo-referenced poses (UTM-like, 5000 km) are shifted before the float32 cast: the points of a frame
    and of a fused scene keep sub-millimetre precision instead of ~0.5 m, and indoor data is untouched."""
    from ppkt.data.fusion import voxel_downsample
    from ppkt.data.pairing import frame_to_sample
    from ppkt.data.types import Frame, FusedScene
    from ppkt.geometry import float32_shift

    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 3.0, (20, 30)).astype(np.float32)
    K = np.array([[30.0, 0, 15], [0, 30.0, 10], [0, 0, 1]])
    color = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    near_pose = np.eye(4)
    near_pose[:3, 3] = [1.0, 2.0, 1.5]
    offset = np.array([5e6, 4e6, 0.0])
    far_pose = near_pose.copy()
    far_pose[:3, 3] += offset
    near = frame_to_sample(Frame("s", "0", color, depth, K, near_pose))
    far = frame_to_sample(Frame("s", "0", color, depth, K, far_pose))
    shift = float32_shift(torch.from_numpy(far_pose[None, :3, 3]))
    assert float32_shift(torch.from_numpy(near_pose[None, :3, 3])).abs().max() == 0  # indoor: no shift
    assert shift[:2].abs().min() > 0 and shift[2] == 0 and torch.all(shift % 1024 == 0)
    restored = far.points.double() + shift - torch.from_numpy(offset)
    assert (restored - near.points.double()).abs().max() < 1e-3  # float32 alone: ~0.25 m at 5e6 m
    # fused scenes: same voxels near and far, coordinates within a millimetre after the shift
    xyz = near.points.double().numpy()
    rgb = np.zeros_like(xyz, dtype=np.float32)
    label = np.ones(len(xyz), dtype=np.int64)
    a = voxel_downsample(FusedScene("n", xyz, rgb, label, 2), 0.05)
    b = voxel_downsample(FusedScene("f", xyz + offset, rgb, label, 2), 0.05)
    assert len(a) == len(b) and len(a) > 100
    moved = (
        torch.from_numpy(b.xyz).double()
        + float32_shift(torch.from_numpy(xyz + offset))
        - torch.from_numpy(offset)
    )
    assert (moved - torch.from_numpy(a.xyz).double()).abs().max() < 1e-3


def _lowest_per_group(groups: torch.Tensor, priority: torch.Tensor, num_groups: int) -> torch.Tensor:
    """The lowest priority of each group, ties to the lowest index, by a Python loop."""
    out = []
    for g in range(num_groups):
        members = (groups == g).nonzero().squeeze(1)
        p = priority[members].tolist()
        out.append(int(members[min(range(len(p)), key=lambda i: (p[i], i))]))
    return torch.tensor(out, dtype=torch.long)


@pytest.mark.parametrize("kind", ["index", "random", "ties", "float32", "infinite"])
def test_first_by_priority_picks_each_groups_lowest_priority_ties_to_the_lowest_index(kind: str) -> None:
    from ppkt.geometry.voxelize import first_by_priority

    gen = torch.Generator().manual_seed(3)
    N, M = 400, 37
    groups = torch.cat([torch.arange(M), torch.randint(0, M, (N - M,), generator=gen)])
    groups = groups[torch.randperm(N, generator=gen)]
    priority = {
        "index": torch.arange(N, dtype=torch.float64),
        "random": torch.rand(N, generator=gen, dtype=torch.float64),
        "ties": torch.randint(0, 3, (N,), generator=gen).double(),
        "float32": torch.rand(N, generator=gen),
        "infinite": torch.where(torch.rand(N, generator=gen) < 0.5, float("inf"), -float("inf")),
    }[kind]
    assert torch.equal(first_by_priority(groups, priority, M), _lowest_per_group(groups, priority, M))


def test_first_by_priority_with_a_nan_priority_falls_back_to_the_sort_order() -> None:
    from ppkt.geometry.voxelize import first_by_priority

    groups = torch.tensor([0, 0, 1, 1])
    priority = torch.tensor([float("nan"), float("nan"), 2.0, 1.0])
    # NaN sorts last and the sort is stable: the group of NaNs gets its first member, as before
    assert first_by_priority(groups, priority, 2).tolist() == [0, 3]
