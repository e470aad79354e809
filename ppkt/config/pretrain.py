"""The ``ppkt pretrain`` configuration. ``configs/pretrain.yaml`` documents every key."""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass, field, fields
from typing import Literal

from ppkt.config import checks
from ppkt.config.checks import key
from ppkt.data.readers import is_lidar_layout
from ppkt.data.teacher_input import TEACHER_INPUTS
from ppkt.errors import ConfigError


@dataclass
class SynthConfig:
    scenes: int = 40
    frames_per_scene: int = 10
    seed: int = 0
    image_size: tuple[int, int] = (240, 320)
    #: ppkt.data.synth.scene.Appearance, spelled out: importing it here would load pybullet with every config
    appearance: Literal["random", "natural"] = "random"


@dataclass
class ColorJitterConfig:
    """Chromatic augmentation of the 3D network's input colours, drawn once per sample (see
    :class:`ppkt.data.transforms.ColorJitter`). All zero / false = off."""

    permute: bool = False  # random order of the r, g, b channels
    gain: float = 0.0  # per-channel contrast about the sample's mean colour, from [1 − gain, 1 + gain]
    shift: float = 0.0  # per-channel offset from [−shift, shift]
    gray: float = 0.0  # probability of replacing the colours by their grey value

    def check(self, key: str) -> None:
        for name, value in (("gain", self.gain), ("shift", self.shift), ("gray", self.gray)):
            checks.unit(key, name, value)


@dataclass
class AugmentConfig:
    flip: float = 0.5
    crop_scale: tuple[float, float] = (0.5, 1.0)
    rotate_degrees: float = 180.0
    scale: tuple[float, float] = (0.9, 1.1)
    #: probability that the student sees a sample's points without colour (the teacher keeps the image)
    color_drop: float = 0.0
    #: chromatic augmentation of the student's points (the teacher keeps the image); off by default
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)


@dataclass
class SourceConfig:
    """The data settings pretraining and fine-tuning share: where the scenes are, how they are read, and how
    points become voxels. ``ppkt demo`` gives its fine-tuning exactly its pretraining's values
    (:func:`share_source`)."""

    root: str | None = None
    layout: str = "generic"
    cache_dir: str | None = None
    synth: SynthConfig = field(default_factory=SynthConfig)
    frame_skip: int = 1
    voxel_size: float = 0.05
    #: cubic (x, y, z) or cylindrical (ρ, φ, z about the up axis; SLidR's LiDAR grid) voxels
    voxel: Literal["cubic", "cylindrical"] = "cubic"
    min_depth: float = 0.1
    max_depth: float = 6.0
    up_axis: Literal[0, 1, 2] = 2
    features: list[str] = field(default_factory=lambda: ["rgb"])
    num_workers: int = 0
    #: keep the points within this many metres of the up axis through the origin (the LiDAR); None = all
    max_range: float | None = None
    #: keep at most this many points of a frame (a random subset); None = all
    max_points: int | None = None

    def validate(self, prefix: str = "data") -> None:
        checks.positive(prefix, "voxel_size", self.voxel_size)
        if self.max_range is not None:
            checks.positive(prefix, "max_range", self.max_range)
        if self.max_points is not None:
            checks.at_least(prefix, "max_points", self.max_points, 1)
        checks.at_least(prefix, "frame_skip", self.frame_skip, 1)
        checks.at_least(prefix, "num_workers", self.num_workers, 0)
        checks.features(prefix, self.features)
        checks.depth_range(prefix, self.min_depth, self.max_depth)
        checks.folder(prefix, "cache_dir", self.cache_dir)


def share_source(dst: SourceConfig, src: SourceConfig) -> None:
    """Give ``dst`` every :class:`SourceConfig` value of ``src`` (deep copies)."""
    for f in fields(SourceConfig):
        setattr(dst, f.name, copy.deepcopy(getattr(src, f.name)))


