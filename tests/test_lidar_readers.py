"""LiDAR + camera readers on small datasets written to disk: KITTI object, KITTI odometry / SemanticKITTI,
the rig layout and nuScenes v1.0 tables; every bad input is a DataError naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ppkt.data.readers import is_lidar_layout, known_layouts, open_scans, open_scenes
from ppkt.data.types import Scan, ScanSource
from ppkt.errors import ConfigError, DataError

from .conftest import assert_mentions
from .lidar_fixtures import (
    KITTI_P2,
    KITTI_R0,
    KITTI_TR,
    NUSCENES_CAMERAS,
    kitti_points,
    kitti_poses,
    rig_points,
    write_image,
    write_kitti_object,
    write_kitti_raw,
    write_kitti_sequence,
    write_nuscenes,
    write_rig,
)


def _h(M: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[: M.shape[0], : M.shape[1]] = M
    return T


def _project(K: np.ndarray, T: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    cam = xyz @ T[:3, :3].T + T[:3, 3]
    uvw = cam @ K.T
    return uvw[:, :2] / uvw[:, 2:]


# ---------------------------------------------------------------- registry


def test_lidar_layouts_are_registered_and_kept_apart(tmp_path: Path) -> None:
    for layout in ("kitti", "kitti_raw", "kitti_odometry", "semantickitti", "nuscenes", "rig"):
        assert layout in known_layouts() and is_lidar_layout(layout)
    assert not is_lidar_layout("generic")
    write_kitti_object(tmp_path)
    with pytest.raises(ConfigError, match="LiDAR"):
        open_scenes(tmp_path, "kitti")
    with pytest.raises(ConfigError, match="RGB-D"):
        open_scans(tmp_path, "generic")
    with pytest.raises(ConfigError, match="unknown data layout"):
        open_scans(tmp_path, "lidar")


# ---------------------------------------------------------------- KITTI object


def test_kitti_object_reads_scans_with_the_documented_projection(tmp_path: Path) -> None:
    write_kitti_object(tmp_path, split="training")
    write_kitti_object(tmp_path, ids=("000007",), split="testing")
    splits = open_scans(tmp_path, "kitti")
    assert [s.scene for s in splits] == ["testing", "training"] and isinstance(splits[0], ScanSource)
    assert splits[0].cameras == ["image_2"]
    assert splits[1].frames == ["000000", "000001"]
    scan = splits[1].read(1)
    expected = kitti_points(seed=1)
    np.testing.assert_array_equal(scan.points, expected[:, :3])
    np.testing.assert_array_equal(scan.intensity, expected[:, 3])
    assert scan.cameras == ["image_2"] and scan.images[0].shape == (20, 40, 3) and scan.label is None
    # K · (lidar_to_camera · x) is P2 · R0_rect · Tr_velo_to_cam · x (KITTI's documented formula)
    uvw = (KITTI_P2 @ _h(KITTI_R0) @ _h(KITTI_TR) @ np.c_[expected[:, :3], np.ones(len(expected))].T).T
    np.testing.assert_allclose(
        _project(scan.K[0], scan.lidar_to_camera[0], scan.points), uvw[:, :2] / uvw[:, 2:], rtol=1e-12
    )
    np.testing.assert_allclose(scan.K[0], KITTI_P2[:, :3])
    assert open_scans(tmp_path / "training", "kitti")[0].frames == ["000000", "000001"]  # a split folder


@pytest.mark.parametrize(
    ("damage", "file", "parts"),
    [
        ("missing calib", "calib/000000.txt", ["missing calibration file"]),
        ("no R0_rect", "calib/000000.txt", ["R0_rect"]),
        ("short P2", "calib/000000.txt", ["'P2'", "11 values"]),
        ("text P2", "calib/000000.txt", ["'P2'", "not a list of numbers"]),
        ("reflection", "calib/000000.txt", ["'Tr_velo_to_cam'", "reflection"]),
        ("width 5", "velodyne/000000.bin", ["multiple of 16"]),
        ("missing image", "image_2/000000.png", ["missing color image"]),
        ("corrupt image", "image_2/000000.png", ["corrupt or unreadable"]),
    ],
)
def test_kitti_object_errors_name_the_file(tmp_path: Path, damage: str, file: str, parts: list[str]) -> None:
    folder = write_kitti_object(tmp_path)
    path = folder / file
    calib = path.read_text() if path.suffix == ".txt" else ""
    if damage == "missing calib" or damage == "missing image":
        path.unlink()
    elif damage == "no R0_rect":
        path.write_text("".join(line + "\n" for line in calib.splitlines() if not line.startswith("R0_rect")))
    elif damage == "short P2":
        p2 = calib.splitlines()[1]
        path.write_text(calib.replace(p2, p2.rsplit(" ", 1)[0]))
    elif damage == "text P2":
        path.write_text(calib.replace("P2: ", "P2: abc "))
    elif damage == "reflection":
        bad = KITTI_TR.copy()
        bad[0] *= -1
        path.write_text(
            calib.replace(
                calib.splitlines()[3], "Tr_velo_to_cam: " + " ".join(str(v) for v in bad.reshape(-1))
            )
        )
    elif damage == "width 5":
        np.zeros((7, 5), np.float32).tofile(path)
    elif damage == "corrupt image":
        path.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as e:
        open_scans(tmp_path, "kitti")[0].read(0)
    assert_mentions(e.value, path, *parts)


def test_kitti_object_root_without_scans_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        open_scans(tmp_path, "kitti")
    assert_mentions(e.value, tmp_path, "velodyne")
    (tmp_path / "training" / "velodyne").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        open_scans(tmp_path, "kitti")
    assert_mentions(e.value, tmp_path / "training" / "velodyne", "no LiDAR scans")


def test_kitti_raw_reads_drives_with_the_devkit_projection(tmp_path: Path) -> None:
    date = write_kitti_raw(tmp_path)
    drives = open_scans(tmp_path, "kitti_raw")
    assert [d.scene for d in drives] == ["2011_09_26_drive_0001_sync", "2011_09_26_drive_0005_sync"]
    assert drives[0].frames == ["0000000000", "0000000001"]
    assert [d.scene for d in open_scans(date / "2011_09_26_drive_0005_sync", "kitti_raw")] == [
        drives[1].scene
    ]
    scan = drives[1].read(1)
    pts = kitti_points(seed=1)
    np.testing.assert_array_equal(scan.points, pts[:, :3])
    # P_rect_02 · R_rect_00 · [R | T] · x
    uvw = (KITTI_P2 @ _h(KITTI_R0) @ _h(KITTI_TR) @ np.c_[pts[:, :3], np.ones(len(pts))].T).T
    uv = _project(scan.K[0], scan.lidar_to_camera[0], scan.points)
    np.testing.assert_allclose(uv, uvw[:, :2] / uvw[:, 2:], rtol=1e-12)
    assert scan.pose is None and scan.label is None and scan.cameras == ["image_2"]
    (date / "calib_velo_to_cam.txt").write_text("calib_time: 15-Mar-2012 11:37:16\nR: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(DataError) as e:
        drives[0].read(0)
    assert_mentions(e.value, date / "calib_velo_to_cam.txt", "'T'")


# ---------------------------------------------------------------- KITTI odometry / SemanticKITTI


def test_semantickitti_maps_labels_and_converts_poses_to_the_lidar(tmp_path: Path) -> None:
    folder = write_kitti_sequence(tmp_path, "00", n=3)
    write_kitti_sequence(tmp_path, "08", n=1)
    seqs = open_scans(tmp_path, "semantickitti")
    assert [s.scene for s in seqs] == ["00", "08"] and seqs[0].frames == ["000000", "000001", "000002"]
    scan = seqs[0].read(2)
    pts = kitti_points(seed=2)
    # road (40) → 9, car (10) → 1, moving car (252) → car 1, building (50) → 13; the instance bits are dropped
    expected = np.where(pts[:, 2] < -1, 9, np.where(pts[:, 0] < 6, 1, np.where(pts[:, 0] > 11, 1, 13)))
    np.testing.assert_array_equal(scan.label, expected)
    assert scan.label.dtype == np.int64 and scan.label_path == folder / "labels" / "000002.label"
    Tr = _h(KITTI_R0 @ KITTI_TR)
    np.testing.assert_allclose(scan.pose, np.linalg.inv(Tr) @ _h(kitti_poses(3)[2]) @ Tr, atol=1e-12)
    uvw = (KITTI_P2 @ Tr @ np.c_[pts[:, :3], np.ones(len(pts))].T).T
    np.testing.assert_allclose(
        _project(scan.K[0], scan.lidar_to_camera[0], scan.points), uvw[:, :2] / uvw[:, 2:], rtol=1e-12
    )
    # kitti_odometry reads the same sequence without labels; the sequence folder itself is a root too
    odo = open_scans(folder, "kitti_odometry")
    assert len(odo) == 1 and odo[0].read(0).label is None


def test_semantickitti_without_images_reads_lidar_only_scans(tmp_path: Path) -> None:
    write_kitti_sequence(tmp_path, "00", n=2, images=False, poses=False)
    scan = open_scans(tmp_path / "sequences", "semantickitti")[0].read(0)
    assert scan.cameras == [] and scan.images == [] and scan.pose is None and scan.label is not None
    assert open_scans(tmp_path / "sequences", "semantickitti")[0].cameras == []


@pytest.mark.parametrize("damage", ["count", "unknown id", "no calib", "short poses"])
def test_semantickitti_errors_name_the_file(tmp_path: Path, damage: str) -> None:
    folder = write_kitti_sequence(tmp_path, "00", n=2)
    label = folder / "labels" / "000001.label"
    if damage == "count":
        np.fromfile(label, dtype="<u4")[:-3].tofile(label)
        path, parts = label, ["217 labels for 220 points"]
    elif damage == "unknown id":
        raw = np.fromfile(label, dtype="<u4")
        raw[:2] = 77
        raw.tofile(label)
        path, parts = label, ["[77]"]
    elif damage == "no calib":
        (folder / "calib.txt").unlink()
        path, parts = folder / "calib.txt", ["missing calibration file"]
    else:
        (folder / "poses.txt").write_text((folder / "poses.txt").read_text().splitlines()[0] + "\n")
        path, parts = folder / "poses.txt", ["no pose for scan 000001"]
    with pytest.raises(DataError) as e:
        open_scans(tmp_path, "semantickitti")[0].read(1)
    assert_mentions(e.value, path, *parts)


# ---------------------------------------------------------------- rig


def test_rig_reads_every_point_format_labels_and_poses(tmp_path: Path) -> None:
    root = write_rig(tmp_path / "rig")
    scenes = open_scans(root, "rig")
    assert [s.scene for s in scenes] == ["street_a", "street_b"] and scenes[0].frames == ["0000", "0001"]
    for i in range(2):
        scan = scenes[1].read(i)
        pts = rig_points(seed=10 + i)
        np.testing.assert_array_equal(scan.points, pts[:, :3])
        np.testing.assert_array_equal(scan.intensity, pts[:, 3])
        np.testing.assert_array_equal(scan.label, 1 + np.arange(120) % 3)
        assert scan.pose is not None and scan.pose[0, 3] == i
    assert scan.cameras == scenes[1].cameras == ["front", "left"]
    assert [im.shape for im in scan.images] == [(20, 40, 3), (30, 30, 3)]
    assert scan.calib_path == root / "rig.json"
    # a .ply scene with its own rig.json (one camera), no labels, no poses
    from ppkt.data.io.ply import write_ply

    own = tmp_path / "rig" / "yard"
    (own / "points").mkdir(parents=True)
    pts = rig_points(seed=3)
    write_ply(
        own / "points" / "a.ply", {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3]}
    )
    write_image(own / "images" / "left" / "a.jpg", (30, 30))
    cams = json.loads((root / "rig.json").read_text())["cameras"]
    (own / "rig.json").write_text(json.dumps({"cameras": {"left": cams["left"]}}))
    yard = open_scans(root, "rig")[2].read(0)
    assert yard.cameras == ["left"] and yard.label is None and yard.pose is None
    np.testing.assert_allclose(yard.points, pts[:, :3])
    np.testing.assert_allclose(yard.intensity, pts[:, 3])


def test_write_rig_round_trips(tmp_path: Path) -> None:
    from ppkt.data.readers.rig import RigCamera, read_rig, write_rig

    T = np.eye(4)
    T[:3, 3] = [0.1, -0.2, 0.3]
    K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
    cams = [RigCamera("a", K, T, (48, 64))]
    cams.append(RigCamera("b", cams[0].K, np.eye(4), None))
    rig = read_rig(write_rig(tmp_path / "rig.json", cams, ("x", "y", "z", "intensity", "ring")))
    assert [c.name for c in rig.cameras] == ["a", "b"] and rig.columns == ("x", "y", "z", "intensity", "ring")
    np.testing.assert_array_equal(rig.cameras[0].lidar_to_camera, T)
    np.testing.assert_array_equal(rig.cameras[0].K, cams[0].K)
    assert rig.cameras[0].image_size == (48, 64) and rig.cameras[1].image_size is None
    bad = [RigCamera("c", cams[0].K, 2 * np.eye(4), None)]
    with pytest.raises(DataError, match="not a rigid"):
        write_rig(tmp_path / "bad.json", bad)


@pytest.mark.parametrize(
    "damage",
    [
        "no rig",
        "garbled rig",
        "bad K",
        "not rigid",
        "image size",
        "missing image",
        "label count",
        "twice",
        "columns",
        "poses",
    ],
)
def test_rig_errors_name_the_file(tmp_path: Path, damage: str) -> None:
    root = write_rig(tmp_path / "rig", scenes=("s",))
    rig = root / "rig.json"
    doc = json.loads(rig.read_text())
    frame = 0
    if damage == "no rig":
        rig.unlink()
        path, parts = rig, ["missing rig file"]
    elif damage == "garbled rig":
        rig.write_text("{cameras")
        path, parts = rig, ["garbled"]
    elif damage == "bad K":
        doc["cameras"]["left"]["K"] = [[1, 0], [0, 1]]
        rig.write_text(json.dumps(doc))
        path, parts = rig, ["'left'", "'K'", "3x3"]
    elif damage == "not rigid":
        doc["cameras"]["front"]["lidar_to_camera"][0][0] = 2.0
        rig.write_text(json.dumps(doc))
        path, parts = rig, ["'front'", "not a rigid"]
    elif damage == "image size":
        doc["cameras"]["front"]["image_size"] = [21, 40]
        rig.write_text(json.dumps(doc))
        path, parts = root / "s" / "images" / "front" / "0000.png", ["20x40", "21x40", rig]
    elif damage == "missing image":
        path = root / "s" / "images" / "left" / "0001.png"
        path.unlink()
        frame, parts = 1, ["missing color image"]
    elif damage == "label count":
        path = root / "s" / "labels" / "0000.npy"
        np.save(path, np.ones(7, dtype=np.int64))
        parts = ["7 labels for 120 points"]
    elif damage == "twice":
        rig_points().tofile(root / "s" / "points" / "0001.bin")
        path, parts = root / "s" / "points" / "0001.npy", ["two point files", "0001.bin"]
    elif damage == "columns":
        path = root / "s" / "points" / "0000.bin"
        np.zeros((10, 3), np.float32).tofile(path)  # 3 columns where rig.json says 4
        parts = ["multiple of 16"]
    else:
        path = root / "s" / "poses.txt"
        path.write_text(path.read_text().splitlines()[0] + "\n")
        parts = ["1 poses for 2 frames"]
    with pytest.raises(DataError) as e:
        open_scans(root, "rig")[0].read(frame)
    assert_mentions(e.value, path, *parts)


# ---------------------------------------------------------------- nuScenes


def test_nuscenes_reads_keyframes_with_the_ego_motion_chain(tmp_path: Path) -> None:
    w = write_nuscenes(tmp_path, {"scene-0061": 2, "scene-0103": 1})
    scenes = open_scans(tmp_path, "nuscenes")
    assert [s.scene for s in scenes] == ["scene-0061", "scene-0103"]
    assert scenes[0].frames == ["smp_0", "smp_1"] and scenes[1].frames == ["smp_2"]
    assert open_scans(tmp_path / "v1.0-mini", "nuscenes")[0].frames == [
        "smp_0",
        "smp_1",
    ]  # the version folder
    records = {r["token"]: r for r in w.tables["sample_data"]}
    channel = {r["token"]: r["sensor_token"][2:] for r in w.tables["calibrated_sensor"]}
    for s, sample in ((0, "smp_0"), (0, "smp_1"), (1, "smp_2")):
        scan: Scan = scenes[s].read(scenes[s].frames.index(sample))
        mine = {
            channel[r["calibrated_sensor_token"]]: t
            for t, r in records.items()
            if r["sample_token"] == sample and r["is_key_frame"]
        }
        lidar = w.truth[mine["LIDAR_TOP"]]
        lidar_to_global = lidar["ego_to_global"] @ lidar["sensor_to_ego"]
        np.testing.assert_allclose(scan.pose, lidar_to_global, atol=1e-9)
        assert scan.cameras == list(NUSCENES_CAMERAS) and all(im.shape == (16, 32, 3) for im in scan.images)
        for c, T in zip(scan.cameras, scan.lidar_to_camera):
            cam = w.truth[mine[c]]
            expected = (
                np.linalg.inv(cam["sensor_to_ego"]) @ np.linalg.inv(cam["ego_to_global"]) @ lidar_to_global
            )
            np.testing.assert_allclose(T, expected, atol=1e-9)
        raw = np.fromfile(tmp_path / "samples" / "LIDAR_TOP" / f"{sample}.pcd.bin", dtype=np.float32).reshape(
            -1, 5
        )
        np.testing.assert_array_equal(scan.points, raw[:, :3])
        np.testing.assert_allclose(scan.intensity, raw[:, 3] / 255)
        # lidarseg category i = point index mod 32, through the 16-class map (the first keyframe's file
        # from lidarseg.json, the others' by the file-naming rule)
        from ppkt.data.protocols.nuscenes import LIDARSEG_LOOKUP

        np.testing.assert_array_equal(scan.label, LIDARSEG_LOOKUP[np.arange(len(raw)) % 32])
        # the car moved between the exposures: CAM_FRONT_LEFT's ego pose is 0.5 m from the LiDAR's
        shift = w.truth[mine["CAM_FRONT_LEFT"]]["ego_to_global"][:3, 3] - lidar["ego_to_global"][:3, 3]
        np.testing.assert_allclose(np.linalg.norm(shift), 0.5, rtol=1e-9)


@pytest.mark.parametrize(
    "damage",
    [
        "missing table",
        "garbled table",
        "missing camera",
        "width",
        "bad quaternion",
        "two versions",
        "label count",
    ],
)
def test_nuscenes_errors_name_the_file(tmp_path: Path, damage: str) -> None:
    w = write_nuscenes(tmp_path)
    tables = tmp_path / "v1.0-mini"
    read_index = 0
    if damage == "missing table":
        path = tables / "ego_pose.json"
        path.unlink()
        parts = ["missing nuScenes table"]
    elif damage == "garbled table":
        path = tables / "sample.json"
        path.write_text('[{"token": "smp_0", ')
        parts = ["garbled"]
    elif damage == "missing camera":
        path = tables / "sample_data.json"
        drop = next(
            r
            for r in w.tables["sample_data"]
            if r["sample_token"] == "smp_1" and r["filename"].startswith("samples/CAM_BACK/")
        )
        path.write_text(json.dumps([r for r in w.tables["sample_data"] if r is not drop]))
        parts = ["smp_1", "CAM_BACK"]
    elif damage == "width":
        path = tmp_path / "samples" / "LIDAR_TOP" / "smp_0.pcd.bin"
        np.zeros((9, 4), np.float32).tofile(path)
        parts = ["multiple of 20"]
    elif damage == "bad quaternion":
        path = tables / "ego_pose.json"
        w.tables["ego_pose"][0]["rotation"] = [0, 0, 0, 0]
        path.write_text(json.dumps(w.tables["ego_pose"]))
        parts = ["quaternion"]
    elif damage == "two versions":
        shutil.copytree(tables, tmp_path / "v1.0-trainval")
        path, parts = tmp_path, ["v1.0-mini", "v1.0-trainval"]
    else:
        seg = w.tables["lidarseg"][0]["filename"]
        path = tmp_path / str(seg)
        np.zeros(5, np.uint8).tofile(path)
        parts = ["5 labels for 600 points"]
    with pytest.raises(DataError) as e:
        open_scans(tmp_path, "nuscenes")[0].read(read_index)
    assert_mentions(e.value, path, *parts)
