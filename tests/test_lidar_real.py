"""LiDAR readers and pairing on the real samples of ``../shared/data`` (skipped when it is absent):
KITTI object frames, the mmdet3d-demo KITTI and nuScenes keyframes, the SemanticKITTI scan."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.data.pairing import OCCLUSION_RELATIVE, OCCLUSION_TOLERANCE, scan_to_sample
from ppkt.data.readers import open_scans
from ppkt.data.types import Scan

from .lidar_fixtures import NUSCENES_CAMERAS, calib_lines, nuscenes_from_mmdet3d

pytestmark = pytest.mark.real_data


def _calib(path: Path) -> dict[str, np.ndarray]:
    """The calibration file parsed here, independently of the reader."""
    out = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, values = line.split(":", 1)
            out[key] = np.array(values.split(), dtype=np.float64)
    return out


def _h(M: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[: M.shape[0], : M.shape[1]] = M
    return T


def _pixels(scan: Scan, c: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(uv [N, 2], depth [N])`` of the scan's points in camera ``c`` with the reader's K and transform."""
    T = scan.lidar_to_camera[c]
    cam = scan.points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    uvw = cam @ scan.K[c].T
    return uvw[:, :2] / uvw[:, 2:], cam[:, 2]


def test_kitti_object_projection_is_p2_r0_tr_and_lands_in_the_field_of_view(shared_data: Path) -> None:
    root = shared_data / "kitti-object"
    splits = open_scans(root, "kitti")
    assert [s.scene for s in splits] == ["testing", "training"] and [len(s) for s in splits] == [6, 6]
    for i in (0, 3):
        scan = splits[1].read(i)
        c = _calib(root / "training" / "calib" / f"{scan.name}.txt")
        P2, R0, Tr = c["P2"].reshape(3, 4), c["R0_rect"].reshape(3, 3), c["Tr_velo_to_cam"].reshape(3, 4)
        x = np.c_[scan.points.astype(np.float64), np.ones(len(scan))].T
        uvw = (P2 @ _h(R0) @ _h(Tr) @ x).T
        front = uvw[:, 2] > 1.0
        uv, _ = _pixels(scan)
        np.testing.assert_allclose(uv[front], uvw[front, :2] / uvw[front, 2:], rtol=1e-9, atol=1e-6)
        assert 370 <= scan.images[0].shape[0] <= 376 and 1224 <= scan.images[0].shape[1] <= 1242
        # every pair lies in the image and ahead within the camera's ~82° field of view
        s = scan_to_sample(scan, min_depth=1.0, multi_camera="all")
        H, W = scan.images[0].shape[:2]
        u, v = s.pair_uv[:, 0], s.pair_uv[:, 1]
        assert bool(((u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)).all())
        p = scan.points[s.pair_point.numpy()]
        azimuth = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
        assert (p[:, 0] > 0.9).all() and (np.abs(azimuth) < 45).all() and s.pair_point.numel() > 10_000
        # and what lies well inside that field of view (5 m+ ahead, ±35°, −10° to +3° elevation) is seen
        q = scan.points.astype(np.float64)
        az, el = (
            np.degrees(np.arctan2(q[:, 1], q[:, 0])),
            np.degrees(np.arctan2(q[:, 2], np.hypot(q[:, 0], q[:, 1]))),
        )
        core = (q[:, 0] > 5) & (np.abs(az) < 35) & (el > -10) & (el < 3)
        inside = (
            (np.round(uv[:, 0]) >= 0)
            & (np.round(uv[:, 0]) < W)
            & (np.round(uv[:, 1]) >= 0)
            & (np.round(uv[:, 1]) < H)
        )
        assert core.sum() > 5_000 and inside[core].all()


