"""Tests of the pybullet synthetic indoor scenes: camera convention to 1 mm, determinism, classes, labels,
depth noise statistics and reading the output back through :class:`~ppkt.data.readers.folder.RGBDFolder`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.data.readers import open_scenes
from ppkt.data.readers.folder import RGBDFolder
from ppkt.data.synth import (
    CLASS_NAMES,
    Camera,
    DepthNoise,
    RoomConfig,
    add_depth_noise,
    dataset_matches,
    make_recipe,
    read_dataset_info,
    synthesize,
)
from ppkt.errors import ConfigError, DataError
from ppkt.geometry import backproject_depth

SIZE = (60, 80)
SCENES, FRAMES, SEED = 2, 4, 7


def _recipe(noise: bool) -> dict[str, object]:
    return make_recipe(SCENES, FRAMES, SEED, SIZE, depth_noise=DepthNoise() if noise else None)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noise-free depth (only millimetre quantisation)."""
    return synthesize(
        tmp_path_factory.mktemp("synth") / "clean", SCENES, FRAMES, SEED, SIZE, depth_noise=None
    )


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same recipe as ``clean`` (same rooms and poses) with the default Kinect-like noise."""
    return synthesize(tmp_path_factory.mktemp("synth") / "noisy", SCENES, FRAMES, SEED, SIZE)


def _plane_errors(root: Path, dcx: float = 0.0, dcy: float = 0.0) -> dict[str, float]:
    """Max distance (m) of back-projected floor / wall pixels to their true planes, per class name."""
    worst = {"floor": 0.0, "wall": 0.0}
    counts = {"floor": 0, "wall": 0}
    for folder in open_scenes(root):
        planes = json.loads((folder.root / "scene.json").read_text())["planes"]
        for i in range(len(folder)):
            fr = folder.read(i)
            K = fr.K.copy()
            K[0, 2] += dcx
            K[1, 2] += dcy
            bp = backproject_depth(
                torch.from_numpy(fr.depth).double(), torch.from_numpy(K), torch.from_numpy(fr.pose)
            )
            pts = bp.points_world.numpy()
            u, v = bp.uv[:, 0].numpy(), bp.uv[:, 1].numpy()
            label, inst = fr.label[v, u], fr.instance[v, u]
            floor = label == CLASS_NAMES.index("floor")
            if floor.any():  # the floor is the plane z = 0
                worst["floor"] = max(worst["floor"], float(np.abs(pts[floor, 2]).max()))
                counts["floor"] += int(floor.sum())
            for pl in planes:
                if CLASS_NAMES[pl["cls"]] != "wall":
                    continue
                m = (inst == pl["instance"]) & (label == pl["cls"])
                if m.any():
                    dist = pts[m] @ np.asarray(pl["normal"]) + pl["offset"]
                    worst["wall"] = max(worst["wall"], float(np.abs(dist).max()))
                    counts["wall"] += int(m.sum())
    assert counts["floor"] > 1000 and counts["wall"] > 500, counts
    return worst


def test_camera_convention_within_1mm(clean: Path) -> None:
    errors = _plane_errors(clean)
    assert errors["floor"] < 1e-3 and errors["wall"] < 1e-3, errors
    # the test is sensitive: the usual half-pixel alternatives are off by centimetres
    for dcx, dcy in ((0.0, 0.5), (-0.5, 0.0), (-0.5, 0.5)):
        shifted = _plane_errors(clean, dcx, dcy)
        assert max(shifted.values()) > 5e-3, (dcx, dcy, shifted)


def test_camera_convention_odd_size(tmp_path: Path) -> None:
    root = synthesize(
        tmp_path / "odd", scenes=1, frames_per_scene=2, seed=3, image_size=(45, 61), depth_noise=None
    )
    K = RGBDFolder(root / "scene_0000").K
    assert K[0, 2] == 61 / 2 and K[1, 2] == 45 / 2 - 1
    errors = _plane_errors(root)
    assert max(errors.values()) < 1e-3, errors


def test_intrinsics_formula() -> None:
    cam = Camera(height=240, width=320, fov_deg=60.0)
    f = 120 / np.tan(np.radians(30))
    np.testing.assert_allclose(cam.K, [[f, 0, 160], [0, f, 119], [0, 0, 1]])
    zbuf = np.array([0.0, 1.0])
    np.testing.assert_allclose(cam.metric_depth(zbuf), [cam.near, cam.far])


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="scenes"):
        make_recipe(0, 4, 0)
    with pytest.raises(ConfigError, match="image_size"):
        make_recipe(1, 1, 0, (240, 320, 3))
    with pytest.raises(ConfigError, match="depth_range"):
        make_recipe(1, 1, 0, depth_range=(2.0, 1.0))


def test_deterministic(tmp_path: Path) -> None:
    size = (32, 40)
    a = synthesize(tmp_path / "a", 2, 2, 11, size)
    b = synthesize(tmp_path / "b", 2, 2, 11, size, workers=2)
    c = synthesize(tmp_path / "c", 2, 2, 12, size)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 1 + 2 * (
        2 + 2 * 5
    )  # dataset.json; scene: intr., json, 5/frame
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "scene_0000/000000.color.png").read_bytes() != (
        c / "scene_0000/000000.color.png"
    ).read_bytes()
    # re-synthesizing over a finished dataset replaces it; a foreign non-empty folder is refused
    synthesize(a, 2, 2, 11, size)
    assert (a / "scene_0001/000001.depth.png").read_bytes() == (
        b / "scene_0001/000001.depth.png"
    ).read_bytes()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing"):
        synthesize(foreign, 1, 1, 0, size)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_first_scene_continues_the_seeds_rooms(tmp_path: Path) -> None:
    """Rooms ``first_scene …`` of a seed are the rooms a dataset rendered from 0 holds at those indices (the
    extra pretraining rooms of ``data.extra_scenes`` are new rooms, never a benchmark room); a recipe from
    room 0 does not name ``first_scene``, so the embedded dataset's cache folder keeps its name."""
    size = (32, 40)
    full = synthesize(tmp_path / "full", 3, 2, 11, size)
    tail = synthesize(tmp_path / "tail", 1, 2, 11, size, first_scene=2)
    assert [f.root.name for f in open_scenes(tail)] == ["scene_0002"]
    files = sorted(p.relative_to(tail) for p in (tail / "scene_0002").rglob("*") if p.is_file())
    assert len(files) == 2 + 2 * 5
    for rel in files:
        assert (tail / rel).read_bytes() == (full / rel).read_bytes(), rel
    assert "first_scene" not in make_recipe(3, 2, 11, size)
    assert make_recipe(1, 2, 11, size, first_scene=2)["first_scene"] == 2
    assert dataset_matches(tail, make_recipe(1, 2, 11, size, first_scene=2))
    assert not dataset_matches(tail, make_recipe(1, 2, 11, size))
    with pytest.raises(ConfigError, match="first_scene"):
        make_recipe(1, 2, 11, size, first_scene=-1)


