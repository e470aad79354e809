"""Tests of the TUM RGB-D reader: association, quaternion poses, depth scale, intrinsics, malformed files."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ppkt.data.pairing import frame_to_sample
from ppkt.data.readers import open_scenes
from ppkt.data.readers.tum import (
    DEFAULT_INTRINSICS,
    TUM_INTRINSICS,
    TUMScene,
    list_tum_sequences,
    quaternion_pose,
    read_groundtruth,
)
from ppkt.data.types import FrameSource
from ppkt.errors import ConfigError, DataError

from .conftest import assert_mentions

H, W = 6, 8
K = np.array([[10.0, 0, 3.5], [0, 10.0, 2.5], [0, 0, 1]])
T0 = 1305031102.0
S = math.sqrt(0.5)

#: depth frame offset (s) -> (depth in metres, colour offset or None, pose offset or None)
#: the pose of each matched frame is POSES[pose offset]
DEPTH = {
    0.0: (2.0, 0.004, 0.0),
    0.1: (1.5, 0.095, 0.1),
    0.2: (1.0, 0.25, 0.2),  # nearest colour is 0.05 s away: dropped
    0.3: (2.0, 0.305, 0.31),
    0.4: (1.0, 0.4, None),  # nearest pose (0.31) is 0.09 s away: dropped
}
#: pose offset -> (t, q = (qx, qy, qz, qw), not normalised on purpose)
POSES: dict[float, tuple[tuple[float, ...], tuple[float, ...]]] = {
    0.0: ((1.0, 2.0, 3.0), (0.0, 0.0, 2 * S, 2 * S)),  # 90° about z
    0.1: ((0.5, 0.5, 1.5), (1.0, 1.0, 0.0, 0.0)),  # looking down (180° about x), then 90° about z
    0.2: ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0, 0.0)),
    0.31: ((0.0, 0.0, 2.0), (1.0, 0.0, 0.0, 0.0)),  # looking down from 2 m
}
RZ90 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
DOWN = np.diag([1.0, -1.0, -1.0])


def _ts(offset: float) -> str:
    return f"{T0 + offset:.6f}"


def make_sequence(root: Path, name: str = "rgbd_dataset_freiburg1_test", intrinsics: bool = True) -> Path:
    """A tiny TUM sequence (see :data:`DEPTH` and :data:`POSES`); depth.txt lists frames out of order."""
    seq = root / name
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    rgb_lines = ["# color images", "# timestamp filename"]
    depth_lines = ["# depth maps", "# timestamp filename"]
    for offset, (depth_m, color_offset, _) in sorted(DEPTH.items(), reverse=True):
        depth = np.full((H, W), round(depth_m * 5000), np.uint16)
        depth[0, 0] = 0
        Image.fromarray(depth).save(seq / "depth" / f"{_ts(offset)}.png")
        depth_lines.append(f"{_ts(offset)} depth/{_ts(offset)}.png")
        color = np.full((H, W, 3), int(100 * offset), np.uint8)
        Image.fromarray(color).save(seq / "rgb" / f"{_ts(color_offset)}.png")
        rgb_lines.append(f"{_ts(color_offset)} rgb/{_ts(color_offset)}.png")
    gt = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
    for offset, (t, q) in POSES.items():
        gt.append(" ".join([_ts(offset), *map(str, t), *map(str, q)]))
    (seq / "rgb.txt").write_text("\n".join(sorted(rgb_lines)) + "\n")
    (seq / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (seq / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    if intrinsics:
        np.savetxt(seq / "intrinsics.txt", K)
    return seq


def open_seq(seq: Path, **kwargs: float) -> TUMScene:
    """Open the sequence expecting exactly one warning counting the two dropped frames."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = TUMScene(seq, **kwargs)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "dropping 2 of 5 depth frames" in messages[0]
    assert "1 without a colour image, 1 without a pose" in messages[0]
    assert f"depth/{_ts(0.2)}.png" in messages[0] and f"depth/{_ts(0.4)}.png" in messages[0]
    return s


