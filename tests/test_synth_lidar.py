"""The synthetic LiDAR data: ray-cast sweeps (hand-checked on one wall), the camera rig's calibration, the
rig-layout files (geometry, labels, determinism), the CLI and the cached embedded default."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pybullet as p
import pytest

from ppkt.cli.main import main
from ppkt.data.embedded import ensure_synthetic_lidar
from ppkt.data.synth import CLASS_NAMES
from ppkt.data.synth.lidar import LidarModel, cast_sweep
from ppkt.data.synth.lidar_writer import synthesize_lidar
from ppkt.data.synth.rig import CameraRig
from ppkt.errors import ConfigError

#: a tiny sweep model for the dataset tests
TINY = LidarModel(beams=8, azimuths=128)


def test_beam_directions_by_hand() -> None:
    d = LidarModel(beams=3, azimuths=4, fov_up=10.0, fov_down=-10.0).directions()
    assert d.shape == (12, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    elevation = np.degrees(np.arcsin(d[:, 2])).reshape(3, 4)
    np.testing.assert_allclose(elevation, [[-10] * 4, [0] * 4, [10] * 4], atol=1e-9)
    azimuth = np.degrees(np.arctan2(d[:, 1], d[:, 0])).reshape(3, 4)[1]
    np.testing.assert_allclose(azimuth, [0, 90, 180, -90], atol=1e-9)


def test_a_sweep_of_one_wall_by_hand() -> None:
    """A wall at x = 5 m (reflectivity 0.8) and nothing else: every forward ray returns a point on it, at the
    range and with the intensity reflectivity × cos(incidence) that geometry says."""
    cid = p.connect(p.DIRECT)
    try:
        shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=[0.5, 20, 20], physicsClientId=cid)
        wall = p.createMultiBody(0, shape, basePosition=[5.5, 0, 0], physicsClientId=cid)
        lidar = LidarModel(
            beams=1, azimuths=12, fov_up=0.0, fov_down=0.0, range_noise=0.0, intensity_noise=0.0, dropout=0.0
        )
        pose = np.eye(4)
        pose[:3, 3] = [0.0, 0.0, 1.0]  # the sensor 1 m up: points stay in its frame
        reflectivity = np.zeros(wall + 1)
        reflectivity[wall] = 0.8
        sweep = cast_sweep(cid, lidar, pose, reflectivity, np.random.default_rng(0))
    finally:
        p.disconnect(cid)
    azimuth = np.degrees(np.arctan2(sweep.points[:, 1], sweep.points[:, 0]))
    np.testing.assert_allclose(np.sort(azimuth), [-60, -30, 0, 30, 60], atol=1e-4)  # the rays towards +x
    np.testing.assert_allclose(sweep.points[:, 0], 5.0, atol=1e-3)
    np.testing.assert_allclose(sweep.points[:, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(sweep.intensity, 0.8 * np.cos(np.radians(azimuth)), atol=1e-3)
    assert set(sweep.body.tolist()) == {wall}


def test_the_rig_cameras_look_outwards_with_consistent_extrinsics() -> None:
    rig = CameraRig(cameras=4, height=24, width=32)
    K = rig.camera.K
    for i in range(4):
        T = rig.lidar_to_camera(i)
        np.testing.assert_allclose(T @ rig.camera_to_lidar(i), np.eye(4), atol=1e-12)
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)  # rigid
        # a point 10 m out along camera i's azimuth, on its optical axis, lands on the principal point
        yaw, pitch = 2 * math.pi * i / 4, math.radians(rig.pitch_deg)
        centre = np.array([0.08 * math.cos(yaw), 0.08 * math.sin(yaw), -0.06])
        axis = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
        x = T @ np.append(centre + 10 * axis, 1.0)
        uvw = K @ x[:3]
        np.testing.assert_allclose(uvw[:2] / uvw[2], K[:2, 2], atol=1e-9)
        assert x[2] == pytest.approx(10.0)
    # a point to the LiDAR's left (+y) is in front of camera 1 (azimuth 90°) and behind camera 3
    left = np.array([0.0, 5.0, 0.0, 1.0])
    assert (rig.lidar_to_camera(1) @ left)[2] > 0 > (rig.lidar_to_camera(3) @ left)[2]


@pytest.fixture(scope="module")
def tiny_lidar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize_lidar(
        tmp_path_factory.mktemp("lidar") / "data", 2, 2, seed=3, image_size=(24, 32), lidar=TINY, cameras=2
    )


def test_the_dataset_is_written_in_the_rig_layout(tiny_lidar: Path) -> None:
    info = json.loads((tiny_lidar / "dataset.json").read_text())
    assert info["layout"] == "rig" and info["classes"] == list(CLASS_NAMES) and info["num_frames"] == 4
    rig = json.loads((tiny_lidar / "rig.json").read_text())
    assert sorted(rig["cameras"]) == ["cam_0", "cam_1"] and rig["points"]["columns"] == [
        "x",
        "y",
        "z",
        "intensity",
    ]
    cam = rig["cameras"]["cam_0"]
    assert np.array(cam["K"]).shape == (3, 3) and np.array(cam["lidar_to_camera"]).shape == (4, 4)
    assert cam["image_size"] == [24, 32]
    for scene in ("scene_0000", "scene_0001"):
        d = tiny_lidar / scene
        poses = np.loadtxt(d / "poses.txt").reshape(-1, 4, 4)
        assert poses.shape == (2, 4, 4)
        np.testing.assert_allclose(poses[:, 3], [[0, 0, 0, 1]] * 2)
        for k in range(2):
            pts = np.fromfile(d / "points" / f"{k:06d}.bin", dtype=np.float32).reshape(-1, 4)
            label = np.load(d / "labels" / f"{k:06d}.npy")
            assert label.dtype == np.int32 and label.shape == (len(pts),) and len(pts) > 0.5 * 8 * 128
            assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 1
            for c in ("cam_0", "cam_1"):
                assert (d / "images" / c / f"{k:06d}.png").is_file()


def test_returns_lie_on_the_surfaces_their_labels_name(tiny_lidar: Path) -> None:
    """Floor returns are at world height 0 and wall returns on the room's walls (poses.txt places them),
    within the range noise: geometry, poses and labels agree."""
    floor, wall = CLASS_NAMES.index("floor"), CLASS_NAMES.index("wall")
    d = tiny_lidar / "scene_0000"
    room = json.loads((d / "scene.json").read_text())["room"]
    sx, sy = room["half_size"]
    T = np.loadtxt(d / "poses.txt").reshape(-1, 4, 4)[1]
    pts = np.fromfile(d / "points" / "000001.bin", dtype=np.float32).reshape(-1, 4)[:, :3]
    label = np.load(d / "labels" / "000001.npy")
    world = pts @ T[:3, :3].T + T[:3, 3]
    assert (label == floor).sum() > 20 and (label == wall).sum() > 20
    assert np.abs(world[label == floor, 2]).max() < 0.06
    on_wall = np.minimum(np.abs(np.abs(world[:, 0]) - sx), np.abs(np.abs(world[:, 1]) - sy))
    assert on_wall[label == wall].max() < 0.06


def test_reflectivity_is_drawn_per_instance_not_per_class(tiny_lidar: Path) -> None:
    info = json.loads((tiny_lidar / "scene_0000" / "scene.json").read_text())
    walls = [i["instance"] for i in info["instances"] if i["class_name"] == "wall"]
    values = {info["reflectivity"][str(i)] for i in walls}
    assert len(walls) == 4 and len(values) == 4  # four walls, four reflectivities


def test_same_seed_same_bytes_and_the_cli(tiny_lidar: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    args = ["synth", "--lidar", "--out", str(out), "--scenes", "2", "--frames-per-scene", "2", "--seed", "3"]
    args += ["--height", "24", "--width", "32", "--cameras", "2", "--beams", "8", "--azimuths", "128"]
    assert main(args) == 0
    files = sorted(f.relative_to(tiny_lidar) for f in tiny_lidar.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(out) for f in out.rglob("*") if f.is_file())
    for f in files:
        assert (tiny_lidar / f).read_bytes() == (out / f).read_bytes(), f


def test_bad_lidar_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fov_down"):
        synthesize_lidar(tmp_path / "x", 1, 1, 0, lidar=LidarModel(fov_up=-20.0, fov_down=10.0))
    assert main(["synth", "--lidar", "--out", str(tmp_path / "y"), "--beams", "0"]) == 2


def test_the_embedded_default_is_rendered_once_and_reused(tmp_path: Path) -> None:
    kw = {"scenes": 1, "frames_per_scene": 1, "seed": 0, "image_size": (16, 24), "cache_dir": str(tmp_path)}
    root = ensure_synthetic_lidar(**kw, verbose=False)  # type: ignore[arg-type]
    stamp = (root / "dataset.json").stat().st_mtime_ns
    assert ensure_synthetic_lidar(**kw, verbose=False) == root  # type: ignore[arg-type]
    assert (root / "dataset.json").stat().st_mtime_ns == stamp and root.name.startswith("synth-lidar-")
    assert (root / "rig.json").is_file() and len(list((root / "scene_0000" / "points").iterdir())) == 1


def test_pretraining_runs_on_the_synthetic_lidar_rig(tiny_lidar: Path, tmp_path: Path) -> None:
    """``ppkt pretrain`` on rig-layout LiDAR data: cylindrical voxels, intensity, 2 cameras per sweep, the
    teacher cache per (frame, camera), and the held-out retrieval check."""
    out = tmp_path / "run"
    args = ["pretrain", "--out", str(out), f"data.root={tiny_lidar}", "data.layout=rig"]
    args += ["data.image_size=[24,32]", "data.voxel=cylindrical", "data.voxel_size=0.1"]
    args += ["data.features=[intensity,elevation]", "data.min_depth=0.3", f"data.cache_dir={tmp_path / 'c'}"]
    args += [
        "trainer.batch_size=2",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "trainer.threads=2",
    ]
    args += ["trainer.log_every_n_steps=1"]
    args += ["loss.num_pairs=128", "eval.retrieval_points=32", "teacher.layers=null"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_frames"] == 2 and m["heldout_frames"] == 2 and m["steps"] == 1
    assert math.isfinite(m["loss_initial"]) and 0 <= m["retrieval_top1_heldout"] <= 1
    assert m["teacher_cache"]["computed"] == 4 and m["retrieval_chance"] == pytest.approx(1 / 32)
    cached = list((tmp_path / "c").glob("teacher-*/*.pt"))
    assert len(cached) == 4 * 2  # one entry per (frame, camera)
