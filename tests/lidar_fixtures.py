"""Small LiDAR + camera datasets written to disk for the reader and pairing tests (KITTI object, KITTI
odometry / SemanticKITTI, the rig layout, nuScenes v1.0 tables), and the nuScenes tables of the real
mmdet3d-demo keyframe."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from ppkt.data.readers.nuscenes import CAMERAS as NUSCENES_CAMERAS

# KITTI-like calibration: a 40×20 camera 2, rectification by 0.01 rad about y, LiDAR x forward → camera z
KITTI_HW = (20, 40)
KITTI_P2 = np.array([[20.0, 0.0, 19.5, 1.2], [0.0, 20.0, 9.5, 0.1], [0.0, 0.0, 1.0, 0.005]])
_c, _s = math.cos(0.01), math.sin(0.01)
KITTI_R0 = np.array([[_c, 0.0, _s], [0.0, 1.0, 0.0], [-_s, 0.0, _c]])
KITTI_TR = np.array([[0.0, -1.0, 0.0, 0.02], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])
#: LiDAR (x forward, y left, z up) → OpenCV camera looking along +x
VELO_TO_CAM = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def kitti_points(n: int = 200, seed: int = 0, behind: int = 20) -> np.ndarray:
    """float32 ``[n + behind, 4]``: points in front of the car (x 3–12 m, |y| ≤ 6, z −1.5–1), then behind."""
    rng = np.random.default_rng(seed)
    front = np.stack(
        [rng.uniform(3, 12, n), rng.uniform(-6, 6, n), rng.uniform(-1.5, 1, n), rng.uniform(0, 1, n)], axis=1
    )
    back = np.stack(
        [rng.uniform(-12, -3, behind), rng.uniform(-6, 6, behind), np.zeros(behind), np.ones(behind)], 1
    )
    return np.concatenate([front, back]).astype(np.float32)


def write_image(path: Path, hw: tuple[int, int], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)
    return path


def calib_lines(**matrices: np.ndarray) -> str:
    return "".join(f"{k}: {' '.join(f'{v:.12e}' for v in m.reshape(-1))}\n" for k, m in matrices.items())


def write_kitti_object(
    root: Path, ids: tuple[str, ...] = ("000000", "000001"), split: str = "training"
) -> Path:
    """A KITTI object split ``root/split`` with ``velodyne``, ``image_2`` and ``calib`` for ``ids``."""
    folder = root / split
    for i, name in enumerate(ids):
        (folder / "velodyne").mkdir(parents=True, exist_ok=True)
        kitti_points(seed=i).tofile(folder / "velodyne" / f"{name}.bin")
        write_image(folder / "image_2" / f"{name}.png", KITTI_HW, seed=i)
        (folder / "calib").mkdir(exist_ok=True)
        text = calib_lines(
            P0=KITTI_P2, P2=KITTI_P2, R0_rect=KITTI_R0, Tr_velo_to_cam=KITTI_TR, Tr_imu_to_velo=KITTI_TR
        )
        (folder / "calib" / f"{name}.txt").write_text(text)
    return folder


def write_kitti_raw(
    root: Path, date: str = "2011_09_26", drives: tuple[int, ...] = (1, 5), n: int = 2
) -> Path:
    """A KITTI raw date folder: ``calib_cam_to_cam.txt`` (P_rect_02, R_rect_00), ``calib_velo_to_cam.txt``
    (R, T) and synchronised drives with ``velodyne_points/data`` and ``image_02/data``."""
    folder = root / date
    folder.mkdir(parents=True)
    cams = "calib_time: 09-Jan-2012 13:57:47\n" + calib_lines(
        P_rect_00=KITTI_P2, R_rect_00=KITTI_R0, P_rect_02=KITTI_P2
    )
    (folder / "calib_cam_to_cam.txt").write_text(cams)
    velo = calib_lines(R=KITTI_TR[:, :3], T=KITTI_TR[:, 3])
    (folder / "calib_velo_to_cam.txt").write_text(
        "calib_time: 15-Mar-2012 11:37:16\n" + velo + "delta_f: 0 0\n"
    )
    for d in drives:
        drive = folder / f"{date}_drive_{d:04d}_sync"
        (drive / "velodyne_points" / "data").mkdir(parents=True)
        for i in range(n):
            kitti_points(seed=i).tofile(drive / "velodyne_points" / "data" / f"{i:010d}.bin")
            write_image(drive / "image_02" / "data" / f"{i:010d}.png", KITTI_HW, seed=i)
    return folder


def kitti_poses(n: int) -> np.ndarray:
    """``[n, 3, 4]`` camera-0 poses: moving 1 m per scan along z and turning 0.05 rad per scan about y."""
    poses = np.zeros((n, 3, 4))
    for i in range(n):
        a = 0.05 * i
        poses[i, :, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        poses[i, :, 3] = [0.1 * i, 0.0, 1.0 * i]
    return poses


def write_kitti_sequence(
    root: Path, seq: str = "00", n: int = 3, *, labels: bool = True, images: bool = True, poses: bool = True
) -> Path:
    """``root/sequences/seq`` of KITTI odometry / SemanticKITTI; labels: raw id 40 (road) for points below
    z = −1, 10 (car) with instance 7 for x < 6, 252 (moving car) beyond, 50 (building) otherwise."""
    folder = root / "sequences" / seq
    (folder / "velodyne").mkdir(parents=True)
    for i in range(n):
        name = f"{i:06d}"
        pts = kitti_points(seed=i)
        pts.tofile(folder / "velodyne" / f"{name}.bin")
        if labels:
            (folder / "labels").mkdir(exist_ok=True)
            sem = np.where(pts[:, 2] < -1, 40, np.where(pts[:, 0] < 6, 10, np.where(pts[:, 0] > 11, 252, 50)))
            raw = (sem.astype(np.uint32) | (np.uint32(7) << np.uint32(16))).astype("<u4")
            raw.tofile(folder / "labels" / f"{name}.label")
        if images:
            write_image(folder / "image_2" / f"{name}.png", KITTI_HW, seed=i)
    if images or poses:
        (folder / "calib.txt").write_text(calib_lines(P0=KITTI_P2, P2=KITTI_P2, Tr=KITTI_R0 @ KITTI_TR))
    if poses:
        lines = [" ".join(f"{v:.12e}" for v in p.reshape(-1)) for p in kitti_poses(n)]
        (folder / "poses.txt").write_text("\n".join(lines) + "\n")
    return folder


def rig_cameras() -> dict[str, dict[str, object]]:
    """Two rig cameras: ``front`` (40×20, looking along +x) and ``left`` (30×30, looking along +y)."""
    front = np.eye(4)
    front[:3, :3] = VELO_TO_CAM
    front[:3, 3] = [0.0, 0.1, 0.0]
    left = np.eye(4)
    left[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    return {
        "front": {
            "K": [[20.0, 0.0, 19.5], [0.0, 20.0, 9.5], [0.0, 0.0, 1.0]],
            "lidar_to_camera": front.tolist(),
            "image_size": [20, 40],
        },
        "left": {
            "K": [[15.0, 0.0, 14.5], [0.0, 15.0, 14.5], [0.0, 0.0, 1.0]],
            "lidar_to_camera": left.tolist(),
        },
    }


def rig_points(seed: int = 0) -> np.ndarray:
    """float32 ``[120, 4]``: 60 points ahead (+x) and 60 on the left (+y), intensity in [0, 1]."""
    rng = np.random.default_rng(seed)
    ahead = np.stack([rng.uniform(4, 10, 60), rng.uniform(-3, 3, 60), rng.uniform(-1, 1, 60)], 1)
    left = np.stack([rng.uniform(-3, 3, 60), rng.uniform(4, 10, 60), rng.uniform(-1, 1, 60)], 1)
    xyz = np.concatenate([ahead, left])
    return np.concatenate([xyz, rng.uniform(0, 1, (120, 1))], axis=1).astype(np.float32)


def write_rig(root: Path, scenes: tuple[str, ...] = ("street_a", "street_b"), frames: int = 2) -> Path:
    """A rig dataset: ``rig.json`` at the root, per scene ``.bin`` points (frame 0) and ``.npy`` points
    (others), both cameras' images, labels (1 + point index mod 3) and poses (1 m along x per frame)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "rig.json").write_text(
        json.dumps({"cameras": rig_cameras(), "points": {"columns": ["x", "y", "z", "intensity"]}})
    )
    for s, scene in enumerate(scenes):
        folder = root / scene
        (folder / "points").mkdir(parents=True)
        (folder / "labels").mkdir()
        poses = []
        for i in range(frames):
            name = f"{i:04d}"
            pts = rig_points(seed=10 * s + i)
            if i == 0:
                pts.tofile(folder / "points" / f"{name}.bin")
            else:
                np.save(folder / "points" / f"{name}.npy", pts)
            write_image(folder / "images" / "front" / f"{name}.png", (20, 40), seed=i)
            write_image(folder / "images" / "left" / f"{name}.png", (30, 30), seed=i + 1)
            np.save(folder / "labels" / f"{name}.npy", 1 + np.arange(pts.shape[0]) % 3)
            T = np.eye(4)
            T[0, 3] = float(i)
            poses.append(" ".join(str(v) for v in T[:3].reshape(-1)))
        (folder / "poses.txt").write_text("\n".join(poses) + "\n")
    return root


