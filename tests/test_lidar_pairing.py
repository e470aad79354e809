"""scan_to_sample: LiDAR points paired with camera pixels through the z-buffer visibility test, the
multi-camera rules, cameras of different sizes, and the errors naming the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.data.pairing import scan_to_sample
from ppkt.data.readers import open_scans
from ppkt.data.types import Scan
from ppkt.errors import DataError

from .conftest import assert_mentions
from .lidar_fixtures import VELO_TO_CAM, write_kitti_object

FRONT = np.eye(4)
FRONT[:3, :3] = VELO_TO_CAM  # camera at the LiDAR, looking along +x
LEFT = np.eye(4)
LEFT[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]  # looking along +y
K4 = np.array([[10.0, 0.0, 1.5], [0.0, 10.0, 1.5], [0.0, 0.0, 1.0]])  # a 4×4 image
K16 = np.array([[10.0, 0.0, 7.0], [0.0, 10.0, 7.0], [0.0, 0.0, 1.0]])  # a 16×16 image


def _scan(
    points: list[list[float]], cams: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]], **kw: object
) -> Scan:
    pts = np.asarray(points, dtype=np.float32)
    return Scan(
        scene="s",
        name="f",
        points=pts,
        intensity=np.linspace(0, 1, len(pts), dtype=np.float32),
        images=[np.full((*hw, 3), 10 * i, np.uint8) for i, (_, _, hw) in enumerate(cams)],
        cameras=[f"cam{i}" for i in range(len(cams))],
        K=[K for K, _, _ in cams],
        lidar_to_camera=[T for _, T, _ in cams],
        points_path=Path("scan.bin"),
        image_paths=[Path(f"cam{i}.png") for i in range(len(cams))],
        **kw,  # type: ignore[arg-type]
    )


def test_points_pair_with_their_pixels_and_all_points_stay() -> None:
    # LiDAR (x fwd, y left, z up) → camera (x = −y, y = −z, z = x): (2, 0, 0) → pixel (7, 7);
    # (4, −1.2, 0.4) → (7 + 10·0.3, 7 − 10·0.1) = (10, 6); (−3, 0, 0) is behind; (1, 5, 0) is outside
    scan = _scan(
        [[2, 0, 0], [4, -1.2, 0.4], [-3, 0, 0], [1, 5, 0]],
        [(K16, FRONT, (16, 16))],
        label=np.array([0, 3, 1, 2]),
    )
    s = scan_to_sample(scan, min_depth=0.5, multi_camera="all")
    assert s.points.shape == (4, 3) and s.points.dtype == torch.float32
    assert s.pair_point.tolist() == [0, 1] and s.pair_image.tolist() == [0, 0]
    torch.testing.assert_close(s.pair_uv, torch.tensor([[7.0, 7.0], [10.0, 6.0]]))
    assert s.labels is not None and s.labels.tolist() == [-1, 2, 0, 1]
    assert torch.equal(s.colors, torch.zeros(4, 3))
    assert s.intensity is not None and s.intensity.tolist() == pytest.approx(np.linspace(0, 1, 4).tolist())
    assert s.images.shape == (1, 3, 16, 16) and float(s.images.max()) == 0.0
    # poses are camera-to-LiDAR: K · (pose⁻¹ · p) gives the pair's pixel back
    assert s.poses.dtype == torch.float64
    torch.testing.assert_close(s.poses[0], torch.from_numpy(np.linalg.inv(FRONT)))
    cam = (torch.linalg.inv(s.poses[0]) @ torch.tensor([4.0, -1.2, 0.4, 1.0], dtype=torch.float64))[:3]
    uvw = s.intrinsics[0] @ cam
    torch.testing.assert_close((uvw[:2] / uvw[2]).float(), s.pair_uv[1])
    assert s.name == "s/f" and s.cameras == ["cam0"]


def test_min_depth_and_occlusion_remove_pairs() -> None:
    # two points on the same ray: the farther one is hidden; a point nearer than min_depth gets no pixel
    scan = _scan([[2, 0, 0], [5, 0, 0], [0.3, 0, 0]], [(K16, FRONT, (16, 16))])
    assert scan_to_sample(scan, min_depth=0.5, multi_camera="all").pair_point.tolist() == [0]
    assert scan_to_sample(scan, min_depth=0.1, multi_camera="all").pair_point.tolist() == [2]
    loose = scan_to_sample(
        scan, min_depth=0.5, multi_camera="all", occlusion_tolerance=3.5, occlusion_relative=0.0
    )
    assert loose.pair_point.tolist() == [0, 1]


def _two_camera_scan() -> Scan:
    # FRONT sits at the LiDAR, LEFT 1 m to its left (x_cam = R x + t with t = −R·(0, 1, 0)); with f = 1 px and
    # a 5×5 image both see ±68°. Point 0 (3, 3.5, 0) is at pixel (1, 2) of FRONT (4.61 m away) and (3, 2) of
    # LEFT (3.91 m away: the nearest); point 1 (5, −1, 0) is behind LEFT, point 2 (−1, 6, 0) behind FRONT
    left = LEFT.copy()
    left[:3, 3] = -LEFT[:3, :3] @ np.array([0.0, 1.0, 0.0])
    K = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])
    return _scan([[3, 3.5, 0], [5, -1, 0], [-1, 6, 0]], [(K, FRONT, (5, 5)), (K, left, (5, 5))])


def test_multi_camera_rules() -> None:
    scan = _two_camera_scan()
    every = scan_to_sample(scan, min_depth=0.5, multi_camera="all", occlusion_window=1)
    assert list(zip(every.pair_point.tolist(), every.pair_image.tolist())) == [(0, 0), (1, 0), (0, 1), (2, 1)]
    nearest = scan_to_sample(scan, min_depth=0.5, multi_camera="nearest", occlusion_window=1)
    assert sorted(zip(nearest.pair_point.tolist(), nearest.pair_image.tolist())) == [(0, 1), (1, 0), (2, 1)]
    assert nearest.images.shape[0] == 2
    chosen = set()
    for seed in range(8):
        kw = {"min_depth": 0.5, "multi_camera": "random", "occlusion_window": 1}
        one = scan_to_sample(scan, rng=torch.Generator().manual_seed(seed), **kw)  # type: ignore[arg-type]
        again = scan_to_sample(scan, rng=torch.Generator().manual_seed(seed), **kw)  # type: ignore[arg-type]
        assert one.images.shape[0] == 1 and one.pair_image.tolist() == [0, 0] and one.cameras is not None
        assert torch.equal(one.pair_point, again.pair_point) and torch.equal(one.poses, again.poses)
        cam = 0 if one.pair_point.tolist() == [0, 1] else 1
        assert one.pair_point.tolist() == ([0, 1] if cam == 0 else [0, 2])
        torch.testing.assert_close(one.poses[0], every.poses[cam])
        assert one.cameras == [f"cam{cam}"] and every.cameras == ["cam0", "cam1"]
        chosen.add(cam)
    assert chosen == {0, 1}  # both cameras get drawn
    with pytest.raises(ValueError, match="all"):
        scan_to_sample(scan, min_depth=0.5, multi_camera="first")


def test_cameras_of_different_sizes_are_resized_with_their_intrinsics() -> None:
    K_small = np.array([[5.0, 0.0, 1.5], [0.0, 5.0, 0.5], [0.0, 0.0, 1.0]])  # a 4×2 (W×H) image
    K_big = np.array([[10.0, 0.0, 3.5], [0.0, 10.0, 1.5], [0.0, 0.0, 1.0]])  # the same camera at 8×4
    scan = _scan([[5, 0.2, 0.1], [5, -0.3, -0.1]], [(K_big, FRONT, (4, 8)), (K_small, FRONT, (2, 4))])
    s = scan_to_sample(scan, min_depth=0.5, multi_camera="all")
    assert s.images.shape == (2, 3, 4, 8)
    # ×2 about pixel centres: u' = 2u + ½ — K_small becomes exactly K_big
    torch.testing.assert_close(s.intrinsics[1], torch.from_numpy(K_big))
    assert s.pair_image.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(s.pair_uv[:2], s.pair_uv[2:])
    torch.testing.assert_close(s.images[1], torch.full((3, 4, 8), 10 / 255))
    fixed = scan_to_sample(scan, min_depth=0.5, multi_camera="all", image_size=(2, 4))
    assert fixed.images.shape == (2, 3, 2, 4)
    torch.testing.assert_close(fixed.intrinsics[0], torch.from_numpy(K_small))


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        scan_to_sample(_scan([[2, 0, 0]], []), min_depth=0.5, multi_camera="all")
    assert_mentions(e.value, "scan.bin", "no camera")
    # the second camera looks the other way: it sees no point (a wrong calibration)
    back = FRONT.copy()
    back[:3, :3] = VELO_TO_CAM @ np.diag([-1.0, -1.0, 1.0])
    with pytest.raises(DataError) as e:
        scan_to_sample(
            _scan([[2, 0, 0]], [(K4, FRONT, (4, 4)), (K4, back, (4, 4))]), min_depth=0.5, multi_camera="all"
        )
    assert_mentions(e.value, "cam1.png", "sees no point")
    # a KITTI scan with every point behind the car
    folder = write_kitti_object(tmp_path)
    pts = np.fromfile(folder / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    pts[:, 0] = -np.abs(pts[:, 0])
    pts.tofile(folder / "velodyne" / "000000.bin")
    with pytest.raises(DataError) as e:
        scan_to_sample(open_scans(tmp_path, "kitti")[0].read(0), min_depth=1.0, multi_camera="all")
    assert_mentions(
        e.value, folder / "image_2" / "000000.png", folder / "calib" / "000000.txt", "sees no point"
    )


def _two_wall_scan(step_deg: float = 0.2) -> tuple[Scan, np.ndarray]:
    """A LiDAR at the origin sees a near wall (x = 5 m, y ∈ [0, 3], z ∈ [−1, 1]) and, beside it, a far wall
    (x = 10 m, y ∈ [−6, 6]) on a 0.2° × 0.2° grid of rays (elevation ±3°). The camera sits 0.5 m to the
    LiDAR's left, looking along +x (f = 500 px, 640×120): from there the far-wall returns with y ∈ [−0.5, 0)
    lie behind the near wall. Returns the scan and each point's wall (0 near, 1 far)."""
    az = np.radians(np.arange(-31.0, 31.0, step_deg))
    el = np.radians(np.arange(-3.0, 3.0 + 1e-9, step_deg))
    A, E = np.meshgrid(az, el)
    d = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3)
    near_hit = d * (5.0 / d[:, :1])
    on_near = (near_hit[:, 1] >= 0) & (near_hit[:, 1] <= 3)
    pts = np.where(on_near[:, None], near_hit, d * (10.0 / d[:, :1]))
    T = np.eye(4)
    T[:3, :3] = VELO_TO_CAM
    T[:3, 3] = -VELO_TO_CAM @ np.array([0.0, 0.5, 0.0])
    K = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 59.5], [0.0, 0.0, 1.0]])
    return _scan(pts.tolist(), [(K, T, (120, 640))]), (~on_near).astype(np.int64)