def test_association_drops_unmatched_frames(tmp_path: Path) -> None:
    seq = make_sequence(tmp_path)
    s = open_seq(seq)
    assert isinstance(s, FrameSource)
    assert s.frames == [_ts(0.0), _ts(0.1), _ts(0.3)] and len(s) == 3
    depth, color, pose_ts = s.association(_ts(0.3))
    assert depth == seq / "depth" / f"{_ts(0.3)}.png" and color == seq / "rgb" / f"{_ts(0.305)}.png"
    assert pose_ts == pytest.approx(T0 + 0.31)
    fr = s.read(1)
    assert fr.name == _ts(0.1) and fr.scene == "rgbd_dataset_freiburg1_test"
    assert fr.color.shape == (H, W, 3) and int(fr.color[0, 0, 0]) == 10
    assert fr.depth.dtype == np.float32 and fr.depth[0, 0] == 0.0
    assert np.all(fr.depth.ravel()[1:] == np.float32(1.5))  # 7500 raw / 5000
    np.testing.assert_allclose(fr.K, K)
    assert s.frame_files(_ts(0.0)) == [
        seq / "rgb" / f"{_ts(0.004)}.png",
        seq / "depth" / f"{_ts(0.0)}.png",
        seq / "groundtruth.txt",
        seq / "intrinsics.txt",
    ]
    assert s.describe() == {
        "reader": "tum",
        "depth_scale": 5000.0,
        "tolerance": 0.02,
        "intrinsics": "intrinsics.txt",
    }
    # a larger tolerance keeps every frame (the nearest colour/pose wins)
    wide = TUMScene(seq, tolerance=0.1)
    assert len(wide) == 5 and wide.association(_ts(0.2))[1] == seq / "rgb" / f"{_ts(0.25)}.png"
    with pytest.raises(ConfigError, match="tolerance"):
        TUMScene(seq, tolerance=-1.0)


def test_quaternion_poses(tmp_path: Path) -> None:
    s = open_seq(make_sequence(tmp_path))
    expected = np.eye(4)
    expected[:3, :3], expected[:3, 3] = RZ90, [1.0, 2.0, 3.0]
    np.testing.assert_allclose(s.read(0).pose, expected, atol=1e-12)
    np.testing.assert_allclose(s.read(1).pose[:3, :3], RZ90 @ DOWN, atol=1e-12)
    np.testing.assert_allclose(s.read(2).pose[:3, :3], DOWN, atol=1e-12)
    np.testing.assert_allclose(quaternion_pose(np.zeros(3), np.array([0, 0, 0, 5.0])), np.eye(4))
    with pytest.raises(ValueError, match="invalid pose"):
        quaternion_pose(np.zeros(3), np.zeros(4))
    times, poses = read_groundtruth(s.root / "groundtruth.txt")
    assert times.shape == (4,) and poses.shape == (4, 4, 4)


def test_backprojected_points(tmp_path: Path) -> None:
    s = open_seq(make_sequence(tmp_path))
    # frame 0: 2 m in front of a camera at (1, 2, 3) turned 90° about z: camera z is world z
    p0 = frame_to_sample(s.read(0)).points
    assert p0.shape[0] == H * W - 1
    np.testing.assert_allclose(p0[:, 2].numpy(), 5.0, atol=1e-5)
    # pixel (1, 0) → camera ((1 − 3.5)/10·2, (0 − 2.5)/10·2, 2) = (−0.5, −0.5, 2) → world (1.5, 1.5, 5)
    np.testing.assert_allclose(p0[0].numpy(), [1.5, 1.5, 5.0], atol=1e-5)
    # frames 1 and 2 look down from 1.5 m and 2 m at the floor z = 0
    for i in (1, 2):
        pts = frame_to_sample(s.read(i)).points
        assert float(pts[:, 2].abs().max()) < 1e-5


