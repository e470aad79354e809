"""Multi-camera samples (V = 3 cameras of a synthetic cube scene) through the pretraining path: the
teacher-feature cache keyed per (frame, camera), cached maps that follow each image's own crop and flip, the
teacher/UPL pairing gather of the module, and the retrieval check."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ppkt.config import PretrainConfig, load_config
from ppkt.data import pairing
from ppkt.data.frame_dataset import FrameDataset
from ppkt.data.sample import collate
from ppkt.data.teacher_cache import FeatureCache
from ppkt.data.transforms import (
    AttachCachedFeatures,
    Compose,
    CropCachedFeatures,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Voxelize,
)
from ppkt.data.types import FrameRef, Scan
from ppkt.training.pretrain_module import PPKTPretrainModule
from ppkt.training.retrieval import retrieval_top1
from tests.test_sample import H, W, cube_scene

CAMS = ["cam_0", "cam_1", "cam_2"]


class OneFrameSource:
    """A frame source of one frame whose files are real files in ``root`` (the cache fingerprints them)."""

    def __init__(self, root: Path) -> None:
        self.root, self.scene, self.frames = root, "cube", ["000000"]
        root.mkdir(parents=True, exist_ok=True)
        (root / "000000.bin").write_bytes(b"points")

    def __len__(self) -> int:
        return 1

    def read(self, i: int) -> Any:
        raise NotImplementedError

    def frame_files(self, name: str) -> list[Path]:
        return [self.root / f"{name}.bin"]

    def describe(self) -> dict[str, Any]:
        return {"format": "test"}


def cache_for(
    tmp_path: Path, size: tuple[int, int] = (H, W), strides: tuple[int, ...] = (1, 4)
) -> FeatureCache:
    recipe = FeatureCache.make_recipe("t", None, ["a", "b"], strides, [2, 2], size)
    return FeatureCache(recipe, tmp_path / "cache")


def coordinate_maps(camera: int, strides: tuple[int, ...] = (1, 4)) -> list[torch.Tensor]:
    """Maps whose channels are ``(u + 100·camera, v)`` of each cell centre in the original image (cache
    size = image size; exact in float16): a lookup at a pair's pixel after any crop/flip gives its original
    pixel and camera."""
    maps = []
    for s in strides:
        h, w = -(-H // s), -(-W // s)
        u = (torch.arange(w, dtype=torch.float64) + 0.5) * s - 0.5
        v = (torch.arange(h, dtype=torch.float64) + 0.5) * s - 0.5
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        maps.append(torch.stack([uu + 100 * camera, vv]).unsqueeze(0))
    return maps


def test_cache_entries_are_per_frame_and_camera(tmp_path: Path) -> None:
    src = OneFrameSource(tmp_path / "data")
    cache = cache_for(tmp_path)
    for i, cam in enumerate(CAMS):
        cache.store(src, 0, coordinate_maps(i), (H, W), cam)  # type: ignore[arg-type]
    assert len({cache.path(src, "000000", c) for c in CAMS}) == 3  # type: ignore[arg-type]
    got = cache.load(src, 0, ["cam_2", "cam_0"])  # type: ignore[arg-type]
    assert got is not None and got.maps[0].shape == (2, 2, H, W) and got.frame_size == (H, W)
    assert float(got.maps[0][0, 0, 0, 0]) == pytest.approx(200.0) and float(got.maps[0][1, 0, 0, 0]) == 0.0
    assert cache.load(src, 0, ["cam_0", "cam_9"]) is None  # type: ignore[arg-type]
    assert cache.load(src, 0) is None  # no single-image entry for this frame
    (src.root / "000000.bin").write_bytes(b"changed points")  # the frame's files changed: stale
    assert cache.load(src, 0, CAMS) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_maps_of_three_cameras_follow_each_images_transform(tmp_path: Path, seed: int) -> None:
    src = OneFrameSource(tmp_path / "data")
    cache = cache_for(tmp_path)
    for i, cam in enumerate(CAMS):
        cache.store(src, 0, coordinate_maps(i), (H, W), cam)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    s = cube_scene()
    s.sources = (FrameRef(src, 0),) * 3  # type: ignore[arg-type]
    keyed = {(int(p), int(i)): tuple(o.tolist()) for p, i, o in zip(s.pair_point, s.pair_image, s.pair_uv)}
    out = Compose(
        [
            AttachCachedFeatures(cache),
            RandomResizedCrop((16, 20), (0.4, 1.0)),
            RandomHorizontalFlip(0.5),
            CropCachedFeatures(),
        ]
    )(s)
    assert out.teacher_feats is not None and out.teacher_feats[0].shape == (3, 2, 16, 20)
    fmap = out.teacher_feats[0]  # stride 1: one cell per output pixel, exact at integer pixels
    px = out.pair_uv.round().long()
    got = fmap[out.pair_image, :, px[:, 1].clamp(0, 15), px[:, 0].clamp(0, 19)]
    want = torch.tensor([keyed[(int(p), int(i))] for p, i in zip(out.pair_point, out.pair_image)])
    # channel 0 encodes the camera (100·camera) plus the original column; channel 1 the original row
    cam_of = torch.div(got[:, 0] + 50, 100, rounding_mode="floor")
    assert torch.equal(cam_of.long(), out.pair_image)  # each image reads its own camera's cached maps
    scale = max(H / 16, W / 20)  # at most one output pixel of rounding, in original pixels
    assert float((got[:, 0] - 100 * cam_of - want[:, 0]).abs().max()) <= scale
    assert float((got[:, 1] - want[:, 1]).abs().max()) <= scale


def small_config(*extra: str) -> PretrainConfig:
    return load_config(
        PretrainConfig,
        None,
        ["loss.num_pairs=64", "upl.dim=16", "teacher.layers=null", "data.features=[intensity]", *extra],
    )


def batch_of_cubes(images: tuple[int, int] = (64, 96)) -> Any:
    vox = Voxelize(0.25, ["intensity"])
    steps = Compose([RandomResizedCrop(images, (0.5, 1.0)), vox])
    torch.manual_seed(0)
    return collate([steps(cube_scene(3, 0)), steps(cube_scene(3, 1))])


def test_the_module_gathers_each_pairs_pixel_from_its_own_camera() -> None:
    module = PPKTPretrainModule.from_config(small_config(), 1).eval()
    batch = batch_of_cubes()
    assert batch.images.shape[0] == 6
    out = module(batch, torch.Generator().manual_seed(0))
    assert math.isfinite(float(out["loss"].detach())) and float(out["pairs"]) == 64
    # the pixel embeddings of the pairs of image 4 (sample 1, camera 1), through the batch, equal those of
    # image 4 run through the teacher alone
    feats = module.teacher_features(batch)
    sel = (batch.pair_image == 4).nonzero().squeeze(1)[:20]
    through_batch = module.pixel_embeddings(
        feats, batch.image_size, batch.pair_image[sel], batch.pair_uv[sel]
    )
    with torch.no_grad():
        alone_feats = list(module.teacher(batch.images[4:5]))
    alone = module.pixel_embeddings(alone_feats, batch.image_size, torch.zeros_like(sel), batch.pair_uv[sel])
    torch.testing.assert_close(through_batch, alone, atol=1e-5, rtol=1e-4)
    other = module.pixel_embeddings(feats, batch.image_size, torch.full_like(sel, 1), batch.pair_uv[sel])
    assert not torch.allclose(through_batch, other, atol=1e-3)  # another camera's pixels differ


def test_retrieval_scores_multi_camera_frames() -> None:
    module = PPKTPretrainModule.from_config(small_config(), 1)
    result = retrieval_top1(module, [batch_of_cubes()], num_points=32, seed=0)
    assert result.frames == 2 and result.points == 64 and result.chance == pytest.approx(1 / 32)
    assert 0 <= result.top1 <= 1


class CubeScans(OneFrameSource):
    """A LiDAR source: one scan of the cube scene with three cameras (for the Scan → sample adapter)."""

    cameras = CAMS

    def read(self, i: int) -> Scan:
        s = cube_scene()
        images = [(s.images[v].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for v in range(3)]
        return Scan(
            scene="cube",
            name="000000",
            points=s.points.numpy(),
            intensity=s.intensity.numpy() if s.intensity is not None else None,
            images=images,
            cameras=list(CAMS),
            K=[k.numpy() for k in s.intrinsics],
            lidar_to_camera=[np.linalg.inv(T.numpy()) for T in s.poses],
            points_path=self.root / "000000.bin",
        )


@pytest.mark.skipif(
    not hasattr(pairing, "scan_to_sample"), reason="scan_to_sample (the LiDAR pairing) is absent"
)
def test_a_scan_source_goes_through_the_cached_pretraining_dataset(tmp_path: Path) -> None:
    src = CubeScans(tmp_path / "data")
    cache = cache_for(tmp_path)
    for i, cam in enumerate(CAMS):
        cache.store(src, 0, coordinate_maps(i), (H, W), cam)  # type: ignore[arg-type]
    t = Compose(
        [RandomResizedCrop((16, 20), (0.5, 1.0)), CropCachedFeatures(), Voxelize(0.25, ["intensity"])]
    )
    ds = FrameDataset([FrameRef(src, 0)], t, min_depth=0.5, feature_cache=cache)  # type: ignore[arg-type]
    s = ds[0]
    assert s is not None and s.cameras == CAMS and s.images.shape[0] == 3
    assert s.teacher_feats is not None and s.teacher_feats[0].shape[0] == 3
    assert s.feats is not None and s.feats.shape[1] == 1


def test_intensity_of_rgbd_data_is_a_clear_error() -> None:
    from ppkt.errors import DataError

    s = cube_scene()
    s.intensity = None
    with pytest.raises(DataError, match="intensity"):
        Voxelize(0.25, ["intensity"])(s)
