"""Tests of the ScanNet reader: colour→depth registration, invalid poses, geometry, PLY and mesh labels."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.data.fusion import load_or_fuse, voxel_downsample
from ppkt.data.io.ply import read_ply_vertices, write_ply
from ppkt.data.pairing import frame_to_sample
from ppkt.data.readers import open_scenes
from ppkt.data.readers.color_registration import register_color
from ppkt.data.readers.scannet import (
    SCANNET_CLASSES,
    SCANNET_NYU40_IDS,
    ScanNetScene,
    list_scannet_scenes,
    nyu40_to_benchmark,
)
from ppkt.data.types import FrameSource
from ppkt.errors import ConfigError, DataError

#: depth 8×12, colour 20×30; registration maps depth (u, v) to colour (2u − 0.3, 2v + 2.7)
H, W = 8, 12
HC, WC = 20, 30
K_DEPTH = np.array([[10.0, 0, 5.5], [0, 10.0, 3.5], [0, 0, 1]])
K_COLOR = np.array([[20.0, 0, 10.7], [0, 20.0, 9.7], [0, 0, 1]])
#: the first depth column whose colour comes from the blue right half (colour columns >= 15)
FIRST_BLUE = 8
SCENE = "scene0000_00"


def _k4(K: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = K
    return out


def _down_pose(height: float, yaw: float = 0.0, xy: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A camera ``height`` m above the floor z = 0 looking straight down, turned by ``yaw`` about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = [xy[0], xy[1], height]
    return T


def _color_pattern() -> np.ndarray:
    """Left half red, right half blue, green = 10 × row (at the colour resolution)."""
    img = np.zeros((HC, WC, 3), np.uint8)
    img[:, : WC // 2, 0] = 255
    img[:, WC // 2 :, 2] = 255
    img[:, :, 1] = (10 * np.arange(HC))[:, None]
    return img


#: frame name -> (camera height = depth in metres, yaw); frame "2" gets a -inf pose
FRAMES: dict[str, tuple[float, float]] = {
    "0": (1.5, 0.0),
    "1": (2.0, 0.5),
    "2": (1.0, 0.0),
    "10": (1.25, -1.0),
}


def _write_frame(scene: Path, name: str, height: float, yaw: float) -> None:
    Image.fromarray(_color_pattern()).save(scene / "color" / f"{name}.jpg", quality=100, subsampling=0)
    depth = np.full((H, W), round(height * 1000), np.uint16)
    depth[0, 0] = 0
    Image.fromarray(depth).save(scene / "depth" / f"{name}.png")
    pose = np.full((4, 4), -np.inf) if name == "2" else _down_pose(height, yaw, (0.3 * yaw, 1.0))
    np.savetxt(scene / "pose" / f"{name}.txt", pose)


def make_scene(root: Path, name: str = SCENE) -> Path:
    """A tiny exported ScanNet scene of the floor z = 0 (frames of :data:`FRAMES`)."""
    scene = root / name
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene / sub).mkdir(parents=True, exist_ok=True)
    np.savetxt(scene / "intrinsic" / "intrinsic_depth.txt", _k4(K_DEPTH))
    np.savetxt(scene / "intrinsic" / "intrinsic_color.txt", _k4(K_COLOR))
    for frame, (height, yaw) in FRAMES.items():
        _write_frame(scene, frame, height, yaw)
    return scene


def open_scene(scene: Path, **kwargs: Any) -> ScanNetScene:
    """Open the scene, expecting exactly one warning about the one invalid pose."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = ScanNetScene(scene, **kwargs)
    messages = [str(w.message) for w in caught]
    assert messages == [f"{SCENE}: skipping 1 of 4 frames with invalid (non-finite) poses: pose/2.txt"]
    return s