def test_intrinsics_from_folder_name_or_default(tmp_path: Path) -> None:
    for cam in ("freiburg2", "freiburg3"):
        seq = make_sequence(tmp_path, f"rgbd_dataset_{cam}_desk", intrinsics=False)
        s = open_seq(seq)
        fx, fy, cx, cy = TUM_INTRINSICS[cam]
        np.testing.assert_allclose(s.K, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        # the built-in intrinsics are for 640x480 images: on this tiny one they are refused, not misused
        with pytest.raises(DataError) as err:
            s.read(0)
        assert_mentions(err.value, cam, f"({float(cx)}, {float(cy)})", f"{W}x{H}")
        assert s.describe()["intrinsics"] == cam and seq / "intrinsics.txt" not in s.frame_files(s.frames[0])
    seq = make_sequence(tmp_path, "my_sequence", intrinsics=False)
    with pytest.warns(UserWarning) as record:
        s = TUMScene(seq)
    assert len(record) == 2 and "ROS default" in str(record[0].message)
    fx, fy, cx, cy = DEFAULT_INTRINSICS
    np.testing.assert_allclose(s.K, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    assert s.describe()["intrinsics"] == "ros-default"


def test_layout_registry_and_listing(tmp_path: Path) -> None:
    make_sequence(tmp_path / "data", "rgbd_dataset_freiburg1_xyz")
    make_sequence(tmp_path / "data", "rgbd_dataset_freiburg1_desk")
    (tmp_path / "data" / "other").mkdir()
    names = [p.name for p in list_tum_sequences(tmp_path / "data")]
    assert names == ["rgbd_dataset_freiburg1_desk", "rgbd_dataset_freiburg1_xyz"]
    one = tmp_path / "data" / "rgbd_dataset_freiburg1_xyz"
    assert list_tum_sequences(one) == [one]
    with pytest.warns(UserWarning, match="dropping 2 of 5"):
        scenes = open_scenes(tmp_path / "data", "tum")
    assert [type(s).__name__ for s in scenes] == ["TUMScene", "TUMScene"] and [len(s) for s in scenes] == [
        3,
        3,
    ]
    with pytest.raises(DataError, match="no TUM sequence folders"):
        list_tum_sequences(tmp_path / "data" / "other")


def _edit(name: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(seq: Path) -> None:
        path = seq / name
        path.write_text(path.read_text().replace(old, new, 1))

    return edit


def _append(name: str, line: str) -> Callable[[Path], None]:
    def append(seq: Path) -> None:
        path = seq / name
        path.write_text(path.read_text() + line + "\n")

    return append


#: damage -> (the "file:line" or file the message names, the problem it states)
BAD_LISTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "rgb one token": (_append("rgb.txt", "1305031103.0"), "rgb.txt:8", "expected 'timestamp filename'"),
    "depth bad timestamp": (_edit("depth.txt", _ts(0.3), "13050311x"), "depth.txt:4", "malformed timestamp"),
    "depth duplicate": (_append("depth.txt", f"{_ts(0.3)} depth/x.png"), "depth.txt", "listed twice"),
    "gt seven values": (_append("groundtruth.txt", "1 2 3 4 5 6 7"), "groundtruth.txt:7", "got 7 values"),
    "gt text": (_append("groundtruth.txt", "1 2 3 4 5 6 7 q"), "groundtruth.txt:7", "malformed pose"),
    "gt nan": (_append("groundtruth.txt", "1 2 3 4 0 0 nan 1"), "groundtruth.txt:7", "invalid pose"),
    "gt zero quaternion": (
        _append("groundtruth.txt", "1 2 3 4 0 0 0 0"),
        "groundtruth.txt:7",
        "invalid pose",
    ),
    "gt missing": (lambda s: (s / "groundtruth.txt").unlink(), "groundtruth.txt", "missing groundtruth"),
    "gt empty": (lambda s: (s / "groundtruth.txt").write_text("# nothing\n"), "groundtruth.txt", "no poses"),
    "rgb missing": (lambda s: (s / "rgb.txt").unlink(), "rgb.txt", "missing image list"),
    "intrinsics bad": (
        lambda s: (s / "intrinsics.txt").write_text("1 2\n"),
        "intrinsics.txt",
        "malformed intrinsics",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LISTS))
def test_malformed_files_name_file_and_line(tmp_path: Path, case: str) -> None:
    seq = make_sequence(tmp_path)
    damage, where, problem = BAD_LISTS[case]
    damage(seq)
    with pytest.raises(DataError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TUMScene(seq)
    message = str(info.value)
    assert f"{seq}/{where}" in message and problem in message, message


def test_bad_images_name_the_file(tmp_path: Path) -> None:
    seq = make_sequence(tmp_path)
    depth = seq / "depth" / f"{_ts(0.0)}.png"
    depth.write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"{depth.name}: corrupt"):
        open_seq(seq).read(0)
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(depth)
    with pytest.raises(DataError) as err:
        open_seq(seq).read(0)
    assert_mentions(err.value, depth.name, "uint16", "'L'")
    Image.fromarray(np.full((H + 1, W), 7, np.uint16)).save(depth)
    with pytest.raises(DataError, match=rf"{depth.name}: depth shape"):
        open_seq(seq).read(0)
    (seq / "rgb" / f"{_ts(0.095)}.png").unlink()
    with pytest.raises(DataError, match=rf"{_ts(0.095)}.png: missing color"):
        open_seq(seq).read(1)
    # every depth frame unmatched
    (seq / "groundtruth.txt").write_text(f"{T0 + 100} 0 0 0 0 0 0 1\n")
    with pytest.raises(DataError) as err, pytest.warns(UserWarning):
        TUMScene(seq)
    assert_mentions(err.value, seq, "pose")
