"""Downstream segmentation data: fused RGB-D scenes split by scene, or LiDAR scans (one labelled scan = one
sample) split by sequence; transforms, loaders with a fixed step count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from ppkt.config.finetune import SegDataConfig
from ppkt.data.fusion import load_or_fuse
from ppkt.data.readers import is_lidar_layout, open_scans, open_scenes
from ppkt.data.sample import collate_points
from ppkt.data.scan_segmentation import labelled_scans, layout_classes, official_split, one_percent_scans
from ppkt.data.segmentation import SceneSegmentationDataset
from ppkt.data.splits import split_by_order
from ppkt.data.transforms import (
    Compose,
    LimitPoints,
    RandomCrop,
    RandomRotate,
    RandomScale,
    RangeCrop,
    Transform,
    Voxelize,
)
from ppkt.data.types import FrameSource, FusedScene, ScanSource
from ppkt.errors import ConfigError, DataError
from ppkt.training.data import color_jitter, data_root


@dataclass
class SceneSplits:
    """Fused scenes by split (:func:`~ppkt.data.splits.split_by_order`): ``test`` is the last
    ``ceil(test·n)`` scenes in natural order — the scenes ``ppkt pretrain`` holds out with ``data.heldout``
    equal to ``test`` — and ``val`` the ones before them."""

    root: Path
    train: list[FusedScene]
    val: list[FusedScene]
    test: list[FusedScene]

    @property
    def num_classes(self) -> int:
        return max(s.num_classes for s in self.train + self.val + self.test) - 1

    @property
    def class_names(self) -> list[str]:
        names = self.train[0].class_names
        if names is None:
            return [f"class_{i + 1}" for i in range(self.num_classes)]
        return list(names[1 : self.num_classes + 1])


def select_scenes(folders: list[Any], names: list[str] | None, root: Path) -> list[Any]:
    """The folders named in ``data.scenes`` (in the root's order), or all of them for ``None``."""
    if names is None:
        return folders
    known = [f.scene for f in folders]
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(
            f"config key 'data.scenes': {root} has no scene {missing[0]!r}; its scenes: {known}"
        )
    return [f for f in folders if f.scene in names]


def load_scene_splits(cfg: SegDataConfig, verbose: bool = True) -> SceneSplits:
    """The fused scenes of ``data.scenes`` (all by default), split by ``data.split``: ``order``
    (:func:`~ppkt.data.splits.split_by_order`) or ``all`` (every scene trains and tests)."""
    root = data_root(cfg, verbose)
    if is_lidar_layout(cfg.layout):
        return load_scan_splits(cfg, root)
    if cfg.split == "official" or cfg.train_subset != "all":
        k, v = ("split", cfg.split) if cfg.split == "official" else ("train_subset", cfg.train_subset)
        raise ConfigError(f"config key 'data.{k}': {v} needs a LiDAR layout, not {cfg.layout!r}")
    folders: list[FrameSource] = select_scenes(open_scenes(root, cfg.layout), cfg.scenes, root)
    scenes = [
        load_or_fuse(
            f,
            voxel_size=cfg.fuse_voxel_size,
            frame_skip=cfg.frame_skip,
            min_depth=cfg.min_depth,
            max_depth=cfg.max_depth,
            cache_dir=cfg.cache_dir,
        )
        for f in folders
    ]
    if cfg.split == "all":
        val: list[FusedScene] = []
        train, test = list(scenes), list(scenes)
    else:
        try:
            train, val, test = split_by_order(scenes, cfg.test, cfg.val)
        except ConfigError as e:
            raise ConfigError(f"{root}: {e}") from None
    splits = SceneSplits(root, train, val, test)
    if splits.num_classes < 1:
        raise DataError(
            f"{root}: no scene has labelled points (segmentation needs <frame>.label.png files with class "
            "ids > 0; 0 = unlabelled)"
        )
    return splits


def load_scan_splits(cfg: SegDataConfig, root: Path) -> SceneSplits:
    """LiDAR segmentation: every labelled scan is one sample
    (:class:`~ppkt.data.scan_segmentation.LabelledScan`, read when used). Whole sequences / scenes go to one
    split (``data.split``: ``order`` over the sequences as for RGB-D scenes, ``all``, or ``official``);
    ``data.train_subset: one_percent`` keeps the training scans of the protocol's 1 % split; the classes are
    the layout's (:func:`~ppkt.data.scan_segmentation.layout_classes`)."""
    sources: list[ScanSource] = select_scenes(open_scans(root, cfg.layout), cfg.scenes, root)
    num_classes, names = layout_classes(cfg.layout, sources)
    if num_classes < 2:
        raise DataError(
            f"{root}: no scan has labelled points (segmentation needs per-point labels with class ids > 0; "
            "0 = unlabelled)"
        )
    if cfg.split == "official":
        train_src, val_src, test_src = official_split(cfg.layout, sources)
    elif cfg.split == "all":
        train_src, val_src, test_src = list(sources), [], list(sources)
    else:
        try:
            train_src, val_src, test_src = split_by_order(sources, cfg.test, cfg.val)
        except ConfigError as e:
            raise ConfigError(f"{root}: {e} (LiDAR data are split by sequence / scene)") from None
    train, val, test = (labelled_scans(s, num_classes, names) for s in (train_src, val_src, test_src))
    if cfg.train_subset == "one_percent":
        train = one_percent_scans(cfg.layout, train)
    if not train or not test:
        which = "training" if not train else "test"
        raise ConfigError(f"config key 'data.split': {cfg.split} leaves no {which} scan under {root}")
    return SceneSplits(root, train, val, test)  # type: ignore[arg-type]


def require_labels(scenes: list[FusedScene], where: str) -> None:
    """A :class:`DataError` naming ``where`` when none of ``scenes`` has a labelled point."""
    if not any(bool((s.label > 0).any()) for s in scenes):
        names = ", ".join(s.name for s in scenes)
        raise DataError(f"{where}: the scenes {names} hold no labelled points (label 0 = unlabelled)")


def seg_transform(cfg: SegDataConfig, train: bool) -> Compose:
    steps: list[Transform[Any]] = []
    if train and cfg.max_range is not None:
        steps.append(RangeCrop(cfg.max_range, cfg.up_axis))
    if train and cfg.max_points is not None:
        steps.append(LimitPoints(cfg.max_points))
    if train and cfg.augment.crop is not None:
        steps.append(RandomCrop(cfg.augment.crop, cfg.up_axis))
    if train and cfg.augment.rotate_degrees > 0:
        steps.append(RandomRotate(cfg.up_axis, cfg.augment.rotate_degrees))
    if train and cfg.augment.scale != (1.0, 1.0):
        steps.append(RandomScale(*cfg.augment.scale))
    if train and (j := color_jitter(cfg.augment.color_jitter)) is not None:
        steps.append(j)
    steps.append(Voxelize(cfg.voxel_size, cfg.features, cfg.up_axis, grid=cfg.voxel))
    return Compose(steps)


def train_loader(
    cfg: SegDataConfig,
    scenes: list[FusedScene],
    *,
    steps: int,
    batch_size: int,
    label_mode: str,
    label_fraction: float,
    seed: int,
) -> DataLoader:
    """Exactly ``steps`` batches, drawn with replacement: the schedule is identical whatever the label
    fraction (1 labelled scene or all of them)."""
    ds = SceneSegmentationDataset(
        scenes,
        seg_transform(cfg, train=True),
        label_mode=label_mode,
        label_fraction=label_fraction,
        seed=seed,
    )
    g = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(ds, replacement=True, num_samples=steps * batch_size, generator=g)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate_points,
        persistent_workers=cfg.num_workers > 0,
    )


def eval_loader(cfg: SegDataConfig, scenes: list[FusedScene]) -> DataLoader:
    ds = SceneSegmentationDataset(scenes, seg_transform(cfg, train=False))
    return DataLoader(ds, batch_size=1, shuffle=False, num_workers=0, collate_fn=collate_points)
