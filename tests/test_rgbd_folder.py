"""Tests of the generic RGB-D folder reader: round trip, scene listing, bad inputs, the 7-Scenes preset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.data.readers import open_scenes
from ppkt.data.readers.folder import LAYOUTS, FolderLayout, RGBDFolder, list_scenes
from ppkt.errors import ConfigError, DataError
from ppkt.geometry import backproject_depth

from .conftest import assert_mentions

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
H, W = 6, 8
K_TEXT = "50 0 4\n0 50 3\n0 0 1\n"


def _pose(yaw: float = 0.3, t: tuple[float, float, float] = (1.0, 2.0, 1.5)) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


def _write_frame(folder: Path, name: str, depth_mm: np.ndarray | None = None, label: bool = True) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{name}.color.png")
    if depth_mm is None:
        depth_mm = np.full((H, W), 1500, dtype=np.uint16)
        depth_mm[0, 0] = 0
    Image.fromarray(depth_mm.astype(np.uint16)).save(folder / f"{name}.depth.png")
    np.savetxt(folder / f"{name}.pose.txt", _pose())
    if label:
        lab = np.arange(H * W, dtype=np.uint16).reshape(H, W) % 5
        Image.fromarray(lab).save(folder / f"{name}.label.png")


def _scene(root: Path, names: tuple[str, ...] = ("0", "1")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "intrinsics.txt").write_text(K_TEXT)
    for n in names:
        _write_frame(root, n)
    return root


def test_round_trip_generic(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "room", names=("10", "2", "1"))
    folder = RGBDFolder(scene)
    assert folder.frames == ["1", "2", "10"]  # natural order
    assert len(folder) == 3
    fr = folder.read(1)
    assert fr.scene == "room" and fr.name == "2"
    assert fr.color.dtype == np.uint8 and fr.color.shape == (H, W, 3)
    assert fr.depth.dtype == np.float32 and fr.depth.shape == (H, W)
    assert fr.depth[0, 0] == 0.0 and fr.depth[1, 1] == pytest.approx(1.5)
    np.testing.assert_allclose(fr.K, [[50, 0, 4], [0, 50, 3], [0, 0, 1]])
    np.testing.assert_allclose(fr.pose, _pose())
    assert fr.label is not None and fr.label.dtype == np.int64
    assert fr.label[1, 2] == (1 * W + 2) % 5
    assert fr.instance is None  # optional file absent
    assert fr.depth_path == scene / "2.depth.png" and fr.label_path == scene / "2.label.png"
    expected_color = np.asarray(Image.open(scene / "2.color.png"))
    np.testing.assert_array_equal(fr.color, expected_color)


def test_color_jpg_fallback_and_depth_scale(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s", names=("0",))
    Image.open(scene / "0.color.png").save(scene / "0.color.jpg", quality=95)
    (scene / "0.color.png").unlink()
    layout = FolderLayout(depth_scale=5000.0, invalid_depth=(0, 1500))
    with pytest.raises(DataError, match="no valid depth"):
        RGBDFolder(scene, layout).read(0)
    depth = np.full((H, W), 2500, dtype=np.uint16)
    Image.fromarray(depth).save(scene / "0.depth.png")
    fr = RGBDFolder(scene, layout).read(0)
    assert fr.color_path == scene / "0.color.jpg"
    assert np.allclose(fr.depth, 0.5)


def test_list_scenes(tmp_path: Path) -> None:
    _scene(tmp_path / "scene10")
    _scene(tmp_path / "scene2")
    (tmp_path / "not_a_scene").mkdir()
    assert [p.name for p in list_scenes(tmp_path)] == ["scene2", "scene10"]
    assert list_scenes(tmp_path / "scene2") == [tmp_path / "scene2"]
    assert [len(f) for f in open_scenes(tmp_path)] == [2, 2]
    with pytest.raises(DataError, match="no scene folders"):
        list_scenes(tmp_path / "not_a_scene")
    with pytest.raises(DataError, match="does not exist"):
        RGBDFolder(tmp_path / "missing")
    with pytest.raises(DataError, match="no frames found"):
        RGBDFolder(tmp_path / "not_a_scene")
    with pytest.raises(ConfigError, match="unknown folder layout"):
        RGBDFolder(tmp_path / "scene2", "scannet")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_pose(T: np.ndarray) -> Callable[[Path], None]:
    return lambda s: np.savetxt(s / "0.pose.txt", T)


def _bad_pose(kind: str) -> np.ndarray:
    T = _pose()
    if kind == "nan":
        T[0, 3] = np.nan
    elif kind == "scale":
        T[:3, :3] *= 1.01
    elif kind == "reflect":
        T[:3, 0] *= -1
    elif kind == "row":
        T[3] = [0, 0, 0.5, 1]
    return T


BAD_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "missing color": (lambda s: (s / "0.color.png").unlink(), "0.color.png", "missing color"),
    "garbage color": (lambda s: (s / "0.color.png").write_bytes(b"not a png"), "0.color.png", "corrupt"),
    "truncated color": (lambda s: _truncate(s / "0.color.png"), "0.color.png", "corrupt"),
    "truncated depth": (lambda s: _truncate(s / "0.depth.png"), "0.depth.png", "corrupt"),
    "8-bit depth": (
        lambda s: Image.fromarray(np.full((H, W), 9, np.uint8)).save(s / "0.depth.png"),
        "0.depth.png",
        "uint16",
    ),
    "rgb depth": (
        lambda s: Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(s / "0.depth.png"),
        "0.depth.png",
        "uint16",
    ),
    "depth shape": (
        lambda s: Image.fromarray(np.full((H, W + 1), 900, np.uint16)).save(s / "0.depth.png"),
        "0.depth.png",
        "does not match color",
    ),
    "no valid depth": (
        lambda s: Image.fromarray(np.zeros((H, W), np.uint16)).save(s / "0.depth.png"),
        "0.depth.png",
        "no valid depth",
    ),
    "missing pose": (lambda s: (s / "0.pose.txt").unlink(), "0.pose.txt", "missing pose"),
    "pose 3x4": (_set_pose(_pose()[:3]), "0.pose.txt", "4x4"),
    "pose text": (lambda s: (s / "0.pose.txt").write_text("1 0 0 x\n"), "0.pose.txt", "malformed pose"),
    "pose ragged": (lambda s: (s / "0.pose.txt").write_text("1 0 0 0\n0 1 0\n"), "0.pose.txt", "different"),
    "pose nan": (_set_pose(_bad_pose("nan")), "0.pose.txt", "non-finite"),
    "pose scaled": (_set_pose(_bad_pose("scale")), "0.pose.txt", "not orthonormal"),
    "pose reflection": (_set_pose(_bad_pose("reflect")), "0.pose.txt", "determinant"),
    "pose last row": (_set_pose(_bad_pose("row")), "0.pose.txt", "last row"),
    "intrinsics missing": (lambda s: (s / "intrinsics.txt").unlink(), "intrinsics.txt", "missing intrinsics"),
    "intrinsics 2x3": (
        lambda s: (s / "intrinsics.txt").write_text("1 0 2\n0 1 2\n"),
        "intrinsics.txt",
        "3x3",
    ),
    "intrinsics focal": (
        lambda s: (s / "intrinsics.txt").write_text("-5 0 4\n0 50 3\n0 0 1\n"),
        "intrinsics.txt",
        "focal",
    ),
    "intrinsics last row": (
        lambda s: (s / "intrinsics.txt").write_text("50 0 4\n0 50 3\n0 1 1\n"),
        "intrinsics.txt",
        "malformed intrinsics",
    ),
    "intrinsics of another resolution": (
        lambda s: (s / "intrinsics.txt").write_text("525 0 319.5\n0 525 239.5\n0 0 1\n"),
        "intrinsics.txt",
        "principal point (319.5, 239.5) lies outside the 8x6 image",
    ),
    "label shape": (
        lambda s: Image.fromarray(np.ones((H + 2, W), np.uint16)).save(s / "0.label.png"),
        "0.label.png",
        "label shape",
    ),
    "garbage label": (lambda s: (s / "0.label.png").write_bytes(b"\x89PNG\r\n"), "0.label.png", "corrupt"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_and_problem(tmp_path: Path, case: str) -> None:
    scene = _scene(tmp_path / "s", names=("0",))
    RGBDFolder(scene).read(0)  # valid before the damage
    damage, filename, problem = BAD_CASES[case]
    damage(scene)
    with pytest.raises(DataError) as info:
        RGBDFolder(scene).read(0)
    message = str(info.value)
    assert filename in message, message
    assert problem in message, message


def test_seven_scenes_naming_and_invalid_values(tmp_path: Path) -> None:
    (tmp_path / "camera-intrinsics.txt").write_text(K_TEXT)
    depth = np.full((H, W), 2000, dtype=np.uint16)
    depth[0, :3] = 65535
    depth[1, 0] = 0
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "frame-000000.color.jpg")
    Image.fromarray(depth).save(tmp_path / "frame-000000.depth.png")
    np.savetxt(tmp_path / "frame-000000.pose.txt", _pose())
    folder = RGBDFolder(tmp_path, "7scenes")
    assert folder.frames == ["000000"]
    fr = folder.read(0)
    assert fr.depth[0, :3].tolist() == [0.0, 0.0, 0.0] and fr.depth[1, 0] == 0.0
    assert (fr.depth > 0).sum() == H * W - 4 and np.allclose(fr.depth[fr.depth > 0], 2.0)
    assert LAYOUTS["7scenes"] == FolderLayout.seven_scenes()
    with pytest.raises(ConfigError, match="must contain"):
        FolderLayout(depth="depth.png")


@pytest.mark.real_data
def test_seven_scenes_real_frame() -> None:
    root = SHARED_DATA / "7scenes-redkitchen"
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent")
    folder = RGBDFolder(root, "7scenes")
    assert len(folder) == 500 and folder.frames[:2] == ["000000", "000002"]
    fr = folder.read(0)
    np.testing.assert_allclose(fr.K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    assert fr.color.shape == (480, 640, 3) and fr.color.dtype == np.uint8
    assert fr.depth.shape == (480, 640) and fr.depth.dtype == np.float32
    valid = fr.depth[fr.depth > 0]
    assert valid.size > 0.5 * fr.depth.size
    assert valid.min() > 0.4 and valid.max() < 4.0  # Kinect v1 range, no 65.535 m sentinels
    np.testing.assert_allclose(fr.pose, np.loadtxt(root / "frame-000000.pose.txt"))
    pts = backproject_depth(torch.from_numpy(fr.depth), torch.from_numpy(fr.K), torch.from_numpy(fr.pose))
    assert pts.points_world.shape[0] == valid.size
    # the kitchen is a few metres across: every point lies within 5 m of the camera
    dist = (pts.points_world - torch.from_numpy(fr.pose[:3, 3])).norm(dim=1)
    assert float(dist.max()) < 5.0


@pytest.mark.real_data
def test_seven_scenes_frames_ten_apart_agree_in_the_world() -> None:
    """Two real frames 10 apart, back-projected with their own poses, describe the same surfaces: the median
    distance from one cloud to the nearest point of the other is under 2 cm."""
    root = SHARED_DATA / "7scenes-redkitchen"
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent")
    folder = RGBDFolder(root, "7scenes")
    clouds = []
    for i in (100, 110):
        fr = folder.read(i)
        bp = backproject_depth(
            torch.from_numpy(fr.depth).double(),
            torch.from_numpy(fr.K),
            torch.from_numpy(fr.pose),
            max_depth=4.0,
        )
        clouds.append(bp.points_world.float())
    g = torch.Generator().manual_seed(0)
    a = clouds[0][torch.randperm(len(clouds[0]), generator=g)[:3000]]
    b = clouds[1][torch.randperm(len(clouds[1]), generator=g)[:60000]]
    nearest = torch.cat([torch.cdist(chunk, b).min(dim=1).values for chunk in a.split(500)])
    assert float(nearest.median()) < 0.02
    # the check can fail: with the second frame's pose swapped for a frame 60 apart it does
    wrong = folder.read(170).pose
    fr = folder.read(110)
    bp = backproject_depth(
        torch.from_numpy(fr.depth).double(), torch.from_numpy(fr.K), torch.from_numpy(wrong), max_depth=4.0
    )
    b = bp.points_world.float()[torch.randperm(len(bp.points_world), generator=g)[:60000]]
    nearest = torch.cat([torch.cdist(chunk, b).min(dim=1).values for chunk in a.split(500)])
    assert float(nearest.median()) > 0.02


def test_truncated_image_is_closed_not_leaked(tmp_path: Path) -> None:
    """A truncated PNG fails in ``load()``; the reader closes it at once (no ResourceWarning later)."""
    import gc
    import warnings

    from ppkt.data.io.images import read_uint16

    path = tmp_path / "depth.png"
    Image.fromarray(np.zeros((40, 40), np.uint16)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError) as err:
            read_uint16(path, "depth")
        assert_mentions(err.value, path, "depth")
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
