"""Scene fusion (planes, majority vote), the fused-scene cache, scene splits, limited labels, voxel labels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.data.fusion import fuse_scene, load_or_fuse, load_or_fuse_all
from ppkt.data.readers.folder import RGBDFolder
from ppkt.data.sample import PointBatch, collate_points
from ppkt.data.segmentation import SceneSegmentationDataset, labelled_subset, point_label_mask, voxel_labels
from ppkt.data.transforms import Compose, RandomCrop, RandomRotate, Voxelize
from ppkt.data.types import FusedScene
from ppkt.errors import ConfigError, DataError

H, W = 6, 8
K = np.array([[10.0, 0.0, 3.5], [0.0, 10.0, 2.5], [0.0, 0.0, 1.0]])
#: camera at (0.5, 0.5, 1) looking straight down (-z): camera x → world +x, camera y → world −y
DOWN = np.array([[1.0, 0, 0, 0.5], [0, -1, 0, 0.5], [0, 0, -1, 1.0], [0, 0, 0, 1]])
#: camera at (0, 0, 1) looking along +x: camera x → world −y, camera y → world −z
ALONG_X = np.array([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.0], [0, 0, 0, 1]])


def write_frame(
    folder: Path, name: str, depth_m: float, pose: np.ndarray, red: int, label: np.ndarray | None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "intrinsics.txt").write_text("\n".join(" ".join(map(str, r)) for r in K))
    color = np.zeros((H, W, 3), np.uint8)
    color[..., 0] = red
    Image.fromarray(color).save(folder / f"{name}.color.png")
    Image.fromarray(np.full((H, W), round(depth_m * 1000), np.uint16)).save(folder / f"{name}.depth.png")
    (folder / f"{name}.pose.txt").write_text("\n".join(" ".join(map(str, r)) for r in pose))
    if label is not None:
        Image.fromarray(label.astype(np.uint16)).save(folder / f"{name}.label.png")


def vote_labels() -> np.ndarray:
    """Four 3×4 quadrants; a 0.5 m voxel grid puts each quadrant of the DOWN frame in its own voxel."""
    lab = np.zeros((H, W), np.int64)
    # top-left (world x < 0.5, y > 0.5): 7×0, 3×4, 2×2 → 4 (class 0 never votes)
    lab[0:3, 0:4] = np.array([[0, 0, 0, 0], [0, 0, 0, 4], [4, 4, 2, 2]])
    # top-right (x > 0.5, y > 0.5): all unlabelled → 0
    # bottom-left (x < 0.5, y < 0.5): 6×1, 6×2 → tie → the smaller class, 1
    lab[3:6, 0:4] = np.array([[1, 1, 1, 1], [1, 1, 2, 2], [2, 2, 2, 2]])
    # bottom-right (x > 0.5, y < 0.5): 5×3, 4×0, 3×1 → 3
    lab[3:6, 4:8] = np.array([[3, 3, 3, 3], [3, 0, 0, 0], [0, 1, 1, 1]])
    return lab


@pytest.fixture
def vote_scene(tmp_path: Path) -> Path:
    """Two frames of the floor z = 0 from the same pose; only the first has a label file."""
    scene = tmp_path / "data" / "vote"
    write_frame(scene, "000", 1.0, DOWN, 255, vote_labels())
    write_frame(scene, "001", 1.0, DOWN, 0, None)
    return scene


@pytest.fixture
def planes_scene(tmp_path: Path) -> Path:
    """A floor frame (z = 0, class 1) and a wall frame (x = 2, class 2)."""
    scene = tmp_path / "data" / "planes"
    write_frame(scene, "000", 1.0, DOWN, 200, np.ones((H, W)))
    write_frame(scene, "001", 2.0, ALONG_X, 100, np.full((H, W), 2))
    return scene


def test_fused_points_lie_on_the_known_planes(planes_scene: Path) -> None:
    s = fuse_scene(RGBDFolder(planes_scene), voxel_size=0.25)
    assert s.xyz.dtype == np.float32 and s.rgb.dtype == np.float32 and s.label.dtype == np.int64
    floor, wall = s.label == 1, s.label == 2
    assert floor.sum() > 0 and wall.sum() > 0 and (floor | wall).all()
    np.testing.assert_allclose(s.xyz[floor, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(s.xyz[wall, 0], 2.0, atol=1e-6)
    # footprints: floor x ∈ 0.5 ± 0.35, y ∈ 0.5 ± 0.25; wall y ∈ ∓0.7, z ∈ 1 ± 0.5
    assert s.xyz[floor, 0].min() >= 0.15 - 1e-6 and s.xyz[floor, 0].max() <= 0.85 + 1e-6
    assert s.xyz[wall, 2].min() >= 0.5 - 1e-6 and s.xyz[wall, 2].max() <= 1.5 + 1e-6
    np.testing.assert_allclose(s.rgb[floor], np.tile([200 / 255, 0, 0], (floor.sum(), 1)), atol=1e-6)
    np.testing.assert_allclose(s.rgb[wall], np.tile([100 / 255, 0, 0], (wall.sum(), 1)), atol=1e-6)
    # one point per 0.25 m voxel, no two in the same voxel
    grid = np.floor(s.xyz / 0.25).astype(np.int64)
    assert len(np.unique(grid, axis=0)) == len(s)
    # the depth range drops the wall (depth 2 m)
    near = fuse_scene(RGBDFolder(planes_scene), voxel_size=0.25, max_depth=1.5)
    assert (near.label == 1).all() and len(near) == floor.sum()


def test_majority_vote_ignores_unlabelled_and_frames_without_labels(vote_scene: Path) -> None:
    s = fuse_scene(RGBDFolder(vote_scene), voxel_size=0.5)
    # voxels in (x, y, z) order: (0,0,0) bottom-left, (0,1,0) top-left, (1,0,0) bottom-right, (1,1,0)
    assert s.label.tolist() == [1, 4, 3, 0]
    np.testing.assert_allclose(
        s.xyz, [[0.3, 0.35, 0], [0.3, 0.65, 0], [0.7, 0.35, 0], [0.7, 0.65, 0]], atol=1e-6
    )
    np.testing.assert_allclose(s.rgb[:, 0], 0.5, atol=1e-6)  # red 255 (frame 0) and 0 (frame 1) averaged
    assert s.num_classes == 5 and s.class_names is None
    # frame_skip=2 keeps frame 000 only; small chunks give the same result
    s2 = fuse_scene(RGBDFolder(vote_scene), voxel_size=0.5, frame_skip=2, chunk_points=10)
    assert s2.label.tolist() == [1, 4, 3, 0]
    np.testing.assert_allclose(s2.rgb[:, 0], 1.0, atol=1e-6)


def test_bad_frames_stop_or_are_skipped(planes_scene: Path) -> None:
    (planes_scene / "001.depth.png").write_bytes(b"truncated")
    with pytest.raises(DataError, match=r"001\.depth\.png"):
        fuse_scene(RGBDFolder(planes_scene), voxel_size=0.25)
    with pytest.warns(UserWarning, match="skipping bad frame planes/001"):
        s = fuse_scene(RGBDFolder(planes_scene), voxel_size=0.25, skip_bad=True)
    assert (s.label == 1).all() and len(s) > 0
    with pytest.raises(ConfigError, match="voxel_size"):
        fuse_scene(RGBDFolder(planes_scene), voxel_size=0.0)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_cache_is_reused_and_recomputed_on_recipe_mismatch(vote_scene: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = RGBDFolder(vote_scene)
    first = load_or_fuse(folder, voxel_size=0.5, cache_dir=cache)
    files = list(cache.glob("fused-*/vote.npz"))
    assert len(files) == 1
    path = files[0]
    before = _stat(path)
    again = load_or_fuse(folder, voxel_size=0.5, cache_dir=cache)
    assert _stat(path) == before  # not rewritten
    assert again.label.tolist() == first.label.tolist() == [1, 4, 3, 0]
    np.testing.assert_array_equal(again.xyz, first.xyz)
    # another voxel size: another cache file, the first one untouched
    load_or_fuse(folder, voxel_size=0.25, cache_dir=cache)
    assert len(list(cache.glob("fused-*/vote.npz"))) == 2 and _stat(path) == before
    # a changed source file (new mtime) is a recipe mismatch
    label_file = vote_scene / "000.label.png"
    st = label_file.stat()
    os.utime(label_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_or_fuse(RGBDFolder(vote_scene), voxel_size=0.5, cache_dir=cache)
    assert _stat(path) != before
    # a dataset.json beside the scene enters the recipe and names the classes
    before = _stat(path)
    names = ["unlabelled", "floor", "wall", "chair", "table", "lamp"]
    info = {"format": "ppkt-rgbd-folder", "classes": names, "recipe": {"seed": 3}}
    (vote_scene.parent / "dataset.json").write_text(json.dumps(info))
    s = load_or_fuse(RGBDFolder(vote_scene), voxel_size=0.5, cache_dir=cache)
    assert _stat(path) != before
    assert s.class_names == tuple(names) and s.num_classes == 6
    recipe = json.loads(str(np.load(path)["meta"]))["recipe"]
    assert recipe["dataset"] == {"recipe": {"seed": 3}, "classes": names}
    assert recipe["frames"] == ["000", "001"] and recipe["voxel_size"] == 0.5
    # a new frame changes the frame list
    before = _stat(path)
    write_frame(vote_scene, "002", 1.0, DOWN, 0, None)
    s = load_or_fuse(RGBDFolder(vote_scene), voxel_size=0.5, cache_dir=cache)
    assert _stat(path) != before and s.label.tolist() == [1, 4, 3, 0]
    np.testing.assert_allclose(s.rgb[:, 0], 1 / 3, atol=1e-6)
    # a corrupt cache file is replaced
    path.write_bytes(b"not a zip")
    assert load_or_fuse(RGBDFolder(vote_scene), voxel_size=0.5, cache_dir=cache).label.tolist() == [
        1,
        4,
        3,
        0,
    ]
    assert np.load(path)["label"].tolist() == [1, 4, 3, 0]


def test_synthetic_scene_fuses_onto_room_planes(tmp_path: Path) -> None:
    from ppkt.data.synth import synthesize

    root = synthesize(
        tmp_path / "synth", scenes=3, frames_per_scene=2, seed=0, image_size=(30, 40), depth_noise=None
    )
    scenes = load_or_fuse_all(root, voxel_size=0.05, min_depth=0.1, max_depth=6.0, cache_dir=tmp_path / "c")
    assert [s.name for s in scenes] == ["scene_0000", "scene_0001", "scene_0002"]
    assert len(list((tmp_path / "c").glob("fused-*/scene_*.npz"))) == 3
    assert len(list((tmp_path / "c").glob("fused-*"))) == 1  # one cache folder per dataset and recipe
    for s in scenes:
        assert s.class_names is not None and s.class_names[:3] == ("unlabelled", "floor", "wall")
        assert s.num_classes == len(s.class_names)
        room = json.loads((root / s.name / "scene.json").read_text())["room"]
        hx, hy = room["half_size"]
        floor, wall = s.label == 1, s.label == 2
        assert floor.sum() > 10 and wall.sum() > 10
        z = np.abs(s.xyz[floor, 2])
        assert np.median(z) < 0.005 and z.max() < 0.05
        d_wall = np.minimum(np.abs(np.abs(s.xyz[wall, 0]) - hx), np.abs(np.abs(s.xyz[wall, 1]) - hy))
        assert np.median(d_wall) < 0.005 and d_wall.max() < 0.05


def test_labelled_subset_scenes_mode() -> None:
    names = [f"s{i}" for i in range(10)]
    for f, k in ((0.25, 3), (0.01, 1), (0.1, 1), (1.0, 10)):
        assert len(labelled_subset(names, f, seed=0)) == k
    small, big = labelled_subset(names, 0.2, seed=4), labelled_subset(names, 0.5, seed=4)
    assert set(small) <= set(big) and small == labelled_subset(names, 0.2, seed=4)
    assert set(labelled_subset(list(reversed(names)), 0.2, seed=4)) == set(small)
    with pytest.raises(ConfigError, match="label_fraction"):
        labelled_subset(names, 0.0)


def make_fused(name: str, n: int, seed: int) -> FusedScene:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, n)  # classes 1..3, 0 = unlabelled
    xyz = rng.random((n, 3)).astype(np.float32)
    return FusedScene(name, xyz, rng.random((n, 3)).astype(np.float32), label, 4)


def test_label_fractions_of_the_segmentation_dataset() -> None:
    scenes = [make_fused(f"s{i}", 2000, i) for i in range(4)]
    full = SceneSegmentationDataset(scenes)
    assert len(full) == 4 and full.num_classes == 3
    s0 = full[0]
    assert s0.labels is not None
    np.testing.assert_array_equal(s0.labels.numpy(), np.where(scenes[0].label > 0, scenes[0].label - 1, -1))
    by_scene = SceneSegmentationDataset(scenes, label_mode="scenes", label_fraction=0.3, seed=1)
    assert len(by_scene) == 2 and by_scene.num_classes == 3  # ceil(0.3 · 4)
    assert [s.name for s in by_scene.scenes] == labelled_subset([s.name for s in scenes], 0.3, seed=1)
    by_point = SceneSegmentationDataset(
        scenes, label_mode="points", label_fraction=0.1, seed=1, ignore_index=255
    )
    assert len(by_point) == 4
    for i, s in enumerate(scenes):
        lab = by_point[i].labels
        assert lab is not None
        kept = (lab != 255).numpy()
        assert kept.sum() == round(0.1 * (s.label > 0).sum())
        assert (s.label[kept] > 0).all() and (lab.numpy()[kept] == s.label[kept] - 1).all()
    again = SceneSegmentationDataset(
        scenes, label_mode="points", label_fraction=0.1, seed=1, ignore_index=255
    )
    other = SceneSegmentationDataset(
        scenes, label_mode="points", label_fraction=0.1, seed=2, ignore_index=255
    )
    assert torch.equal(again.labels[0], by_point.labels[0]) and not torch.equal(
        other.labels[0], by_point.labels[0]
    )
    mask = point_label_mask(scenes[0].label > 0, 0.5, seed=1, name="s0")
    assert (mask[(by_point.labels[0] != 255).numpy()]).all()  # nested: 10 % ⊂ 50 %
    with pytest.raises(ConfigError, match="label_mode"):
        SceneSegmentationDataset(scenes, label_mode="voxels")
    # class counts: what training sees, withheld labels excluded
    want = sum(np.bincount(s.label[s.label > 0] - 1, minlength=3) for s in by_scene.scenes)
    np.testing.assert_array_equal(by_scene.class_counts().numpy(), want)
    kept = [(lab[lab != 255]) for lab in by_point.labels]
    assert by_point.class_counts().tolist() == torch.bincount(torch.cat(kept), minlength=3).tolist()


def test_voxel_labels_majority_vote() -> None:
    inverse = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([2, 1, 2, 3, 1, -1])
    # voxel 0: 2 wins; voxel 1: tie 3/1 → 1; voxel 2: only ignored; voxel 3: no points
    assert voxel_labels(inverse, labels, 4, 4).tolist() == [2, 1, -1, -1]
    assert voxel_labels(inverse, torch.where(labels < 0, 255, labels), 4, 4, 255).tolist() == [2, 1, 255, 255]
    with pytest.raises(ValueError, match="labels must be in"):
        voxel_labels(inverse, labels, 4, 3)


def test_collate_two_segmentation_samples() -> None:
    torch.manual_seed(0)
    scenes = [make_fused("a", 500, 0), make_fused("b", 300, 1)]
    transform = Compose([RandomRotate(axis=2), Voxelize(0.2, features=("rgb", "height"))])
    ds = SceneSegmentationDataset(scenes, transform)
    samples = [ds[0], ds[1]]
    batch = collate_points(samples)
    n_vox = [int(s.coords.shape[0]) for s in samples]  # type: ignore[union-attr]
    assert batch.coords.shape == (sum(n_vox), 4) and batch.feats.shape == (sum(n_vox), 4)
    assert batch.offset.tolist() == [n_vox[0], sum(n_vox)] and batch.point_offset.tolist() == [500, 800]
    assert type(batch) is PointBatch  # image-free: no images, no pairing
    assert batch.labels is not None and batch.labels.shape == (800,)
    assert int(batch.inverse[500:].min()) >= n_vox[0] and int(batch.inverse.max()) == sum(n_vox) - 1
    target = voxel_labels(batch.inverse, batch.labels, sum(n_vox), ds.num_classes)
    per_sample = [
        voxel_labels(s.inverse, s.labels, n, ds.num_classes)  # type: ignore[arg-type]
        for s, n in zip(samples, n_vox)
    ]
    assert torch.equal(target, torch.cat(per_sample))
    # every voxel's label is one of its points' labels
    pts = batch.labels
    for v in range(0, sum(n_vox), 7):
        if target[v] >= 0:
            assert int(target[v]) in pts[batch.inverse == v].tolist()


def test_random_crop_keeps_a_floor_plan_square_with_its_labels() -> None:
    torch.manual_seed(0)
    scene = make_fused("a", 4000, 0)
    scene.xyz[:, :2] *= 4.0  # a 4 m × 4 m room, 1 m high
    ds = SceneSegmentationDataset([scene])
    full = ds[0]
    for _ in range(5):
        crop = RandomCrop(1.5, up_axis=2)(full)
        assert crop.labels is not None and full.labels is not None
        n = crop.points.shape[0]
        assert 0 < n < full.points.shape[0] and crop.colors.shape == (n, 3) and crop.labels.shape == (n,)
        extent = crop.points[:, :2].max(0).values - crop.points[:, :2].min(0).values
        assert (extent <= 1.5 + 1e-6).all()
        assert float(crop.points[:, 2].max() - crop.points[:, 2].min()) > 0.9  # the whole height is kept
        # every kept point keeps its own colour and label
        idx = torch.cdist(crop.points, full.points).argmin(1)
        assert torch.equal(full.colors[idx], crop.colors) and torch.equal(full.labels[idx], crop.labels)
    # a crop larger than the room keeps it whole
    assert RandomCrop(10.0)(full).points.shape[0] == 4000
    with pytest.raises(ValueError, match="> 0 metres"):
        RandomCrop(0.0)


def test_training_transforms_jitter_colours_by_default_and_evaluation_does_not() -> None:
    from ppkt.config import FinetuneConfig, PretrainConfig
    from ppkt.data.transforms import ColorJitter
    from ppkt.training.data import build_transform
    from ppkt.training.seg_data import seg_transform

    cfg = FinetuneConfig().data
    names = [type(t).__name__ for t in seg_transform(cfg, train=True).transforms]
    assert names == ["RandomCrop", "RandomRotate", "RandomScale", "ColorJitter", "Voxelize"]
    assert not any(isinstance(t, ColorJitter) for t in seg_transform(cfg, train=False).transforms)
    # the jittered colours reach the network's input features; labels and geometry are the scene's own
    torch.manual_seed(0)
    full = SceneSegmentationDataset([make_fused("a", 2000, 0)])[0]
    rgb = Compose([ColorJitter(), Voxelize(0.05)])(full)
    ref = Voxelize(0.05)(full)
    assert rgb.feats is not None and ref.feats is not None and not torch.allclose(rgb.feats, ref.feats)
    assert rgb.inverse is not None and ref.inverse is not None and torch.equal(rgb.inverse, ref.inverse)
    assert rgb.coords is not None and ref.coords is not None and torch.equal(rgb.coords, ref.coords)
    cfg.augment.color_jitter.permute, cfg.augment.color_jitter.gain = False, 0.0
    cfg.augment.color_jitter.shift, cfg.augment.color_jitter.gray = 0.0, 0.0
    assert "ColorJitter" not in [type(t).__name__ for t in seg_transform(cfg, train=True).transforms]
    # pretraining: off by default; when asked, jittered in training, never at evaluation
    p = PretrainConfig().data
    assert "ColorJitter" not in [type(t).__name__ for t in build_transform(p, train=True).transforms]
    p.augment.color_jitter.gray = 0.5
    assert "ColorJitter" in [type(t).__name__ for t in build_transform(p, train=True).transforms]
    assert "ColorJitter" not in [type(t).__name__ for t in build_transform(p, train=False).transforms]