@dataclass
class PairingConfig:
    """What one pretraining sample is: one frame paired with its own pixels (``frame``, PPKT), or several
    frames of one scene fused and paired with every frame that sees each point (``window``: consecutive
    frames of the trajectory; ``scene``: frames spread over the whole trajectory)."""

    mode: Literal["frame", "window", "scene"] = "frame"
    views: int = 4  # frames per sample (window / scene)
    fuse_voxel_size: float = 0.02  # voxel of the fused geometry (fine-tuning's finetune.data.fuse_voxel_size)
    depth_tolerance: float = 0.05  # metres behind a frame's measured depth at which a point counts as hidden
    #: RGB-D samples as read, fused and paired (before augmentation) kept in memory for the next epochs, up
    #: to this many MiB per loader process (0: read and fuse every time); the same samples either way
    memory_mb: float = 2048.0

    def validate(self, prefix: str) -> None:
        checks.one_of(prefix, "mode", self.mode, ["frame", "window", "scene"])
        checks.at_least(prefix, "views", self.views, 1)
        checks.positive(prefix, "fuse_voxel_size", self.fuse_voxel_size)
        checks.at_least(prefix, "depth_tolerance", self.depth_tolerance, 0)
        checks.at_least(prefix, "memory_mb", self.memory_mb, 0)


@dataclass
class DataConfig(SourceConfig):
    heldout: float = 0.2
    heldout_mode: Literal["auto", "scenes", "tail"] = "auto"
    #: the embedded RGB-D rooms only: this many more rooms of the same synthesis (rooms synth.scenes, …,
    #: synth.scenes + extra_scenes − 1 of synth.seed, so none is a room of the benchmark) whose frames
    #: join the training frames: unlabelled data for pretraining alone (never held out; fine-tuning never
    #: sees them)
    extra_scenes: int = 0
    image_size: tuple[int, int] = (240, 320)
    #: what the teacher sees of an RGB-D frame (ppkt.data.teacher_input): rgb | hha (the depth as HHA) |
    #: gravity (HHA with a finer height in place of the disparity) | rgb+hha (both, the teacher's maps
    #: concatenated); LiDAR scans: rgb only
    teacher_input: Literal["rgb", "hha", "gravity", "rgb+hha"] = "rgb"
    skip_bad: bool = False
    #: LiDAR frames: a point seen by several cameras is paired with all of them, the nearest, or a random one
    multi_camera: Literal["all", "nearest", "random"] = "all"
    #: LiDAR frames' z-buffer visibility test (ppkt.data.pairing.scan_to_sample): a point farther than the
    #: nearest return within occlusion_window × occlusion_window pixels of its own by more than
    #: occlusion_tolerance + occlusion_relative · that depth (metres) is hidden from the camera
    occlusion_tolerance: float = 0.2
    occlusion_relative: float = 0.05
    occlusion_window: int = 3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)

    def validate(self, prefix: str = "data") -> None:
        super().validate(prefix)
        if not 0 <= self.heldout < 1:
            raise ConfigError(f"config key '{key(prefix, 'heldout')}': must be in [0, 1), got {self.heldout}")
        checks.at_least(prefix, "extra_scenes", self.extra_scenes, 0)
        if self.extra_scenes and (self.root is not None or self.layout != "generic"):
            raise ConfigError(
                f"config key '{key(prefix, 'extra_scenes')}' = {self.extra_scenes}: adds rooms of the "
                f"embedded RGB-D dataset (data.root null, layout generic), got root {self.root!r}, layout "
                f"{self.layout!r}: set {key(prefix, 'extra_scenes')}=0"
            )
        if not min(self.image_size) >= 8:
            raise ConfigError(
                f"config key '{key(prefix, 'image_size')}': must be [H, W] >= 8 pixels, "
                f"got {list(self.image_size)}"
            )
        checks.at_least(prefix, "occlusion_tolerance", self.occlusion_tolerance, 0)
        checks.at_least(prefix, "occlusion_relative", self.occlusion_relative, 0)
        if self.occlusion_window < 1 or self.occlusion_window % 2 == 0:
            raise ConfigError(
                f"config key '{key(prefix, 'occlusion_window')}': must be an odd number of pixels >= 1, "
                f"got {self.occlusion_window}"
            )
        aug = key(prefix, "augment")
        checks.unit(aug, "flip", self.augment.flip)
        checks.interval(aug, "crop_scale", self.augment.crop_scale, 0, 1)
        checks.interval(aug, "scale", self.augment.scale, 0)
        checks.at_least(aug, "rotate_degrees", self.augment.rotate_degrees, 0)
        checks.unit(aug, "color_drop", self.augment.color_drop)
        self.augment.color_jitter.check(key(aug, "color_jitter"))
        self.pairing.validate(key(prefix, "pairing"))
        self.check_pairing_fits_layout(prefix)
        checks.one_of(prefix, "teacher_input", self.teacher_input, list(TEACHER_INPUTS))
        if self.teacher_input != "rgb" and is_lidar_layout(self.layout):
            raise ConfigError(
                f"config key '{key(prefix, 'teacher_input')}': {self.teacher_input!r} encodes an RGB-D "
                f"frame's depth image; layout {self.layout!r} reads LiDAR scans (no depth image): use rgb"
            )

    def check_pairing_fits_layout(self, prefix: str = "data") -> None:
        """Fused pairing (``window`` / ``scene``) is for RGB-D frames: a LiDAR scan is paired with its own
        cameras, never fused with other scans."""
        if self.pairing.mode != "frame" and is_lidar_layout(self.layout):
            mode = key(prefix, "pairing.mode")
            raise ConfigError(
                f"config key '{mode}': {self.pairing.mode!r} fuses RGB-D frames; layout {self.layout!r}"
                f" reads LiDAR scans, each paired with its own cameras: use {mode}=frame"
            )