def test_frames_skip_invalid_poses_and_read(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    s = open_scene(scene)
    assert isinstance(s, FrameSource)
    assert s.scene == SCENE and s.frames == ["0", "1", "10"] and len(s) == 3
    fr = s.read(2)
    assert fr.name == "10" and fr.scene == SCENE
    assert fr.color.shape == (H, W, 3) and fr.color.dtype == np.uint8
    assert fr.depth.shape == (H, W) and fr.depth.dtype == np.float32
    assert fr.depth[0, 0] == 0.0 and fr.depth[1, 1] == pytest.approx(1.25)
    np.testing.assert_allclose(fr.K, K_DEPTH)
    np.testing.assert_allclose(fr.pose, _down_pose(1.25, -1.0, (-0.3, 1.0)))
    assert fr.color_path == scene / "color" / "10.jpg" and fr.depth_path == scene / "depth" / "10.png"
    assert fr.pose_path == scene / "pose" / "10.txt" and fr.label is None
    assert s.frame_files("1")[:3] == [scene / "color/1.jpg", scene / "depth/1.png", scene / "pose/1.txt"]
    assert s.describe()["reader"] == "scannet"
    with pytest.raises(IndexError):
        s.read(3)


def test_many_invalid_poses_are_counted_in_one_warning(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    for i in range(3, 10):
        _write_frame(scene, str(i), 1.0, 0.0)
        np.savetxt(scene / "pose" / f"{i}.txt", np.full((4, 4), np.nan))
    with pytest.warns(UserWarning, match=r"skipping 8 of 11 frames .*pose/2.txt, pose/3.txt.*\(3 more\)"):
        s = ScanNetScene(scene)
    assert s.frames == ["0", "1", "10"]
    for name in ("0", "1", "10"):
        np.savetxt(scene / "pose" / f"{name}.txt", np.full((4, 4), -np.inf))
    with pytest.raises(DataError, match="no frames left"), pytest.warns(UserWarning):
        ScanNetScene(scene)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_colour_is_registered_to_depth(tmp_path: Path, interpolation: str) -> None:
    s = open_scene(make_scene(tmp_path), interpolation=interpolation)
    color = s.read(0).color.astype(int)
    tol = 8  # JPEG
    red, blue = color[:, :FIRST_BLUE], color[:, FIRST_BLUE:]
    assert (np.abs(red[..., 0] - 255) <= tol).all() and (red[..., 2] <= tol).all()
    assert (np.abs(blue[..., 2] - 255) <= tol).all() and (blue[..., 0] <= tol).all()
    # green = 10 × colour row; depth row v samples colour row 2v + 2.7 (nearest: 2v + 3)
    v = np.arange(H)
    expected = 10 * (2 * v + 2.7) if interpolation == "bilinear" else 10 * (2 * v + 3)
    assert np.abs(color[..., 1] - expected[:, None]).max() <= 3


def test_register_color_exact() -> None:
    pattern = _color_pattern()
    out = register_color(pattern, K_COLOR, K_DEPTH, (H, W))
    assert out.shape == (H, W, 3)
    assert (out[:, :FIRST_BLUE, 0] == 255).all() and (out[:, FIRST_BLUE:, 0] == 0).all()
    np.testing.assert_array_equal(out[:, 0, 1], np.rint(10 * (2 * np.arange(H) + 2.7)))
    # identical intrinsics and size: the image itself
    same = register_color(pattern, K_COLOR, K_COLOR, (HC, WC))
    np.testing.assert_array_equal(same, pattern)
    np.testing.assert_array_equal(register_color(pattern, K_COLOR, K_COLOR, (HC, WC), "nearest"), pattern)


def test_backprojected_points_lie_on_the_floor(tmp_path: Path) -> None:
    s = open_scene(make_scene(tmp_path))
    for i, name in enumerate(s.frames):
        sample = frame_to_sample(s.read(i))
        assert sample.points.shape[0] == H * W - 1
        assert float(sample.points[:, 2].abs().max()) < 1e-5, name
        height, yaw = FRAMES[name]
        # the centre of the depth image looks straight down at the point below the camera
        centre = (sample.pair_uv[:, 0] == 5) & (sample.pair_uv[:, 1] == 3)
        p = sample.points[centre][0]
        K_inv_ray = np.array([(5 - 5.5) / 10, (3 - 3.5) / 10, 1.0]) * height
        expected = _down_pose(height, yaw, (0.3 * yaw, 1.0)) @ np.append(K_inv_ray, 1.0)
        np.testing.assert_allclose(p.numpy(), expected[:3], atol=1e-5)


def test_layout_registry_and_scene_listing(tmp_path: Path) -> None:
    make_scene(tmp_path / "data", "scene0010_00")
    make_scene(tmp_path / "data", "scene0002_01")
    (tmp_path / "data" / "notes").mkdir()
    assert [p.name for p in list_scannet_scenes(tmp_path / "data")] == ["scene0002_01", "scene0010_00"]
    one = tmp_path / "data" / "scene0002_01"
    assert list_scannet_scenes(one) == [one]
    with pytest.warns(UserWarning, match="skipping 1 of 4"):
        scenes = open_scenes(tmp_path / "data", "scannet")
    assert [type(s).__name__ for s in scenes] == ["ScanNetScene", "ScanNetScene"]
    assert [len(s) for s in scenes] == [3, 3]
    with pytest.raises(DataError, match="no ScanNet scene folders"):
        list_scannet_scenes(tmp_path / "data" / "notes")
    with pytest.raises(ConfigError, match="interpolation"):
        ScanNetScene(one, interpolation="cubic")  # type: ignore[arg-type]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FRAME: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "missing color": (lambda s: (s / "color/0.jpg").unlink(), "color/0.jpg", "missing color"),
    "corrupt color": (lambda s: (s / "color/0.jpg").write_bytes(b"not a jpeg"), "color/0.jpg", "corrupt"),
    "corrupt depth": (lambda s: _truncate(s / "depth/0.png"), "depth/0.png", "corrupt"),
    "8-bit depth": (
        lambda s: Image.fromarray(np.full((H, W), 9, np.uint8)).save(s / "depth/0.png"),
        "depth/0.png",
        "uint16",
    ),
    "no valid depth": (
        lambda s: Image.fromarray(np.zeros((H, W), np.uint16)).save(s / "depth/0.png"),
        "depth/0.png",
        "no valid depth",
    ),
    # a colour image resized without scaling intrinsic_color.txt: half the depth pixels would be border colour
    "resized color": (
        lambda s: Image.fromarray(_color_pattern()[::2, ::2].copy()).save(s / "color/0.jpg"),
        "color/0.jpg",
        "of the depth pixels map outside this 15x10 colour image",
    ),
    "missing pose": (lambda s: (s / "pose/0.txt").unlink(), "pose/0.txt", "missing pose"),
    "scaled pose": (lambda s: np.savetxt(s / "pose/0.txt", 1.1 * _down_pose(1.0)), "pose/0.txt", "rigid"),
    "text pose": (lambda s: (s / "pose/0.txt").write_text("1 0 0 x\n"), "pose/0.txt", "malformed pose"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAME))
def test_bad_frame_names_file_and_problem(tmp_path: Path, case: str) -> None:
    scene = make_scene(tmp_path)
    damage, filename, problem = BAD_FRAME[case]
    damage(scene)
    with pytest.raises(DataError) as info:
        open_scene(scene).read(0)
    message = str(info.value)
    assert filename in message and problem in message, message


def test_bad_intrinsics_name_the_file(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    (scene / "intrinsic" / "intrinsic_depth.txt").unlink()
    with pytest.raises(DataError, match=r"intrinsic_depth.txt: missing intrinsics"):
        ScanNetScene(scene)
    with pytest.raises(DataError, match="no ScanNet scene folders"):
        list_scannet_scenes(tmp_path)
    np.savetxt(scene / "intrinsic" / "intrinsic_depth.txt", _k4(K_DEPTH))
    (scene / "intrinsic" / "intrinsic_color.txt").write_text("1 2\n")
    with pytest.raises(DataError, match=r"intrinsic_color.txt: malformed intrinsics"):
        ScanNetScene(scene)
    with pytest.raises(DataError, match="scene folder does not exist"):
        ScanNetScene(tmp_path / "missing")


# ------------------------------------------------------------------------------------------- PLY labels


def _write_mesh(scene: Path, xyz: np.ndarray, rgb: np.ndarray, nyu40: np.ndarray) -> None:
    n = xyz.shape[0]
    verts = {"x": xyz[:, 0].astype(np.float32), "y": xyz[:, 1].astype(np.float32)}
    verts |= {"z": xyz[:, 2].astype(np.float32)}
    colours = {c: rgb[:, k].astype(np.uint8) for k, c in enumerate(("red", "green", "blue"))}
    alpha = {"alpha": np.full(n, 255, np.uint8)}
    faces = np.arange(3 * (n // 3)).reshape(-1, 3)
    write_ply(scene / f"{scene.name}_vh_clean_2.ply", verts | colours | alpha, faces)
    write_ply(
        scene / f"{scene.name}_vh_clean_2.labels.ply",
        verts | colours | alpha | {"label": nyu40.astype(np.uint16)},
        faces,
    )


def test_nyu40_mapping() -> None:
    ids = np.array([1, 2, 3, 13, 14, 24, 39, 40, 0, 255, -1])
    assert nyu40_to_benchmark(ids).tolist() == [1, 2, 3, 0, 13, 15, 20, 0, 0, 0, 0]
    assert nyu40_to_benchmark(np.array(SCANNET_NYU40_IDS)).tolist() == list(range(1, 21))
    assert len(SCANNET_CLASSES) == 21 and SCANNET_CLASSES[0] == "unlabelled"
    assert SCANNET_CLASSES[15] == "refrigerator" and SCANNET_CLASSES[20] == "otherfurniture"
    assert SCANNET_CLASSES[16] == "shower curtain"


@pytest.mark.parametrize("fmt", ["binary_little_endian", "ascii"])
def test_ply_round_trip(tmp_path: Path, fmt: Any) -> None:
    verts = {
        "x": np.array([0.5, -1.25, 3.0], np.float32),
        "y": np.array([1.0, 2.0, 3.0], np.float32),
        "red": np.array([0, 128, 255], np.uint8),
        "label": np.array([1, 40, 65535], np.uint16),
        "w": np.array([1.5, 2.5, -3.5], np.float64),
    }
    path = write_ply(tmp_path / "a.ply", verts, np.array([[0, 1, 2]]), fmt=fmt)
    got = read_ply_vertices(path)
    assert list(got) == list(verts)
    for name, a in verts.items():
        assert got[name].dtype == a.dtype, name
        np.testing.assert_array_equal(got[name], a)


def test_labelled_cloud_maps_nyu40_to_benchmark(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    s = open_scene(scene)
    assert s.labelled_cloud() is None  # no PLY files
    xyz = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 2, 2]])
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [51, 102, 153], [0, 0, 0]])
    _write_mesh(scene, xyz, rgb, np.array([1, 5, 13, 39, 0]))
    cloud = s.labelled_cloud()
    assert cloud is not None and cloud.name == SCENE
    assert cloud.num_classes == 21 and cloud.class_names == SCANNET_CLASSES
    np.testing.assert_allclose(cloud.xyz, xyz)
    np.testing.assert_allclose(cloud.rgb, rgb / 255.0, atol=1e-7)
    assert cloud.label.tolist() == [1, 5, 0, 20, 0]
    assert cloud.xyz.dtype == np.float32 and cloud.rgb.dtype == np.float32 and cloud.label.dtype == np.int64


