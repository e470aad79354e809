"""Teacher-feature cache: augmentations act on cached maps like on the pairing; store/reuse/invalidate;
pretraining and ``ppkt cache-features`` / ``ppkt evaluate --task retrieval`` end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ppkt.cli.main import main
from ppkt.config import PretrainConfig, load_config
from ppkt.data.sample import PairedSample, collate
from ppkt.data.transforms import (
    Compose,
    CropCachedFeatures,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Voxelize,
)
from ppkt.data.types import CachedFeatures
from ppkt.models.teachers import build_teacher
from ppkt.pipelines.cache_features import feature_cache_for, fill_feature_cache
from ppkt.training.data import frame_splits, make_loader
from tests.conftest import TINY_PRETRAIN, assert_mentions

H, W = 96, 128  # original frame
HC, WC = 48, 64  # cache image size
STRIDES = [4, 8]


def coordinate_cache() -> CachedFeatures:
    """Maps whose two channels are the original-frame pixel coordinates (u, v) of each cell's centre.

    Bilinear interpolation reproduces a linear function exactly, so after any crop/resize/flip a lookup of
    the cropped maps at a pair's pixel must give back that pair's pixel in the original frame."""
    maps = []
    for s in STRIDES:
        h, w = -(-HC // s), -(-WC // s)
        # cell centre in cache pixels (j + ½)s − ½, then to original pixels (x + ½)·W/Wc − ½
        uc = (torch.arange(w, dtype=torch.float64) + 0.5) * s - 0.5
        vc = (torch.arange(h, dtype=torch.float64) + 0.5) * s - 0.5
        u = (uc + 0.5) * (W / WC) - 0.5
        v = (vc + 0.5) * (H / HC) - 0.5
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        maps.append(torch.stack([uu, vv]).unsqueeze(0).float())
    return CachedFeatures(maps, STRIDES, (HC, WC), (H, W))


def frame_sample() -> PairedSample:
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    uv = torch.stack([u.reshape(-1), v.reshape(-1)], 1).float()
    n = uv.shape[0]
    g = torch.Generator().manual_seed(0)
    return PairedSample(
        points=torch.rand(n, 3, generator=g) * 3,
        colors=torch.rand(n, 3, generator=g),
        images=torch.rand(1, 3, H, W, generator=g),
        pair_point=torch.arange(n),
        pair_image=torch.zeros(n, dtype=torch.long),
        pair_uv=uv,
        intrinsics=torch.eye(3, dtype=torch.float64)[None],
        poses=torch.eye(4, dtype=torch.float64)[None],
        teacher_cache=coordinate_cache(),
        view=torch.eye(3, dtype=torch.float64),
    )


def lookup(fmap: torch.Tensor, uv: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear lookup at pixels ``uv`` of a map of ``stride`` for an image of ``size`` (UPL convention)."""
    h, w = fmap.shape[-2:]
    grid = torch.stack([(uv[:, 0] + 0.5) / (w * stride), (uv[:, 1] + 0.5) / (h * stride)], 1) * 2 - 1
    out = F.grid_sample(
        fmap, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.view(fmap.shape[1], -1).T


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cropped_cached_maps_follow_the_pairing(seed: int) -> None:
    torch.manual_seed(seed)
    out_size = (40, 56)
    t = Compose([RandomResizedCrop(out_size, (0.3, 1.0)), RandomHorizontalFlip(0.5), CropCachedFeatures()])
    s = frame_sample()
    original = s.pair_uv.clone()
    r = t(s)
    assert r.teacher_cache is None and r.teacher_feats is not None
    for fmap, stride in zip(r.teacher_feats, STRIDES):
        assert fmap.shape == (1, 2, -(-out_size[0] // stride), -(-out_size[1] // stride))
        got = lookup(fmap, r.pair_uv, stride, out_size)
        want = original[r.pair_point]
        # pairs whose interpolation support lies inside the cached maps' centre grid (border padding
        # clamps outside it): a margin of half a cached cell plus one output cell, in original pixels
        hc, wc = -(-HC // stride), -(-WC // stride)
        mu = 0.5 * stride * W / WC + stride * W / out_size[1]
        mv = 0.5 * stride * H / HC + stride * H / out_size[0]
        lo_u, hi_u = 0.5 * stride * W / WC - 0.5, (wc - 0.5) * stride * W / WC - 0.5
        lo_v, hi_v = 0.5 * stride * H / HC - 0.5, (hc - 0.5) * stride * H / HC - 0.5
        inside = (want[:, 0] > lo_u + mu) & (want[:, 0] < hi_u - mu)
        inside &= (want[:, 1] > lo_v + mv) & (want[:, 1] < hi_v - mv)
        # ... and inside the output map's own centre grid
        ho, wo = fmap.shape[-2:]
        inside &= (r.pair_uv[:, 0] >= (stride - 1) / 2) & (r.pair_uv[:, 0] <= (wo - 0.5) * stride - 0.5)
        inside &= (r.pair_uv[:, 1] >= (stride - 1) / 2) & (r.pair_uv[:, 1] <= (ho - 0.5) * stride - 0.5)
        assert int(inside.sum()) > 50
        torch.testing.assert_close(got[inside], want[inside], atol=2e-3, rtol=0)


def test_collate_stacks_cached_features_and_rejects_a_mix() -> None:
    t = Compose([RandomResizedCrop((16, 20), (0.5, 1.0)), CropCachedFeatures(), Voxelize(0.5)])
    a, b = t(frame_sample()), t(frame_sample())
    batch = collate([a, b])
    assert batch.teacher_feats is not None
    assert [tuple(f.shape) for f in batch.teacher_feats] == [(2, 2, 4, 5), (2, 2, 2, 3)]
    c2 = Compose([RandomResizedCrop((16, 20)), Voxelize(0.5)])(
        PairedSample(**{**vars(frame_sample()), "teacher_cache": None, "view": None})
    )
    assert c2.teacher_feats is None
    with pytest.raises(ValueError, match="cached teacher features"):
        collate([a, c2])


def tiny_cfg(root: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [f"data.root={root}", *TINY_PRETRAIN, *extra])


def test_cache_is_filled_once_reused_and_refreshed_when_a_frame_changes(
    tiny_synth: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg(tiny_synth, f"data.cache_dir={tmp_path / 'cache'}")
    splits = frame_splits(cfg.data, verbose=False)
    frames = splits.train + splits.heldout
    teacher = build_teacher(cfg.teacher.name, cfg.teacher.weights, cfg.teacher.layers)
    cache, stats = fill_feature_cache(cfg, frames, teacher, verbose=False)
    assert (stats["computed"], stats["reused"]) == (len(frames), 0)
    assert json.loads((cache.root / "recipe.json").read_text())["layers"] == teacher.layers
    entry = cache.load(frames[0].folder, frames[0].index)
    assert entry is not None and all(m.dtype == torch.float16 for m in entry.maps)
    _, stats = fill_feature_cache(cfg, frames, teacher, verbose=False)
    assert (stats["computed"], stats["reused"]) == (0, len(frames))
    # touching one frame's colour file invalidates just that frame
    color = frames[1].folder.frame_files(frames[1].folder.frames[frames[1].index])[0]
    st = color.stat()
    os.utime(color, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, stats = fill_feature_cache(cfg, frames, teacher, verbose=False)
    assert (stats["computed"], stats["reused"]) == (1, len(frames) - 1)

    # evaluation transform (whole frame resized): cached features equal the teacher's, up to float16; the
    # cached loader leaves the images blank (the maps stand for them), the same loader without a cache not
    loader = make_loader(cfg.data, frames[:2], 2, train=False, num_workers=0, feature_cache=cache)
    batch = next(iter(loader))
    plain = next(iter(make_loader(cfg.data, frames[:2], 2, train=False, num_workers=0)))
    assert batch.teacher_feats is not None and plain.teacher_feats is None
    assert batch.images.shape == plain.images.shape and not batch.images.any() and plain.images.any()
    live = teacher(plain.images)
    for got, want in zip(batch.teacher_feats, live):
        assert got.shape == want.shape
        err = (got - want).abs().max() / want.abs().max()
        assert float(err) < 1e-2


@pytest.mark.parametrize("teacher_input", ["rgb", "hha"])
def test_cached_training_samples_skip_the_teacher_image_and_equal_those_that_compute_it(
    tiny_synth: Path, tmp_path: Path, teacher_input: str
) -> None:
    from ppkt.data.frame_dataset import FrameDataset
    from ppkt.training.data import build_transform

    cfg = tiny_cfg(tiny_synth, f"data.cache_dir={tmp_path / 'cache'}", f"data.teacher_input={teacher_input}")
    frames = frame_splits(cfg.data, verbose=False).train[:3]
    cache, _ = fill_feature_cache(cfg, frames, verbose=False)
    common = {"feature_cache": cache, "teacher_input": teacher_input}
    blank = FrameDataset(frames, build_transform(cfg.data, True), read_pixels=False, **common)
    full = FrameDataset(frames, build_transform(cfg.data, True), read_pixels=True, **common)
    for i in range(len(frames)):
        torch.manual_seed(i)
        a = blank[i]
        torch.manual_seed(i)
        b = full[i]
        assert a is not None and b is not None
        assert a.images.shape == b.images.shape and not a.images.any() and b.images.any()
        for name in ("coords", "feats", "inverse", "pair_point", "pair_image", "pair_uv", "pair_voxel"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert a.teacher_feats is not None and b.teacher_feats is not None
        for x, y in zip(a.teacher_feats, b.teacher_feats, strict=True):
            assert torch.equal(x, y)


def test_frames_another_process_published_meanwhile_are_reused(tiny_synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tiny_synth, f"data.cache_dir={tmp_path / 'cache'}")
    splits = frame_splits(cfg.data, verbose=False)
    frames = splits.train + splits.heldout
    teacher = build_teacher(cfg.teacher.name, cfg.teacher.weights, cfg.teacher.layers)
    other = feature_cache_for(cfg, teacher)  # another run's cache object on the same folder
    published: list[Path] = []

    def publish_the_rest(module: torch.nn.Module, inputs: object, output: list[torch.Tensor]) -> None:
        if not published:  # while this run computes its first batch, the other run stores every other frame
            for ref in frames[1:]:
                published.append(other.store(ref.folder, ref.index, [m[:1] for m in output], (60, 80)))

    teacher.register_forward_hook(publish_the_rest)
    cache, stats = fill_feature_cache(cfg, frames, teacher, batch_size=1, verbose=False)
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in published]
    assert (stats["computed"], stats["reused"]) == (1, len(frames) - 1) and len(published) == len(frames) - 1
    # storing a frame that holds a valid entry keeps that entry: it is never rewritten
    ref = frames[1]
    cache.store(ref.folder, ref.index, [torch.zeros(1, c, 1, 1) for c in teacher.out_channels], (60, 80))
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in published] == stamps


def test_missing_cache_entry_is_a_clear_error(tiny_synth: Path, tmp_path: Path) -> None:
    from ppkt.errors import DataError

    cfg = tiny_cfg(tiny_synth, f"data.cache_dir={tmp_path / 'c'}")
    splits = frame_splits(cfg.data, verbose=False)
    cache, _ = fill_feature_cache(cfg, splits.train[:1], verbose=False)
    loader = make_loader(cfg.data, splits.train[1:2], 1, train=True, num_workers=0, feature_cache=cache)
    with pytest.raises(DataError) as err:
        next(iter(loader))
    assert_mentions(err.value, splits.train[1].name, cache.root, "cache-features")  # frame, cache, remedy


def test_cache_features_cli_then_cached_pretraining_and_retrieval_eval(
    pretrain_run: Path, tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shared pretraining run filled its fresh cache with ``ppkt cache-features``, then pretrained."""
    metrics = json.loads((pretrain_run / "metrics.json").read_text())
    assert metrics["teacher_cache"]["computed"] == 0  # everything came from `cache-features`
    assert metrics["teacher_cache"]["reused"] == metrics["train_frames"] + metrics["heldout_frames"]
    assert metrics["loss_final"] > 0

    ev = tmp_path / "eval"
    ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    args = ["evaluate", "--task", "retrieval", "--ckpt", str(ckpt), "--data", str(tiny_synth)]
    assert main([*args, "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert {"retrieval_top1", "retrieval_top1_random_init", "retrieval_chance"} <= set(m)
    assert 0 <= m["retrieval_top1"] <= 1 and 0 < m["retrieval_chance"] <= 0.5
    assert m["retrieval_frames"] == 2  # eval.retrieval_frames of the checkpoint's config
    # a pretraining checkpoint is not a fine-tuning one and vice versa: clear errors
    missing = tmp_path / "nope.ckpt"
    capsys.readouterr()
    assert main(["evaluate", "--task", "retrieval", "--ckpt", str(missing), "--out", str(ev)]) == 2
    assert_mentions(capsys.readouterr().err, missing)


def test_weights_identity_follows_files_and_folders(tmp_path: Path) -> None:
    from ppkt.data.teacher_cache import weights_identity

    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    folder = tmp_path / "dinov2"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"1234")
    a, d = weights_identity(f), weights_identity(folder)
    f.write_bytes(b"abcd")
    (folder / "model.safetensors").write_bytes(b"12345")
    assert weights_identity(f) != a and weights_identity(folder) != d
    assert weights_identity(None) is None and weights_identity("facebook/dinov2-small") == {
        "id": "facebook/dinov2-small"
    }