def matrix_to_quaternion(R: np.ndarray) -> list[float]:
    """``(w, x, y, z)`` of a rotation matrix (Shepperd's method)."""
    t = np.trace(R)
    if t > 0:
        s = 2 * math.sqrt(1 + t)
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * math.sqrt(1 + R[i, i] - R[j, j] - R[k, k])
        v = [0.0, 0.0, 0.0]
        v[i], v[j], v[k] = s / 4, (R[j, i] + R[i, j]) / s, (R[k, i] + R[i, k]) / s
        q = [(R[k, j] - R[j, k]) / s, *v]
    return [float(x) for x in q]


def _rot_z(a: float) -> np.ndarray:
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _transform(R: np.ndarray, t: list[float] | np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


NUSCENES_YAW = {
    "CAM_FRONT": 0,
    "CAM_FRONT_RIGHT": -55,
    "CAM_BACK_RIGHT": -110,
    "CAM_BACK": 180,
    "CAM_BACK_LEFT": 110,
    "CAM_FRONT_LEFT": 55,
}
NUSCENES_HW = (16, 32)
#: camera frame → ego for a camera looking along ego +x (cam z → x, cam x → −y, cam y → −z)
CAM_TO_EGO_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class NuScenesWriter:
    """Writes nuScenes v1.0 tables (and the files they name) under ``dataroot/version``; records every
    sensor's matrices in :attr:`truth` (sample_data token → dict) for the tests to check the chain."""

    def __init__(self, dataroot: Path, version: str = "v1.0-mini") -> None:
        self.root, self.version = dataroot, version
        self.tables: dict[str, list[dict[str, object]]] = {
            k: []
            for k in (
                "scene",
                "sample",
                "sample_data",
                "calibrated_sensor",
                "ego_pose",
                "sensor",
                "lidarseg",
                "category",
            )
        }
        self.truth: dict[str, dict[str, np.ndarray]] = {}

    def sensor(self, channel: str, sensor_to_ego: np.ndarray, K: np.ndarray | None = None) -> str:
        token = f"cs_{channel}_{len(self.tables['calibrated_sensor'])}"
        if not any(r["channel"] == channel for r in self.tables["sensor"]):
            self.tables["sensor"].append(
                {
                    "token": f"s_{channel}",
                    "channel": channel,
                    "modality": "camera" if K is not None else "lidar",
                }
            )
        self.tables["calibrated_sensor"].append(
            {
                "token": token,
                "sensor_token": f"s_{channel}",
                "translation": sensor_to_ego[:3, 3].tolist(),
                "rotation": matrix_to_quaternion(sensor_to_ego[:3, :3]),
                "camera_intrinsic": [] if K is None else K.tolist(),
            }
        )
        return token

    def data(self, sample: str, cs: str, ego_to_global: np.ndarray, filename: str, key: bool = True) -> str:
        token = f"sd_{len(self.tables['sample_data'])}"
        ego = f"ep_{token}"
        self.tables["ego_pose"].append(
            {
                "token": ego,
                "translation": ego_to_global[:3, 3].tolist(),
                "rotation": matrix_to_quaternion(ego_to_global[:3, :3]),
            }
        )
        self.tables["sample_data"].append(
            {
                "token": token,
                "sample_token": sample,
                "ego_pose_token": ego,
                "calibrated_sensor_token": cs,
                "filename": filename,
                "is_key_frame": key,
                "timestamp": 0,
            }
        )
        self.truth[token] = {"ego_to_global": ego_to_global}
        return token

    def scene(self, name: str, samples: list[str]) -> None:
        for i, s in enumerate(samples):
            prev, nxt = (samples[i - 1] if i else ""), (samples[i + 1] if i + 1 < len(samples) else "")
            self.tables["sample"].append(
                {"token": s, "scene_token": f"sc_{name}", "prev": prev, "next": nxt, "timestamp": i}
            )
        self.tables["scene"].append(
            {
                "token": f"sc_{name}",
                "name": name,
                "first_sample_token": samples[0],
                "last_sample_token": samples[-1],
                "nbr_samples": len(samples),
            }
        )

    def write(self, skip: tuple[str, ...] = ()) -> Path:
        folder = self.root / self.version
        folder.mkdir(parents=True, exist_ok=True)
        for name, records in self.tables.items():
            if name not in skip and (records or name not in ("lidarseg", "category")):
                (folder / f"{name}.json").write_text(json.dumps(records))
        return folder


def nuscenes_points(n: int = 600, seed: int = 0) -> np.ndarray:
    """float32 ``[n, 5]`` x, y, z, intensity (0–255), ring: a ring 4–15 m around the sensor."""
    rng = np.random.default_rng(seed)
    a, r = rng.uniform(0, 2 * math.pi, n), rng.uniform(4, 15, n)
    cols = [
        r * np.cos(a),
        r * np.sin(a),
        rng.uniform(-1.5, 0.5, n),
        rng.integers(0, 256, n),
        rng.integers(0, 32, n),
    ]
    return np.stack(cols, axis=1).astype(np.float32)


def write_nuscenes(
    dataroot: Path, scenes: dict[str, int] | None = None, version: str = "v1.0-mini"
) -> NuScenesWriter:
    """A synthetic nuScenes dataroot: ``scenes`` (name → number of keyframes; default one scene of 2), six
    cameras (32×16) around the car, each sensor with its own ego pose (the car drives 10 m/s along a 0.3 rad
    heading; camera ``k`` exposes 10·k ms before the LiDAR sweep), lidarseg labels for every keyframe (the
    first keyframe's in ``lidarseg.json``, the others found by the file-naming rule), a non-keyframe sweep
    whose file does not exist (it must be ignored)."""
    w = NuScenesWriter(dataroot, version)
    l2e = _transform(_rot_z(-math.pi / 2), [0.94, 0.0, 1.84])
    lidar_cs = w.sensor("LIDAR_TOP", l2e)
    K = np.array([[12.0, 0.0, 15.5], [0.0, 12.0, 7.5], [0.0, 0.0, 1.0]])
    cams = {}
    for c in NUSCENES_CAMERAS:
        yaw = math.radians(NUSCENES_YAW[c])
        t = [1.0 * math.cos(yaw), 1.0 * math.sin(yaw), 1.5]
        cams[c] = (
            w.sensor(c, _transform(_rot_z(yaw) @ CAM_TO_EGO_BASE, t), K),
            _transform(_rot_z(yaw) @ CAM_TO_EGO_BASE, t),
        )
    w.truth["lidar_to_ego"] = {"T": l2e}
    w.tables["category"] = [
        {"token": "cat0", "name": "noise", "index": 0},
        {"token": "cat17", "name": "vehicle.car", "index": 17},
    ]
    heading = 0.3
    k = 0
    for scene, count in (scenes or {"scene-0061": 2}).items():
        samples = []
        for _ in range(count):
            sample = f"smp_{k}"
            samples.append(sample)
            t0 = 0.5 * k

            def ego_at(t: float) -> np.ndarray:
                return _transform(
                    _rot_z(heading),
                    [400.0 + 10 * t * math.cos(heading), 1100.0 + 10 * t * math.sin(heading), 0.0],
                )

            pcd = f"samples/LIDAR_TOP/{sample}.pcd.bin"
            (dataroot / pcd).parent.mkdir(parents=True, exist_ok=True)
            pts = nuscenes_points(seed=k)
            pts.tofile(dataroot / pcd)
            sd = w.data(sample, lidar_cs, ego_at(t0), pcd)
            w.truth[sd]["sensor_to_ego"] = l2e
            labels = (np.arange(pts.shape[0]) % 32).astype(np.uint8)
            seg = f"lidarseg/{version}/{sd}_lidarseg.bin"
            (dataroot / seg).parent.mkdir(parents=True, exist_ok=True)
            labels.tofile(dataroot / seg)
            if k == 0:
                w.tables["lidarseg"].append({"token": sd, "sample_data_token": sd, "filename": seg})
            for j, c in enumerate(NUSCENES_CAMERAS):
                img = f"samples/{c}/{sample}.jpg"
                write_image(dataroot / img, NUSCENES_HW, seed=j)
                sdc = w.data(sample, cams[c][0], ego_at(t0 - 0.01 * j), img)
                w.truth[sdc]["sensor_to_ego"] = cams[c][1]
            w.data(sample, lidar_cs, ego_at(t0 + 0.05), f"sweeps/LIDAR_TOP/{sample}_sweep.pcd.bin", key=False)
            k += 1
        w.scene(scene, samples)
    w.write()
    return w


def nuscenes_from_mmdet3d(demo: Path, dataroot: Path) -> tuple[dict[str, object], NuScenesWriter]:
    """nuScenes tables for the real keyframe of ``mmdet3d-demo/nuscenes`` (its pickle's matrices) under
    ``dataroot``, whose ``samples/`` link to the real files. The pickle stores one ego pose (the LiDAR's);
    each camera's ego pose is solved from its stored ``lidar2cam``:
    ``ego_to_global(t_cam) = ego_to_global(t_lidar) · lidar2ego · inv(lidar2cam) · inv(cam2ego)``.
    Returns the pickle's sample dict and the writer."""
    pkl = next(demo.glob("*.pkl"))
    with pkl.open("rb") as f:
        info = pickle.load(f)["data_list"][0]
    w = NuScenesWriter(dataroot, "v1.0-mini")
    l2e = np.array(info["lidar_points"]["lidar2ego"], dtype=np.float64)
    e2g = np.array(info["ego2global"], dtype=np.float64)
    sample = info["token"]
    lidar_file = info["lidar_points"]["lidar_path"]
    for rel, name in [(f"samples/LIDAR_TOP/{lidar_file}", lidar_file)] + [
        (f"samples/{c}/{cam['img_path']}", cam["img_path"]) for c, cam in info["images"].items()
    ]:
        (dataroot / rel).parent.mkdir(parents=True, exist_ok=True)
        (dataroot / rel).symlink_to(demo / name)
    w.data(sample, w.sensor("LIDAR_TOP", l2e), e2g, f"samples/LIDAR_TOP/{lidar_file}")
    for c in NUSCENES_CAMERAS:
        cam = info["images"][c]
        c2e = np.array(cam["cam2ego"], dtype=np.float64)
        l2c = np.array(cam["lidar2cam"], dtype=np.float64)
        e2g_cam = e2g @ l2e @ np.linalg.inv(l2c) @ np.linalg.inv(c2e)
        e2g_cam[:3, :3] = _orthonormal(e2g_cam[:3, :3])
        cs = w.sensor(
            c, _transform(_orthonormal(c2e[:3, :3]), c2e[:3, 3]), np.array(cam["cam2img"], dtype=np.float64)
        )
        w.data(sample, cs, e2g_cam, f"samples/{c}/{cam['img_path']}")
    w.scene("scene-0061", [sample])
    w.write()
    return info, w


def _orthonormal(R: np.ndarray) -> np.ndarray:
    """The rotation nearest to a float32-rounded one (SVD)."""
    u, _, vt = np.linalg.svd(R)
    return u @ vt
