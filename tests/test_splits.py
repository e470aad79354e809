"""The held-out split: one rule (``split_by_order``) for pretraining's held-out frames and fine-tuning's test
scenes, and the demo's one shared data section."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppkt.config import load_config
from ppkt.config.demo import DemoConfig
from ppkt.config.pretrain import SourceConfig
from ppkt.data.frame_dataset import split_frames
from ppkt.data.readers import open_scenes
from ppkt.data.splits import split_by_order, split_counts
from ppkt.errors import ConfigError
from ppkt.pipelines.demo import align_finetune_data


def test_split_by_order_hand_cases() -> None:
    items = list("abcdefghij")
    assert split_by_order(items, 0.2, 0.1) == (list("abcdefg"), ["h"], ["i", "j"])
    assert split_by_order(items, 0.25) == (list("abcdefg"), [], ["h", "i", "j"])  # ceil(2.5) = 3
    assert split_counts(30, 0.1, 0.1) == (24, 3, 3)  # 0.1·30 is 3.0000000000000004 in floating point
    assert split_counts(5, 0.0) == (5, 0, 0)
    with pytest.raises(ConfigError, match=r"data\.test=0\.9, data\.val=0\.1"):
        split_by_order(items, 0.9, 0.1)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 10, 28, 40])
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.3, 0.5])
def test_pretraining_holds_out_exactly_the_finetuning_test_scenes(n: int, fraction: float) -> None:
    """The invariant the demo rests on: with data.heldout = data.test, pretraining's held-out scenes are the
    fine-tuning test scenes, whatever data.val is."""

    class Scene:
        def __init__(self, i: int) -> None:
            self.scene, self.frames = f"scene_{i:03d}", ["0", "1"]

        def __len__(self) -> int:
            return 2

    scenes = [Scene(i) for i in range(n)]
    if split_counts(n, fraction)[0] < 1:
        with pytest.raises(ConfigError, match=r"data\.heldout"):
            split_frames(scenes, fraction, "scenes")  # type: ignore[arg-type]
        return
    _, held = split_frames(scenes, fraction, "scenes")  # type: ignore[arg-type]
    held_names = sorted({r.folder.scene for r in held})
    for val in (0.0, 0.1):
        if split_counts(n, fraction, val)[0] < 1:
            continue
        _, _, test = split_by_order([s.scene for s in scenes], fraction, val)
        assert held_names == test


def test_demo_shares_one_data_section(tmp_path: Path) -> None:
    cfg = load_config(DemoConfig, None, ["pretrain.data.voxel_size=0.08", "pretrain.data.heldout=0.25"])
    align_finetune_data(cfg)
    for name in SourceConfig.__dataclass_fields__:
        assert getattr(cfg.finetune.data, name) == getattr(cfg.pretrain.data, name), name
    assert cfg.finetune.data.test == 0.25
    assert cfg.finetune.data.synth is not cfg.pretrain.data.synth  # a copy, not an alias
    bad = load_config(DemoConfig, None, ["finetune.data.voxel_size=0.03"])
    with pytest.raises(ConfigError, match=r"finetune\.data\.voxel_size.*pretrain\.data\.voxel_size"):
        align_finetune_data(bad)


def test_split_frames_on_a_rendered_dataset(tiny_synth: Path) -> None:
    folders = open_scenes(tiny_synth)
    train, held = split_frames(folders, 0.3, "auto")
    assert {r.folder.scene for r in held} == {folders[-1].scene}  # ceil(0.3 · 3) = 1 scene
    assert len(train) + len(held) == sum(len(f) for f in folders)
