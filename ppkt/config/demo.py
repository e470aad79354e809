"""The ``ppkt demo`` configuration: pretraining, then a grid of fine-tuning / probing runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from ppkt.config.finetune import FinetuneConfig
from ppkt.config.pretrain import PretrainConfig
from ppkt.errors import ConfigError


def demo_pretrain() -> PretrainConfig:
    """The demo's pretraining defaults: ``ppkt pretrain``'s, with the teacher seeing each frame's depth as HHA
    (``data.teacher_input: hha``), scene-level multi-view pairing (``data.pairing.mode: scene``, 4 views,
    2 fused samples = 8 frames a step) with half of each sample's pairs on its dominant planes and half on
    the rest (``loss.plane_share: 0.5``), for 14 epochs (672 steps)."""
    cfg = PretrainConfig()
    cfg.data.teacher_input = "hha"
    cfg.data.pairing.mode = "scene"
    cfg.trainer.batch_size = 2
    cfg.loss.plane_share = 0.5
    cfg.trainer.max_epochs = 14
    return cfg


@dataclass
class DemoConfig:
    #: pretraining (its data section is the fine-tuning's too): ``ppkt pretrain``'s defaults except in
    #: five keys, the best pretraining measured on the embedded rooms (README, "Transfer variants"): the
    #: teacher sees each frame's depth as HHA (``data.teacher_input: hha``; a config for LiDAR scans sets
    #: ``rgb``), every voxel of a fused 4-view sample is paired with every view that sees it
    #: (``data.pairing.mode: scene``, ``trainer.batch_size: 2``), half of the drawn pairs lie on the
    #: sample's dominant planes and half off them (``loss.plane_share: 0.5``: floor and walls are ~92 %
    #: of the embedded rooms' points), and 14 epochs (``trainer.max_epochs``: the 30-minute budget's
    #: share for pretraining); ``ppkt pretrain`` keeps the paper's per-frame RGB pairing with uniform pairs
    pretrain: PretrainConfig = field(default_factory=lambda: demo_pretrain())
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    #: limited reconstructions: fractions of the training scenes that keep their labels ([] = none); the
    #: default is the lowest (1 of the 28 embedded rooms), the cell the 30-minute budget buys 3 seeds of;
    #: [0.01, 0.1, 1.0] adds 3 and 28 rooms (12 jobs, ~+10 min on 2 cores; set overlap_share: 1 then)
    label_fractions: list[float] = field(default_factory=lambda: [0.01])
    #: limited annotations: labelled points per training scene (ScanNet data-efficient benchmark; [] = none)
    label_points: list[int] = field(default_factory=lambda: [20])
    probe_labels: float = 1.0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: [] = one pretraining run, seeded by ``pretrain.trainer.seed``. Several = one pretraining run per seed
    #: (``<out>/pretrain-seed<p>``), every fine-tuning seed from each: a pretrained cell pools runs × seeds
    #: and its standard error is over the runs' means, so it counts how much one pretraining run differs
    #: from another (on the embedded rooms more than the fine-tuning seeds do), at that many times the
    #: pretraining time and pretrained jobs
    pretrain_seeds: list[int] = field(default_factory=list)
    workers: int = 2
    #: run the scratch jobs (which need no checkpoint) one at a time beside pretraining, which then gets the
    #: cores the job leaves (``cores - cores / workers``; unless ``pretrain.trainer.threads`` is set): on 2
    #: cores a pretraining step's data loading runs on one core and its sparse convolutions gain ~1.5× from
    #: the second, so the machine is busier sharing it. False: pretrain alone, then the jobs
    overlap: bool = True
    #: with ``overlap``: the share of pretraining's steps run beside the scratch jobs. At that step no
    #: further scratch job starts, pretraining waits for the running one and then takes every core (when
    #: ``pretrain.trainer.threads`` is unset); the scratch jobs left run after it with the pretrained ones.
    #: A fixed step, not the moment the jobs end, so a run's result does not depend on the machine's speed.
    #: Best near the scratch jobs' share of the 1-thread pretraining time: ~0.35 for the default grid (1
    #: room, 20 points, probe; 9 scratch jobs) and 14 epochs, 1 (the whole pretraining beside them) with the
    #: 3- and 28-room cells
    overlap_share: float = 0.35

    def check_machine(self) -> None:
        """What both trainer sections ask of this machine."""
        self.pretrain.check_machine("pretrain")
        self.finetune.check_machine("finetune")

    def validate(self, prefix: str = "") -> None:
        if not 0 < self.probe_labels <= 1:
            raise ConfigError(f"config key 'probe_labels': must be in (0, 1], got {self.probe_labels}")
        if not 0 < self.overlap_share <= 1:
            raise ConfigError(f"config key 'overlap_share': must be in (0, 1], got {self.overlap_share}")
        if self.workers < 1:
            raise ConfigError(f"config key 'workers': must be >= 1, got {self.workers}")
        if not self.seeds:
            raise ConfigError("config key 'seeds': at least one seed is needed")
        if not all(0 < f <= 1 for f in self.label_fractions):
            raise ConfigError(
                f"config key 'label_fractions': values must be in (0, 1], got {self.label_fractions}"
            )
        if len(set(self.pretrain_seeds)) != len(self.pretrain_seeds):
            raise ConfigError(f"config key 'pretrain_seeds': repeated seeds in {self.pretrain_seeds}")
        if not all(n >= 1 for n in self.label_points):
            raise ConfigError(f"config key 'label_points': values must be >= 1, got {self.label_points}")


#: ``ppkt demo --quick``: a few minutes on a 2-core CPU (used by the tests).
QUICK_OVERRIDES = [
    "pretrain.data.synth.scenes=8",
    "pretrain.data.synth.frames_per_scene=6",
    "pretrain.data.heldout=0.25",
    "pretrain.trainer.max_epochs=3",
    "pretrain.trainer.batch_size=2",
    "pretrain.eval.retrieval_frames=8",
    "finetune.trainer.max_steps=12",
    "finetune.data.val=0.0",
    "label_fractions=[0.01, 1.0]",
    "label_points=[20]",
    "seeds=[0, 1]",
]
