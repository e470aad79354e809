"""Build pretraining data loaders from a :class:`~ppkt.config.pretrain.DataConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ppkt.config.finetune import SegDataConfig
from ppkt.config.pretrain import ColorJitterConfig, DataConfig
from ppkt.data.embedded import ensure_synthetic, ensure_synthetic_lidar
from ppkt.data.frame_dataset import FrameDataset, collate_skip, frame_refs, group_frames, split_frames
from ppkt.data.readers import SCENE_READERS, is_lidar_layout, known_layouts, open_scans, open_scenes
from ppkt.data.sample import PairedSample
from ppkt.data.teacher_cache import FeatureCache
from ppkt.data.transforms import (
    ColorJitter,
    Compose,
    CropCachedFeatures,
    LimitPoints,
    RandomColorDrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotate,
    RandomScale,
    RangeCrop,
    Superpixels,
    Transform,
    Voxelize,
)
from ppkt.data.types import FrameRef
from ppkt.errors import ConfigError
from ppkt.training.resume import EpochSampler, SeededItems


def build_transform(cfg: DataConfig, train: bool, superpixels: int = 0) -> Compose:
    """Training: random crop/resize, flip, rotation about the up axis, scaling, voxelize.
    Evaluation: a centred resize and voxelize. Both first keep the points within ``data.max_range`` and at
    most ``data.max_points`` of them, when set. Both end with :class:`CropCachedFeatures`, which turns cached
    teacher maps (when a sample has them) into the maps of the augmented image. ``superpixels > 0`` starts
    both with :class:`Superpixels` (SLIC on the original frame)."""
    vox: Voxelize[PairedSample] = Voxelize(cfg.voxel_size, cfg.features, cfg.up_axis, grid=cfg.voxel)
    first: list[Transform[Any]] = [Superpixels(superpixels)] if superpixels > 0 else []
    if cfg.max_range is not None:
        first.append(RangeCrop(cfg.max_range, cfg.up_axis))
    if cfg.max_points is not None:
        first.append(LimitPoints(cfg.max_points))
    if not train:
        return Compose([*first, RandomResizedCrop(cfg.image_size, random=False), CropCachedFeatures(), vox])
    a = cfg.augment
    steps: list[Transform[Any]] = [*first, RandomResizedCrop(cfg.image_size, a.crop_scale)]
    if a.flip > 0:
        steps.append(RandomHorizontalFlip(a.flip))
    if a.rotate_degrees > 0:
        steps.append(RandomRotate(cfg.up_axis, a.rotate_degrees))
    if a.scale != (1.0, 1.0):
        steps.append(RandomScale(*a.scale))
    if a.color_drop > 0:
        steps.append(RandomColorDrop(a.color_drop))
    if (j := color_jitter(a.color_jitter)) is not None:
        steps.append(j)
    steps += [CropCachedFeatures(), vox]
    return Compose(steps)


def color_jitter(cfg: ColorJitterConfig) -> ColorJitter | None:
    """The :class:`ColorJitter` a config asks for, or ``None`` when every setting is off."""
    if not (cfg.permute or cfg.gain > 0 or cfg.shift > 0 or cfg.gray > 0):
        return None
    return ColorJitter(cfg.permute, cfg.gain, cfg.shift, cfg.gray)


def num_input_features(features: list[str]) -> int:
    """Input channels of the student for the given per-voxel features."""
    return Voxelize(1.0, features).num_features


def data_root(cfg: DataConfig | SegDataConfig, verbose: bool = True) -> Path:
    """``data.root``, or the embedded synthetic dataset (rendered into the cache on first use: RGB-D rooms,
    or LiDAR + camera rooms for ``data.layout=rig``); checks ``data.layout``."""
    if cfg.layout not in SCENE_READERS:
        raise ConfigError(f"config key 'data.layout': {cfg.layout!r} is not one of {known_layouts()}")
    if cfg.root is None and cfg.layout == "rig":  # LiDAR + cameras
        return ensure_synthetic_lidar(**asdict(cfg.synth), cache_dir=cfg.cache_dir, verbose=verbose)
    if cfg.root is None:
        return ensure_synthetic(**asdict(cfg.synth), cache_dir=cfg.cache_dir, verbose=verbose)
    return Path(cfg.root).expanduser()


@dataclass
class FrameSplits:
    root: Path
    train: list[FrameRef]
    heldout: list[FrameRef]


def frame_splits(cfg: DataConfig, verbose: bool = True) -> FrameSplits:
    """The training and held-out frames of ``data``; with ``data.extra_scenes`` the extra embedded rooms'
    frames (every ``frame_skip``-th) follow the training frames."""
    root = data_root(cfg, verbose)
    folders = open_scans(root, cfg.layout) if is_lidar_layout(cfg.layout) else open_scenes(root, cfg.layout)
    train, held = split_frames(folders, cfg.heldout, cfg.heldout_mode, cfg.frame_skip)  # type: ignore[arg-type]
    if cfg.extra_scenes:
        synth = {**asdict(cfg.synth), "scenes": cfg.extra_scenes, "first_scene": cfg.synth.scenes}
        extra = ensure_synthetic(**synth, cache_dir=cfg.cache_dir, verbose=verbose)
        train += frame_refs(open_scenes(extra, cfg.layout), cfg.frame_skip)
    return FrameSplits(root, train, held)


def occlusion_args(cfg: DataConfig) -> dict[str, float]:
    """``data.occlusion_*``: the occlusion test of LiDAR frames' pairing (``scan_to_sample``'s arguments)."""
    return {
        "occlusion_tolerance": cfg.occlusion_tolerance,
        "occlusion_relative": cfg.occlusion_relative,
        "occlusion_window": cfg.occlusion_window,
    }


def make_loader(
    cfg: DataConfig,
    frames: list[FrameRef],
    batch_size: int,
    train: bool,
    num_workers: int | None = None,
    feature_cache: FeatureCache | None = None,
    superpixels: int = 0,
    seed: int = 0,
) -> DataLoader:
    """Batches of samples of ``frames`` (grouped by ``data.pairing``: one frame, or several fused frames
    per sample; ``batch_size`` counts samples) through the training (``train``: shuffled, augmented,
    incomplete last batch dropped) or evaluation transform. With a ``feature_cache`` and no superpixels the
    teacher's images are not computed (blank: the cached maps stand for them). Order and augmentation depend
    only on ``seed``, the epoch and the sample (:class:`~ppkt.training.resume.EpochSampler`): a resumed run
    sees an uninterrupted one's batches."""
    p = cfg.pairing
    ds = FrameDataset(
        group_frames(frames, p.mode, p.views),
        build_transform(cfg, train, superpixels),
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        skip_bad=cfg.skip_bad,
        feature_cache=feature_cache,
        fuse_voxel_size=None if p.mode == "frame" else p.fuse_voxel_size,
        depth_tolerance=p.depth_tolerance,
        multi_camera=cfg.multi_camera,
        occlusion=occlusion_args(cfg),
        teacher_input=cfg.teacher_input,
        up_axis=cfg.up_axis,
        read_pixels=superpixels > 0,  # with a cache, only superpixels read the teacher's image
        memory_mb=p.memory_mb,
    )
    workers = cfg.num_workers if num_workers is None else num_workers
    return DataLoader(
        SeededItems(ds),
        batch_size=batch_size,
        sampler=EpochSampler(len(ds), seed, shuffle=train),
        drop_last=train and len(ds) > batch_size,
        generator=torch.Generator().manual_seed(seed),  # worker seeds: not drawn from the global state
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_skip,
    )