def colour_to_class_accuracy(root: Path) -> tuple[float, set[int]]:
    """Balanced accuracy in the second room of a colour → class lookup (8 levels per channel) learnt on the
    first room, and the classes seen."""
    seen: set[int] = set()
    per_scene: list[tuple[np.ndarray, np.ndarray]] = []
    for folder in open_scenes(root):
        codes, labels = [], []
        for i in range(len(folder)):
            fr = folder.read(i)
            assert fr.label is not None
            seen |= set(np.unique(fr.label).tolist())
            q = fr.color.astype(np.int64) // 32  # 8 levels per channel
            codes.append((q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).ravel())
            labels.append(fr.label.ravel())
        per_scene.append((np.concatenate(codes), np.concatenate(labels)))
    (xa, ya), (xb, yb) = per_scene
    hist = np.zeros((512, len(CLASS_NAMES)))
    np.add.at(hist, (xa, ya), 1.0)
    hist /= np.maximum(hist.sum(0, keepdims=True), 1.0)
    pred = hist.argmax(1)[xb]
    shared = sorted(set(ya.tolist()) & set(yb.tolist()))
    return float(np.mean([(pred[yb == c] == c).mean() for c in shared])), seen


def test_at_least_8_classes_and_colour_does_not_decide_class(clean: Path) -> None:
    balanced, seen = colour_to_class_accuracy(clean)
    assert len(seen - {0}) >= 8, sorted(CLASS_NAMES[c] for c in seen)
    # a colour → class lookup learnt on one room does not transfer to another (balanced accuracy ≈ chance)
    assert balanced < 0.35, balanced


def test_natural_appearance_same_rooms_colour_follows_class(clean: Path, tmp_path: Path) -> None:
    """``appearance: natural`` renders the same rooms, cameras and labels as the default of the same seed
    (only the colours differ), and there colour does carry the class; only it is named in the recipe (the
    default's recipe, and so its cache folder, is the one of datasets rendered before the option)."""
    natural = synthesize(
        tmp_path / "natural",
        SCENES,
        FRAMES,
        SEED,
        SIZE,
        depth_noise=None,
        room=RoomConfig(appearance="natural"),
    )
    for scene in ("scene_0000", "scene_0001"):
        for name in ("000000.label.png", "000003.instance.png", "000002.depth.png", "000001.pose.txt"):
            assert (natural / scene / name).read_bytes() == (clean / scene / name).read_bytes(), name
        assert (natural / scene / "000000.color.png").read_bytes() != (
            clean / scene / "000000.color.png"
        ).read_bytes()
    assert "appearance" not in read_dataset_info(clean)["recipe"]["room"]
    assert read_dataset_info(natural)["recipe"]["room"]["appearance"] == "natural"
    assert not dataset_matches(natural, make_recipe(SCENES, FRAMES, SEED, SIZE, depth_noise=None))
    random_acc, _ = colour_to_class_accuracy(clean)
    natural_acc, _ = colour_to_class_accuracy(natural)
    assert natural_acc > random_acc + 0.1, (natural_acc, random_acc)