def test_mmdet3d_kitti_frame_matches_its_stored_lidar2img(shared_data: Path, tmp_path: Path) -> None:
    """The demo frame's calibration (from its pickle) in the KITTI object layout: the reader's projection is
    mmdet3d's stored ``lidar2img`` of camera 2 (``000008.txt`` holds its ``P2``, 4×4)."""
    demo = shared_data / "mmdet3d-demo" / "kitti"
    with (demo / "000008.pkl").open("rb") as f:
        info = pickle.load(f)["data_list"][0]
    split = tmp_path / "training"
    for sub, name in (("velodyne", "000008.bin"), ("image_2", "000008.png")):
        (split / sub).mkdir(parents=True)
        (split / sub / name).symlink_to(demo / name)
    (split / "calib").mkdir()
    P2 = np.array(info["images"]["CAM2"]["cam2img"])[:3]
    R0 = np.array(info["images"]["R0_rect"])[:3, :3]
    Tr = np.array(info["lidar_points"]["Tr_velo_to_cam"])[:3]
    (split / "calib" / "000008.txt").write_text(calib_lines(P2=P2, R0_rect=R0, Tr_velo_to_cam=Tr))
    scan = open_scans(tmp_path, "kitti")[0].read(0)
    np.testing.assert_allclose(np.loadtxt(demo / "000008.txt").reshape(4, 4)[:3], P2)
    lidar2img = np.array(info["images"]["CAM2"]["lidar2img"])
    uvw = (lidar2img @ np.c_[scan.points.astype(np.float64), np.ones(len(scan))].T).T
    uv, depth = _pixels(scan)
    front = depth > 1.0
    assert front.mean() > 0.95  # the demo scan is cropped to the camera's view
    np.testing.assert_allclose(uv[front], uvw[front, :2] / uvw[front, 2:3], atol=1e-3)  # float32 matrices
    s = scan_to_sample(scan, min_depth=1.0, multi_camera="all")
    assert s.pair_point.numel() > 0.8 * len(scan)


def _numpy_visibility(scan: Scan, min_depth: float, tol: float, rel: float, window: int) -> np.ndarray:
    """The z-buffer test re-implemented with numpy (nearest depth per pixel, min over the window)."""
    T, K = scan.lidar_to_camera[0], scan.K[0]
    cam = scan.points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    z = cam[:, 2]
    zs = np.where(z >= min_depth, z, 1.0)
    x, y = cam[:, 0] / zs, cam[:, 1] / zs
    u = np.round(K[0, 0] * x + K[0, 1] * y + K[0, 2]).astype(np.int64)
    v = np.round(K[1, 1] * y + K[1, 2]).astype(np.int64)
    H, W = scan.images[0].shape[:2]
    cand = (z >= min_depth) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    r = window // 2
    buf = np.full((H + 2 * r, W + 2 * r), np.inf)
    np.minimum.at(buf, (v[cand] + r, u[cand] + r), z[cand])
    near = np.full((H, W), np.inf)
    for dv in range(window):
        for du in range(window):
            near = np.minimum(near, buf[dv : dv + H, du : du + W])
    ref = np.full(len(z), np.inf)
    ref[cand] = near[v[cand], u[cand]]
    return cand & (z <= ref + tol + rel * ref)


def test_visibility_removes_points_behind_nearer_returns_in_a_real_scan(shared_data: Path) -> None:
    scan = open_scans(shared_data / "kitti-object", "kitti")[1].read(1)
    s = scan_to_sample(scan, min_depth=1.0, multi_camera="all")
    ours = np.zeros(len(scan), bool)
    ours[s.pair_point.numpy()] = True
    expected = _numpy_visibility(scan, 1.0, OCCLUSION_TOLERANCE, OCCLUSION_RELATIVE, 3)
    assert (ours == expected).all()
    loose = scan_to_sample(scan, min_depth=1.0, multi_camera="all", occlusion_tolerance=math.inf)
    candidates = loose.pair_point.numel()
    hidden = candidates - int(ours.sum())
    assert 0.002 * candidates < hidden < 0.2 * candidates
    # every hidden point has a return within a pixel of its own that is nearer by more than the tolerance
    uv, z = _pixels(scan)
    cand = np.zeros(len(scan), bool)
    cand[loose.pair_point.numpy()] = True
    pix = np.round(uv).astype(np.int64)
    occluded = np.flatnonzero(cand & ~ours)
    rng = np.random.default_rng(0)
    for i in rng.choice(occluded, size=min(50, len(occluded)), replace=False):
        close = cand & (np.abs(pix[:, 0] - pix[i, 0]) <= 1) & (np.abs(pix[:, 1] - pix[i, 1]) <= 1)
        nearest = z[close].min()
        assert z[i] > nearest + OCCLUSION_TOLERANCE + OCCLUSION_RELATIVE * nearest


def _rotation_angle(R: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)))


