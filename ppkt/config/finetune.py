"""The ``ppkt finetune`` configuration (semantic segmentation); ``configs/finetune.yaml`` documents it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ppkt.config import checks
from ppkt.config.checks import key
from ppkt.config.pretrain import ColorJitterConfig, SourceConfig, StudentConfig
from ppkt.errors import ConfigError


@dataclass
class SegAugmentConfig:
    rotate_degrees: float = 180.0
    scale: tuple[float, float] = (0.9, 1.1)
    crop: float | None = 2.5
    #: on by default: the synthetic rooms draw textures from one pool shared by all classes, so colour alone
    #: is not a class cue, and with few labelled rooms a network that leans on it fails (1 room: 15 → 24 mIoU)
    color_jitter: ColorJitterConfig = field(
        default_factory=lambda: ColorJitterConfig(permute=False, gain=0.4, shift=0.2, gray=0.2)
    )


@dataclass
class SegDataConfig(SourceConfig):
    fuse_voxel_size: float = 0.02
    #: the scenes (folder names) fine-tuning reads; null = every scene of the root
    scenes: list[str] | None = None
    #: order: the last ``test`` fraction of the scenes tests, the ``val`` fraction before them validates;
    #: all: every scene trains (with its limited labels) and tests (on all its labels), no validation
    #: official: the benchmark's sequence/scene split (LiDAR layouts semantickitti, kitti_odometry, nuscenes)
    split: Literal["order", "all", "official"] = "order"
    #: LiDAR: all training scans, or one_percent: those of the SLidR lineage's 1 % split (ppkt.data.protocols)
    train_subset: Literal["all", "one_percent"] = "all"
    test: float = 0.2
    val: float = 0.1
    augment: SegAugmentConfig = field(default_factory=SegAugmentConfig)

    def validate(self, prefix: str = "data") -> None:
        super().validate(prefix)
        if self.scenes is not None and (not self.scenes or len(set(self.scenes)) != len(self.scenes)):
            raise ConfigError(
                f"config key '{key(prefix, 'scenes')}': must be null or distinct scene names, "
                f"got {self.scenes}"
            )
        if not (0 < self.test < 1 and 0 <= self.val < 1 and self.test + self.val < 1):
            raise ConfigError(
                f"config keys '{key(prefix, 'test')}'/'{key(prefix, 'val')}': need 0 < test, 0 <= val, "
                f"test + val < 1, got test={self.test}, val={self.val}"
            )
        checks.positive(prefix, "fuse_voxel_size", self.fuse_voxel_size)
        aug = key(prefix, "augment")
        if self.augment.crop is not None:
            checks.positive(aug, "crop", self.augment.crop)
        checks.interval(aug, "scale", self.augment.scale, 0)
        checks.at_least(aug, "rotate_degrees", self.augment.rotate_degrees, 0)
        self.augment.color_jitter.check(key(aug, "color_jitter"))


@dataclass
class SegOptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    head_lr: float = 1e-2
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 10
    schedule: Literal["cosine", "constant"] = "cosine"
    #: train only the head for this many first steps (backbone frozen, BN statistics included), then all:
    #: "linear probe, then fine-tune"; the backbone's warm-up and cosine start after them
    head_only_steps: int = 0

    def validate(self, prefix: str = "optim") -> None:
        checks.optim_common(prefix, self.lr, self.weight_decay, self.momentum, self.warmup_steps)
        checks.positive(prefix, "head_lr", self.head_lr)
        checks.at_least(prefix, "head_only_steps", self.head_only_steps, 0)


@dataclass
class SegTrainerConfig:
    max_steps: int = 200
    batch_size: int = 2
    val_every_n_steps: int = 0
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int | list[int] | str = 1
    seed: int = 0
    threads: int | None = None
    log_every_n_steps: int = 10
    progress_bar: bool = True

    def validate(self, prefix: str = "trainer") -> None:
        checks.at_least(prefix, "max_steps", self.max_steps, 1)
        checks.at_least(prefix, "val_every_n_steps", self.val_every_n_steps, 0)
        checks.trainer_common(prefix, self)


@dataclass
class FinetuneConfig:
    data: SegDataConfig = field(default_factory=SegDataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    init: str = "scratch"
    labels: float = 1.0
    labels_mode: Literal["scenes", "points", "points_per_scene"] = "scenes"
    probe: bool = False
    #: training loss on the voxels: cross-entropy, or cross-entropy + Lovász-softmax (SLidR's fine-tuning)
    loss: Literal["ce", "ce+lovasz"] = "ce"
    #: cross-entropy class weights: none, or 1/sqrt(labelled points of the class) in the training labels
    class_weights: Literal["none", "inverse_sqrt"] = "inverse_sqrt"
    optim: SegOptimConfig = field(default_factory=SegOptimConfig)
    trainer: SegTrainerConfig = field(default_factory=SegTrainerConfig)

    def check_machine(self, prefix: str = "") -> None:
        """What ``trainer`` asks of this machine (:func:`~ppkt.config.checks.trainer_machine`)."""
        checks.trainer_machine(key(prefix, "trainer"), self.trainer)

    def validate(self, prefix: str = "") -> None:
        if self.labels_mode == "points_per_scene":
            if not (self.labels >= 1 and float(self.labels).is_integer()):
                raise ConfigError(
                    f"config key '{key(prefix, 'labels')}': with labels_mode points_per_scene it is a number "
                    f"of labelled points per scene, a whole number >= 1, got {self.labels}"
                )
        elif not 0 < self.labels <= 1:
            raise ConfigError(f"config key '{key(prefix, 'labels')}': must be in (0, 1], got {self.labels}")