@dataclass
class TeacherConfig:
    name: str = "efficientnet_lite0"
    weights: str | None = None
    layers: list[str] | None = field(
        default_factory=lambda: ["stage1", "stage2", "stage3", "stage5", "stage7"]
    )
    cache: bool = True

    def validate(self, prefix: str = "teacher") -> None:
        from ppkt.models.teachers import TEACHERS, select_layers, teacher_layer_choices

        checks.one_of(prefix, "name", self.name, sorted(TEACHERS))
        choices = teacher_layer_choices(self.name)
        if self.layers is None or choices is None:
            return
        try:
            select_layers(self.name, self.layers, choices, default=())
        except ValueError:
            raise ConfigError(
                f"config key '{key(prefix, 'layers')}': must be distinct layer names of {self.name} from "
                f"{choices} (or null for its default), got {list(self.layers)}"
            ) from None


@dataclass
class UPLConfig:
    dim: int = 64
    output_stride: Literal[1, 2, 4, 8] = 1

    def validate(self, prefix: str = "upl") -> None:
        checks.at_least(prefix, "dim", self.dim, 1)


@dataclass
class StudentConfig:
    name: str = "unet_small"
    backend: Literal["torch", "spconv"] = "torch"

    def validate(self, prefix: str = "student") -> None:
        from ppkt.models.student import STUDENTS

        checks.one_of(prefix, "name", self.name, sorted(STUDENTS))