def test_two_walls_far_returns_behind_the_near_wall_get_no_pixel() -> None:
    scan, wall = _two_wall_scan()
    y = scan.points[:, 1].astype(np.float64)
    hidden = (wall == 1) & (y >= -0.5) & (y < 0)  # the camera's ray to them crosses the near wall
    clear = (wall == 1) & (y < -0.5 - 2 * 10 / 500)  # over two pixels (at 10 m) away from behind it
    assert hidden.sum() > 300
    s = scan_to_sample(scan, min_depth=0.5, multi_camera="all", occlusion_window=3)
    paired = np.zeros(len(wall), bool)
    paired[s.pair_point.numpy()] = True
    inside = _inside(scan)
    assert not paired[hidden].any()
    assert paired[clear & inside].all() and paired[(wall == 0) & inside].all()
    # a per-pixel z-buffer lets far returns show through the gaps between the near wall's returns
    leaky = scan_to_sample(scan, min_depth=0.5, multi_camera="all", occlusion_window=1)
    leaked = np.zeros(len(wall), bool)
    leaked[leaky.pair_point.numpy()] = True
    assert leaked[hidden].sum() > 0.2 * hidden.sum()


def _inside(scan: Scan) -> np.ndarray:
    cam = scan.points.astype(np.float64) @ scan.lidar_to_camera[0][:3, :3].T + scan.lidar_to_camera[0][:3, 3]
    uv = (cam @ scan.K[0].T)[:, :2] / cam[:, 2:]
    H, W = scan.images[0].shape[:2]
    return (
        (np.round(uv[:, 0]) >= 0)
        & (np.round(uv[:, 0]) < W)
        & (np.round(uv[:, 1]) >= 0)
        & (np.round(uv[:, 1]) < H)
    )


def test_two_walls_geometry_is_what_the_test_says() -> None:
    scan, wall = _two_wall_scan()
    assert set(np.round(scan.points[wall == 0, 0], 6)) == {5.0} and set(
        np.round(scan.points[wall == 1, 0], 6)
    ) == {10.0}
    assert math.isclose(float(scan.points[wall == 0, 1].min()), 0.0, abs_tol=0.02)
