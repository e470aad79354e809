"""The one batch format, joint 2D/3D transforms (pairing stays exact), splits and bad frames."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.data.frame_dataset import FrameDataset, collate_skip, split_frames
from ppkt.data.pairing import frame_to_sample
from ppkt.data.readers.folder import RGBDFolder
from ppkt.data.sample import PairedSample, collate
from ppkt.data.transforms import (
    ColorJitter,
    Compose,
    RandomColorDrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotate,
    RandomScale,
    Superpixels,
    Voxelize,
)
from ppkt.data.types import Frame
from ppkt.errors import DataError

H, W = 24, 32
K = np.array([[20.0, 0.0, W / 2], [0.0, 20.0, H / 2], [0.0, 0.0, 1.0]])


def make_frame(seed: int = 0, label: bool = True) -> Frame:
    """A frame whose colour encodes the pixel: R = u, G = v (so pairing errors are visible)."""
    rng = np.random.default_rng(seed)
    vv, uu = np.mgrid[0:H, 0:W]
    color = np.stack([uu * 7, vv * 10, rng.integers(0, 255, (H, W))], axis=2).astype(np.uint8)
    depth = (1.0 + rng.random((H, W))).astype(np.float32)
    depth[0, 0] = 0.0
    lab = rng.integers(0, 5, (H, W)) if label else None
    return Frame("scene", f"f{seed}", color, depth, K.copy(), np.eye(4), label=lab)


def pixel_color(sample: PairedSample) -> torch.Tensor:
    """Colour of each pair's pixel, read (nearest) from the sample's (transformed) image."""
    u = sample.pair_uv[:, 0].round().long()
    v = sample.pair_uv[:, 1].round().long()
    return sample.images[sample.pair_image, :, v, u]


def test_frame_to_sample_pairs_each_point_with_its_pixel() -> None:
    f = make_frame()
    s = frame_to_sample(f)
    assert s.points.shape == (H * W - 1, 3)
    torch.testing.assert_close(pixel_color(s), s.colors[s.pair_point])
    assert s.labels is not None and int(s.labels.min()) >= -1
    assert s.labels[0].item() == f.label[0, 1] - 1  # type: ignore[index]


def test_flip_keeps_pairing_exact() -> None:
    s = frame_to_sample(make_frame())
    t = RandomHorizontalFlip(p=1.0)(s)
    assert torch.equal(t.images, s.images.flip(-1))
    torch.testing.assert_close(pixel_color(t), t.colors[t.pair_point])
    assert s.pair_uv is not t.pair_uv  # input untouched


@pytest.mark.parametrize("size", [(12, 16), (24, 32), (48, 64)])
def test_crop_resize_maps_pixel_centres(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    s = frame_to_sample(make_frame())
    t = RandomResizedCrop(size, scale=(0.3, 1.0))(s)
    assert t.images.shape[-2:] == size
    assert 0 < t.pair_point.numel() <= s.pair_point.numel()
    # u' = (u − x0 + ½)·W'/w − ½ is affine in u with slope W'/w: recover it from the pairs
    u0 = s.pair_uv[t.pair_point, 0]
    slope = np.polyfit(u0.numpy(), t.pair_uv[:, 0].numpy(), 1)[0]
    assert slope > 0
    # inside the image
    assert float(t.pair_uv[:, 0].min()) >= -0.5 and float(t.pair_uv[:, 0].max()) < size[1] - 0.5
    # the red channel encodes u: nearest-pixel colour of the resized image matches the point's colour
    # within the interpolation blur of one source pixel (7 grey levels per pixel, ≤ 1 pixel of blur)
    if size[0] <= H:
        err = (pixel_color(t)[:, 0] - t.colors[t.pair_point, 0]).abs() * 255
        assert float(err.median()) <= 7.0 * W / size[1] / 2 + 1.0


def test_centred_resize_is_deterministic_and_exact_at_full_size() -> None:
    s = frame_to_sample(make_frame())
    t = RandomResizedCrop((H, W), random=False)(s)
    assert torch.equal(t.images, s.images)
    assert torch.equal(t.pair_uv, s.pair_uv)


def test_rotation_and_scale_move_points_only() -> None:
    s = frame_to_sample(make_frame())
    t = Compose([RandomRotate(axis=2, max_degrees=90), RandomScale(2.0, 2.0)])(s)
    ratio = t.points.norm(dim=1) / s.points.norm(dim=1)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 2.0))
    torch.testing.assert_close(t.points[:, 2], 2 * s.points[:, 2])
    assert torch.equal(t.pair_uv, s.pair_uv) and torch.equal(t.images, s.images)


def test_color_drop_greys_the_points_only() -> None:
    s = frame_to_sample(make_frame())
    dropped = Voxelize(0.1, ("rgb",))(RandomColorDrop(1.0)(s))
    assert dropped.feats is not None and torch.equal(dropped.feats, torch.zeros_like(dropped.feats))
    assert torch.equal(dropped.images, s.images) and torch.equal(dropped.points, s.points)
    assert torch.equal(RandomColorDrop(0.0)(s).colors, s.colors)
    torch.manual_seed(0)
    kept = sum(torch.equal(RandomColorDrop(0.4)(s).colors, s.colors) for _ in range(500))
    assert 260 <= kept <= 340  # 60 % kept
    with pytest.raises(ValueError, match="probability"):
        RandomColorDrop(1.5)


def test_color_jitter_permutes_scales_and_greys_the_colours_only() -> None:
    s = frame_to_sample(make_frame())
    c = s.colors.float()
    torch.manual_seed(0)
    for _ in range(20):  # permute only: every point's colour is the same channel permutation of its own
        t = ColorJitter(permute=True, gain=0.0, shift=0.0, gray=0.0)(s)
        perms = [
            p
            for p in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0])
            if torch.equal(t.colors, c[:, p])
        ]
        assert len(perms) == 1
        assert torch.equal(t.points, s.points) and torch.equal(t.images, s.images)
        assert t.labels is not None and s.labels is not None and torch.equal(t.labels, s.labels)
    seen = set()
    for _ in range(50):  # gain/shift only: per channel an affine map c' = (c − mean)·g + mean + b, clamped
        t = ColorJitter(permute=False, gain=0.4, shift=0.2, gray=0.0)(s)
        inside = ((t.colors > 0) & (t.colors < 1)).all(1)
        for ch in range(3):
            x = c[inside, ch] - c[:, ch].mean()
            y = t.colors[inside, ch]
            g = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
            b = float(y.mean() - g * x.mean() - c[:, ch].mean())
            assert 0.6 - 1e-4 <= g <= 1.4 + 1e-4 and -0.2 - 1e-4 <= b <= 0.2 + 1e-4
            torch.testing.assert_close(y, x * g + c[:, ch].mean() + b, atol=1e-5, rtol=0)
            seen.add(round(g, 2))
        assert float(t.colors.min()) >= 0 and float(t.colors.max()) <= 1
    assert len(seen) > 10  # the factors are random, not fixed
    grey = ColorJitter(permute=False, gain=0.0, shift=0.0, gray=1.0)(s)
    torch.testing.assert_close(grey.colors, c.mean(1, keepdim=True).expand(-1, 3))
    assert torch.equal(s.colors.float(), c)  # the input sample is untouched
    with pytest.raises(ValueError, match="gain"):
        ColorJitter(gain=1.5)


def test_superpixels_label_each_pair_and_survive_image_transforms() -> None:
    pytest.importorskip("skimage")
    from skimage.segmentation import slic

    s = frame_to_sample(make_frame())
    vv, uu = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    s.images = torch.stack([uu // 8 / 4, vv // 6 / 4, (uu + vv) / (H + W)]).unsqueeze(0).float()  # blocks
    sp = Superpixels(n_segments=12)
    t = sp(s)
    assert t.pair_segment is not None and t.pair_segment.dtype == torch.long
    img = s.images[0].permute(1, 2, 0).double().numpy()
    want = torch.from_numpy(slic(img, n_segments=12, compactness=10.0, start_label=0))
    u, v = s.pair_uv[:, 0].long(), s.pair_uv[:, 1].long()
    assert torch.equal(t.pair_segment, want[v, u].long())
    assert 4 <= int(t.pair_segment.max()) + 1 <= 24  # about the requested number of segments
    assert torch.equal(sp(s).pair_segment, t.pair_segment)  # remembered per frame: same answer
    # crop/flip drop and move pairs: the segment follows its pair, and voxelize keeps one pair per voxel
    torch.manual_seed(0)
    moved = Compose([RandomResizedCrop((12, 16), (0.3, 0.6)), RandomHorizontalFlip(1.0), Voxelize(0.1)])(t)
    assert moved.pair_segment is not None and moved.pair_segment.shape == moved.pair_point.shape
    assert torch.equal(moved.pair_segment, t.pair_segment[moved.pair_point])  # pair_point = original pair
    other = Compose([RandomResizedCrop((12, 16), random=False), Voxelize(0.1)])
    batch = collate([moved, other(sp(frame_to_sample(make_frame(1))))])
    assert batch.pair_segment is not None and batch.pair_segment.shape == batch.pair_image.shape
    with pytest.raises(ValueError, match="superpixels"):
        collate([moved, other(frame_to_sample(make_frame(1)))])
    with pytest.raises(ValueError, match="n_segments"):
        Superpixels(0)


def test_voxelize_one_pair_per_voxel_and_features() -> None:
    s = Voxelize(0.1, ("rgb", "ones", "height"))(frame_to_sample(make_frame()))
    assert s.coords is not None and s.feats is not None and s.pair_voxel is not None and s.inverse is not None
    M = s.coords.shape[0]
    assert s.feats.shape == (M, 5)
    assert int(s.coords.min()) == 0
    assert s.pair_voxel.unique().numel() == s.pair_voxel.numel()  # at most one pair per voxel
    assert torch.equal(s.inverse[s.pair_point], s.pair_voxel)  # each pair's point lies in its voxel
    assert s.pair_voxel.numel() == M  # every voxel here has an in-image point
    with pytest.raises(ValueError, match="unknown voxel features"):
        Voxelize(0.1, ("normals",))


def test_collate_shifts_indices_and_offsets() -> None:
    vox = Voxelize(0.1)
    a, b = vox(frame_to_sample(make_frame(0))), vox(frame_to_sample(make_frame(1)))
    batch = collate([a, b])
    ma, mb = a.coords.shape[0], b.coords.shape[0]  # type: ignore[union-attr]
    assert batch.offset.tolist() == [ma, ma + mb]
    assert batch.point_offset.tolist() == [len(a.points), len(a.points) + len(b.points)]
    assert batch.coords[:ma, 0].eq(0).all() and batch.coords[ma:, 0].eq(1).all()
    assert batch.image_offset.tolist() == [1, 2]
    assert torch.equal(batch.pair_voxel[len(a.pair_voxel) :], b.pair_voxel + ma)  # type: ignore[arg-type]
    assert batch.pair_image.tolist() == [0] * len(a.pair_voxel) + [1] * len(b.pair_voxel)  # type: ignore[arg-type]
    assert torch.equal(batch.inverse[len(a.points) :], b.inverse + ma)  # type: ignore[operator]
    assert batch.labels is not None and batch.labels.shape == (len(a.points) + len(b.points),)
    # pairs still point at the right pixels after collation: voxel colour ≈ pixel colour
    with pytest.raises(ValueError, match="apply Voxelize first"):
        collate([frame_to_sample(make_frame())])


def write_scene(root: Path, n: int) -> RGBDFolder:
    root.mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "intrinsics.txt", K)
    for i in range(n):
        f = make_frame(i, label=False)
        Image.fromarray(f.color).save(root / f"{i:04d}.color.png")
        Image.fromarray((f.depth * 1000).astype(np.uint16)).save(root / f"{i:04d}.depth.png")
        np.savetxt(root / f"{i:04d}.pose.txt", np.eye(4))
    return RGBDFolder(root)


def test_split_by_scene_and_by_trajectory_tail(tmp_path: Path) -> None:
    scenes = [write_scene(tmp_path / f"s{i}", 5) for i in range(4)]
    train, held = split_frames(scenes, 0.25, "auto")
    assert {r.folder.scene for r in held} == {"s3"} and len(train) == 15
    train, held = split_frames(scenes[:1], 0.2, "auto", frame_skip=2)
    assert [r.index for r in train] == [0, 2] and [r.index for r in held] == [4]


def test_extra_scenes_join_the_training_frames_only(tmp_path: Path) -> None:
    """``data.extra_scenes``: rooms 3 and 4 of the embedded seed (another dataset folder) follow the
    training frames; the held-out frames stay the base rooms'; a negative count or a dataset folder is a
    config error naming the key."""
    from ppkt.config import PretrainConfig
    from ppkt.errors import ConfigError
    from ppkt.training.data import frame_splits

    cfg = PretrainConfig().data
    cfg.synth.scenes, cfg.synth.frames_per_scene, cfg.synth.image_size = 3, 2, (32, 40)
    cfg.cache_dir, cfg.heldout = str(tmp_path), 0.3
    base = frame_splits(cfg, verbose=False)
    cfg.extra_scenes = 2
    cfg.validate()
    more = frame_splits(cfg, verbose=False)
    assert [r.folder.scene for r in base.train] == ["scene_0000"] * 2 + ["scene_0001"] * 2
    assert [(r.folder.scene, r.index) for r in more.train[4:]] == [
        ("scene_0003", 0),
        ("scene_0003", 1),
        ("scene_0004", 0),
        ("scene_0004", 1),
    ]

    def where(refs: list) -> list[tuple[Path, int]]:
        return [(r.folder.root, r.index) for r in refs]

    assert where(more.train[:4]) == where(base.train) and where(more.heldout) == where(base.heldout)
    assert more.root == base.root and more.train[4].folder.root.parent != base.root
    for bad, match in (({"extra_scenes": -1}, "extra_scenes"), ({"root": str(tmp_path)}, "extra_scenes")):
        cfg = PretrainConfig().data
        cfg.extra_scenes = 1
        for k, v in bad.items():
            setattr(cfg, k, v)
        with pytest.raises(ConfigError, match=match):
            cfg.validate()


def test_bad_frame_errors_or_is_skipped_with_warning(tmp_path: Path) -> None:
    folder = write_scene(tmp_path / "s", 3)
    (tmp_path / "s" / "0001.color.png").write_bytes(b"not a png")
    train, _ = split_frames([folder], 0.0, "tail")
    strict = FrameDataset(train, Voxelize(0.1))
    with pytest.raises(DataError, match=r"0001\.color\.png"):
        strict[1]
    lenient = FrameDataset(train, Voxelize(0.1), skip_bad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [lenient[i] for i in range(3)]
    assert items[1] is None and any("0001.color.png" in str(w.message) for w in caught)
    batch = collate_skip(items)
    assert batch is not None and batch.batch_size == 2
    assert collate_skip([None]) is None


def test_depth_out_of_range_is_a_bad_frame(tmp_path: Path) -> None:
    folder = write_scene(tmp_path / "s", 1)
    train, _ = split_frames([folder], 0.0, "tail")
    with pytest.raises(DataError, match="no depth in range"):
        FrameDataset(train, Voxelize(0.1), max_depth=0.5)[0]