def _replace_in_header(path: Path, old: bytes, new: bytes) -> None:
    path.write_bytes(path.read_bytes().replace(old, new, 1))


BAD_PLY: dict[str, tuple[Callable[[Path], None], str]] = {
    "not a ply": (lambda p: p.write_bytes(b"solid cube\n"), "does not start with 'ply'"),
    "no end_header": (lambda p: p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\n"), "end_header"),
    "bad format": (lambda p: _replace_in_header(p, b"binary_little_endian", b"binary_middle"), "format"),
    "bad type": (lambda p: _replace_in_header(p, b"property float x", b"property float128 x"), "type"),
    "bad count": (lambda p: _replace_in_header(p, b"element vertex 5", b"element vertex five"), "element"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-20]), "truncated PLY"),
    "vertex count": (
        lambda p: write_ply(p, {"x": np.zeros(4, np.float32), "label": np.ones(4, np.uint16)}),
        "4 labelled vertices, but the mesh",
    ),
    "no label": (
        lambda p: _replace_in_header(p, b"property ushort label", b"property ushort lbl"),
        "no 'label'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PLY))
def test_malformed_ply_names_the_file(tmp_path: Path, case: str) -> None:
    scene = make_scene(tmp_path)
    xyz = np.arange(15, dtype=np.float64).reshape(5, 3)
    _write_mesh(scene, xyz, np.zeros((5, 3)), np.ones(5))
    labels = scene / f"{SCENE}_vh_clean_2.labels.ply"
    damage, problem = BAD_PLY[case]
    damage(labels)
    with pytest.raises(DataError) as info:
        open_scene(scene).labelled_cloud()
    message = str(info.value)
    assert labels.name in message and problem in message, message


def test_load_or_fuse_uses_the_mesh_labels(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    cache = tmp_path / "cache"
    # without PLY files: the frames are fused, unlabelled
    fused = load_or_fuse(open_scene(scene), voxel_size=0.5, cache_dir=cache)
    assert (fused.label == 0).all() and np.abs(fused.xyz[:, 2]).max() < 1e-5
    # voxel (0,0,0): wall, wall, floor → wall; voxel (2,0,0): chair (5), table (7) → tie → chair;
    # voxel (0,2,0): only an unmapped NYU40 id (13) → 0
    xyz = np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.3, 0.3, 0.3], [1.1, 0.2, 0.2], [1.2, 0.2, 0.2]])
    xyz = np.vstack([xyz, [[0.2, 1.2, 0.2]]])
    rgb = np.array([[255, 0, 0], [0, 0, 0], [0, 0, 0], [0, 255, 0], [0, 51, 0], [0, 0, 255]])
    _write_mesh(scene, xyz, rgb, np.array([1, 1, 2, 7, 5, 13]))
    s = load_or_fuse(open_scene(scene), voxel_size=0.5, cache_dir=cache)
    assert s.num_classes == 21 and s.class_names == SCANNET_CLASSES
    assert s.label.tolist() == [1, 0, 5]  # voxels in (x, y, z) order: (0,0,0), (0,2,0), (2,0,0)
    np.testing.assert_allclose(s.xyz, [[0.2, 0.2, 0.2], [0.2, 1.2, 0.2], [1.15, 0.2, 0.2]], atol=1e-6)
    np.testing.assert_allclose(s.rgb, [[1 / 3, 0, 0], [0, 0, 1], [0, 0.6, 0]], atol=1e-6)
    # cached: the same file is reused; the recipe fingerprints the PLY files
    files = list(cache.glob(f"fused-*/{SCENE}.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = load_or_fuse(open_scene(scene), voxel_size=0.5, cache_dir=cache)
    assert files[0].stat().st_mtime_ns == mtime and again.label.tolist() == [1, 0, 5]
    assert again.class_names == SCANNET_CLASSES
    recipe = json.loads(str(np.load(files[0])["meta"]))["recipe"]
    assert "mesh" in recipe and recipe["layout"]["reader"] == "scannet"
    labels = scene / f"{SCENE}_vh_clean_2.labels.ply"
    _write_mesh(scene, xyz, rgb, np.array([2, 2, 2, 7, 5, 13]))
    st = labels.stat()
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = load_or_fuse(open_scene(scene), voxel_size=0.5, cache_dir=cache)
    assert changed.label.tolist() == [2, 0, 5]


def test_voxel_downsample_keeps_names() -> None:
    from ppkt.data.types import FusedScene

    cloud = FusedScene(
        "s",
        np.array([[0.1, 0, 0], [0.2, 0, 0], [5, 5, 5]], np.float32),
        np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]], np.float32),
        np.array([3, 3, 0]),
        4,
        ("a", "b", "c", "d"),
    )
    out = voxel_downsample(cloud, 1.0)
    assert out.label.tolist() == [3, 0] and out.class_names == ("a", "b", "c", "d") and out.num_classes == 4
    np.testing.assert_allclose(out.rgb, [[0.5, 0, 0], [0, 1, 0]], atol=1e-6)
    assert torch.is_tensor(torch.from_numpy(out.xyz))