@dataclass
class LossConfig:
    #: ppnce | distill, or several joined by "+" (e.g. ppnce+distill): their weighted sum over the same pairs
    name: str = "ppnce"
    #: one weight per term of ``name`` (empty: 1 each)
    weights: list[float] = field(default_factory=list)
    #: distill: l2 (ScaLR: the distance of the unit vectors) | cosine (1 − cos)
    distance: Literal["l2", "cosine"] = "l2"
    temperature: float = 0.04
    num_pairs: int = 4096
    #: > 0: pool points and pixels over SLIC superpixels of about this many segments per image (SLidR)
    superpixels: int = 0
    #: null: pairs drawn uniformly over the voxels; a fraction: the share of each sample's drawn pairs whose
    #: voxel lies on one of its dominant planes (RANSAC, ppkt.geometry.planes: floor, walls, table tops), the
    #: rest drawn from the other voxels (objects), so the few object voxels are not drowned by the planes
    plane_share: float | None = None
    #: under DDP, every point's negatives are the pixels of all processes (gathered with gradients)
    gather_distributed: bool = True

    def validate(self, prefix: str = "loss") -> None:
        from ppkt.losses import loss_terms

        try:
            terms = loss_terms(self.name)
        except ValueError as e:
            raise ConfigError(f"config key '{key(prefix, 'name')}': {e}") from None
        if self.weights and len(self.weights) != len(terms):
            raise ConfigError(
                f"config key '{key(prefix, 'weights')}': needs one weight per term of {self.name!r} "
                f"({len(terms)}), got {list(self.weights)}"
            )
        if not all(w > 0 for w in self.weights):
            raise ConfigError(f"config key '{key(prefix, 'weights')}': must be > 0, got {list(self.weights)}")
        checks.positive(prefix, "temperature", self.temperature)
        if not (self.num_pairs == 0 or self.num_pairs >= 2):
            raise ConfigError(
                f"config key '{key(prefix, 'num_pairs')}': must be 0 (all) or >= 2, got {self.num_pairs}"
            )
        checks.at_least(prefix, "superpixels", self.superpixels, 0)
        if self.plane_share is not None:
            if not 0 <= self.plane_share <= 1:
                raise ConfigError(
                    f"config key '{key(prefix, 'plane_share')}': must be null or in [0, 1], "
                    f"got {self.plane_share}"
                )
            if self.superpixels > 0 or self.num_pairs == 0:
                raise ConfigError(
                    f"config key '{key(prefix, 'plane_share')}': weights the drawn voxel pairs, so it needs "
                    f"'{key(prefix, 'num_pairs')}' > 0 and '{key(prefix, 'superpixels')}' 0, got num_pairs="
                    f"{self.num_pairs}, superpixels={self.superpixels}"
                )
        if self.superpixels > 0 and importlib.util.find_spec("skimage") is None:
            raise ConfigError(
                f"config key '{key(prefix, 'superpixels')}': SLIC superpixels need scikit-image "
                "(pip install 'ppkt[superpixels]'), or set it to 0"
            )


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 4e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 20
    schedule: Literal["cosine", "constant"] = "cosine"

    def validate(self, prefix: str = "optim") -> None:
        checks.optim_common(prefix, self.lr, self.weight_decay, self.momentum, self.warmup_steps)


@dataclass
class TrainerConfig:
    max_epochs: int = 9
    max_steps: int = -1
    batch_size: int = 8
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int | list[int] | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    threads: int | None = None
    log_every_n_steps: int = 5
    progress_bar: bool = True
    #: under DDP, the student's BatchNorm statistics are those of every process's voxels
    sync_batchnorm: bool = True
    #: ``checkpoints/last.ckpt`` is rewritten every this many optimizer steps (and at the end; 0: only there)
    checkpoint_every_n_steps: int = 50

    def validate(self, prefix: str = "trainer") -> None:
        checks.at_least(prefix, "max_epochs", self.max_epochs, 1)
        checks.at_least(prefix, "checkpoint_every_n_steps", self.checkpoint_every_n_steps, 0)
        if not (self.max_steps == -1 or self.max_steps >= 1):
            raise ConfigError(
                f"config key '{key(prefix, 'max_steps')}': must be >= 1, or -1 (use max_epochs), "
                f"got {self.max_steps}"
            )
        checks.at_least(prefix, "num_nodes", self.num_nodes, 1)
        checks.trainer_common(prefix, self)
        checks.strategy(prefix, self.strategy)


@dataclass
class EvalConfig:
    retrieval_points: int = 512
    retrieval_frames: int = 48

    def validate(self, prefix: str = "eval") -> None:
        checks.at_least(prefix, "retrieval_points", self.retrieval_points, 2)
        checks.at_least(prefix, "retrieval_frames", self.retrieval_frames, 1)


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    upl: UPLConfig = field(default_factory=UPLConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check_machine(self, prefix: str = "") -> None:
        """What ``trainer`` asks of this machine (:func:`~ppkt.config.checks.trainer_machine`)."""
        checks.trainer_machine(key(prefix, "trainer"), self.trainer)