def test_nuscenes_chain_reproduces_the_stored_lidar2cam(shared_data: Path, tmp_path: Path) -> None:
    """The real keyframe's tables: LiDAR → ego(t_lidar) → global → ego(t_cam) → camera gives mmdet3d's stored
    ``lidar2cam``, and the camera ego poses it implies are those of a car driving at one velocity."""
    demo = shared_data / "mmdet3d-demo" / "nuscenes"
    info, _ = nuscenes_from_mmdet3d(demo, tmp_path)
    scenes = open_scans(tmp_path, "nuscenes")
    assert [s.scene for s in scenes] == ["scene-0061"] and scenes[0].frames == [info["token"]]
    scan = scenes[0].read(0)
    assert len(scan) == 34688 and scan.cameras == list(NUSCENES_CAMERAS)
    assert all(im.shape == (900, 1600, 3) for im in scan.images)
    l2e = np.array(info["lidar_points"]["lidar2ego"])
    e2g = np.array(info["ego2global"])
    np.testing.assert_allclose(scan.pose, e2g @ l2e, atol=1e-5)
    velocities = []
    for c, T in zip(scan.cameras, scan.lidar_to_camera):
        cam = info["images"][c]
        l2c, c2e = np.array(cam["lidar2cam"]), np.array(cam["cam2ego"])
        np.testing.assert_allclose(T, l2c, atol=1e-6)
        # the static chain (camera at the LiDAR's ego pose) misses by the car's motion between the exposures
        static = np.linalg.inv(c2e) @ l2e
        dt = cam["timestamp"] - info["timestamp"]
        moved = np.linalg.norm((T @ np.linalg.inv(static))[:3, 3])
        assert moved == pytest.approx(9.2 * abs(dt), abs=0.02)
        e2g_cam = e2g @ l2e @ np.linalg.inv(T) @ np.linalg.inv(c2e)
        assert _rotation_angle(e2g_cam[:3, :3] @ e2g[:3, :3].T) < 0.005
        if abs(dt) > 0.005:
            velocities.append((e2g_cam[:3, 3] - e2g[:3, 3]) / dt)
    v = np.array(velocities)
    assert len(v) == 5 and np.abs(v - v.mean(0)).max() < 0.05 * np.linalg.norm(v.mean(0))
    # every camera sees the scan; each point's pixel from the sample's geometry is its pair's pixel
    s = scan_to_sample(scan, min_depth=1.0, multi_camera="all", image_size=(225, 400))
    counts = torch.bincount(s.pair_image, minlength=6)
    assert (counts > 300).all() and s.images.shape == (6, 3, 225, 400)
    p = torch.cat([s.points[s.pair_point].double(), torch.ones(len(s.pair_point), 1, dtype=torch.float64)], 1)
    cam = torch.einsum("pij,pj->pi", torch.linalg.inv(s.poses)[s.pair_image], p)[:, :3]
    uvw = torch.einsum("pij,pj->pi", s.intrinsics[s.pair_image], cam)
    torch.testing.assert_close((uvw[:, :2] / uvw[:, 2:]).float(), s.pair_uv, atol=1e-3, rtol=0)


#: SemanticKITTI's learning map, written out again for this test: raw id → class (others → unlabelled 0)
_MAP = {10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11, 49: 12}
_MAP |= {50: 13, 51: 14, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 252: 1, 253: 7, 254: 6, 255: 8}
_MAP |= {256: 5, 257: 5, 258: 4, 259: 5}


def test_semantickitti_real_scan_class_histogram(shared_data: Path) -> None:
    root = shared_data / "semantickitti"
    seqs = open_scans(root, "semantickitti")
    assert [s.scene for s in seqs] == ["00"] and seqs[0].frames == ["000000"]
    scan = seqs[0].read(0)
    assert scan.cameras == [] and len(scan) == 124_668
    raw = np.fromfile(root / "sequences" / "00" / "labels" / "000000.label", dtype="<u4")
    lut = np.zeros(1 << 16, np.int64)
    lut[list(_MAP)] = list(_MAP.values())
    expected = np.bincount(lut[raw & 0xFFFF], minlength=20)
    histogram = np.bincount(scan.label, minlength=20)
    np.testing.assert_array_equal(histogram, expected)
    # unlabelled (raw 0, outlier 1, other-structure 52, other-object 99), car, motorcyclist, road (+ lane
    # marking), parking, sidewalk, building, fence, vegetation, trunk, terrain, pole, traffic-sign
    counts = [
        4886,
        4234,
        0,
        0,
        0,
        0,
        0,
        0,
        88,
        35281,
        3268,
        26360,
        0,
        18268,
        370,
        27123,
        1192,
        2964,
        532,
        102,
    ]
    assert histogram.tolist() == counts