def test_appearance_is_checked() -> None:
    from ppkt.config import PretrainConfig, load_config

    with pytest.raises(ConfigError, match="appearance"):
        load_config(PretrainConfig, overrides=["data.synth.appearance=shiny"])


def test_label_and_instance_consistent(clean: Path) -> None:
    info = read_dataset_info(clean)
    assert info["classes"] == list(CLASS_NAMES)
    for folder in open_scenes(clean):
        meta = json.loads((folder.root / "scene.json").read_text())
        cls_of = {0: 0} | {o["instance"]: o["class"] for o in meta["instances"]}
        assert sorted(cls_of) == list(range(len(cls_of)))  # ids 1..N
        lut = np.array([cls_of[i] for i in range(len(cls_of))])
        for i in range(len(folder)):
            fr = folder.read(i)
            assert fr.label is not None and fr.instance is not None
            assert fr.instance.max() < len(lut)
            np.testing.assert_array_equal(fr.label, lut[fr.instance])
            assert len(np.unique(fr.instance)) >= 4  # floor, a wall and objects


def test_read_back(clean: Path, noisy: Path) -> None:
    assert dataset_matches(clean, _recipe(noise=False))
    assert dataset_matches(noisy, _recipe(noise=True))
    assert not dataset_matches(clean, _recipe(noise=True))
    assert not dataset_matches(clean.parent, _recipe(noise=False))
    info = read_dataset_info(noisy)
    assert info["recipe"]["version"] >= 1 and info["num_frames"] == 8
    folders = open_scenes(noisy)
    assert [f.scene for f in folders] == ["scene_0000", "scene_0001"]
    cam = Camera(*SIZE, fov_deg=info["recipe"]["fov_deg"])
    for folder in folders:
        assert folder.frames == ["000000", "000001", "000002", "000003"]
        np.testing.assert_allclose(folder.K, cam.K, rtol=1e-8)
        fr = folder.read(3)
        assert fr.color.shape == (*SIZE, 3) and fr.depth.shape == SIZE and fr.label is not None
        valid = fr.depth[fr.depth > 0]
        assert valid.size > 0.5 * fr.depth.size
        assert valid.min() >= 0.3 and valid.max() <= 6.0
        np.testing.assert_allclose(valid * 1000, np.round(valid * 1000), atol=1e-3)  # whole millimetres
        cam_height = fr.pose[2, 3]
        assert 1.2 <= cam_height <= 1.8
        assert fr.pose[:3, 2][2] < 0  # looking downwards into the room


def test_depth_noise_statistics_unit() -> None:
    noise = DepthNoise()
    rng = np.random.default_rng(0)
    flat = np.full((300, 300), 2.0)
    out = add_depth_noise(flat, noise, rng)
    dropped = out == 0
    assert 0.008 < dropped.mean() < 0.012  # ~1 % random dropout
    sigma2 = 0.0012 + 0.0019 * 1.6**2
    assert float(noise.sigma(np.array(2.0))) == pytest.approx(sigma2)
    assert np.std(out[~dropped] - 2.0) == pytest.approx(sigma2, rel=0.03)
    assert abs(np.mean(out[~dropped] - 2.0)) < 1e-4
    # a depth step: the pixels on both sides of the edge drop with ~edge_dropout, others with ~1 %
    step = np.full((300, 300), 1.0)
    step[:, 150:] = 3.0
    out = add_depth_noise(step, noise, rng)
    edge = out[:, 149:151] == 0
    assert abs(edge.mean() - (noise.edge_dropout + (1 - noise.edge_dropout) * noise.dropout)) < 0.05
    assert (out[:, :140] == 0).mean() < 0.015
    # invalid input stays invalid and its neighbours count as edges
    holes = flat.copy()
    holes[100, :] = 0.0
    out = add_depth_noise(holes, noise, rng)
    assert (out[100] == 0).all() and (out[99] == 0).mean() > 0.4


def test_depth_noise_statistics_rendered(clean: Path, noisy: Path) -> None:
    residuals, near2m, valid_clean, lost = [], [], 0, 0
    noise = DepthNoise()
    for fc, fn in zip(open_scenes(clean), open_scenes(noisy)):
        for i in range(len(fc)):
            a, b = fc.read(i), fn.read(i)
            np.testing.assert_array_equal(a.color, b.color)  # same rooms and poses
            both = (a.depth > 0) & (b.depth > 0)
            diff = (b.depth - a.depth)[both].astype(np.float64)
            z = a.depth[both].astype(np.float64)
            residuals.append(diff / noise.sigma(z))
            near2m.append(diff[np.abs(z - 2.0) < 0.15])
            valid_clean += int((a.depth > 0).sum())
            lost += int(((a.depth > 0) & (b.depth == 0)).sum())
    r = np.concatenate(residuals)
    d2 = np.concatenate(near2m)
    assert d2.size > 500
    assert np.std(d2) == pytest.approx(float(noise.sigma(np.array(2.0))), rel=0.1)  # σ(2 m) ≈ 6.1 mm
    assert np.std(r) == pytest.approx(1.0, rel=0.1)
    assert 0.01 < lost / valid_clean < 0.2  # random + discontinuity dropout
