"""The real-ScanNet benchmark config (``configs/scannet_benchmark.yaml``) end to end on a tiny setting:
pretrain on the real frames of ``../shared/data/scannet``, fine-tune on scene0000_00 with limited
annotations, probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ppkt.cli.main import main
from ppkt.config import load_config
from ppkt.config.demo import DemoConfig
from tests.conftest import REPO

CONFIG = REPO / "configs" / "scannet_benchmark.yaml"

#: a few frames, a few steps, one seed, one limited-annotation cell
TINY = [
    "pretrain.data.frame_skip=25",
    "pretrain.data.image_size=[48,64]",
    "pretrain.data.voxel_size=0.1",
    "pretrain.trainer.max_epochs=1",
    "pretrain.trainer.max_steps=2",
    "pretrain.trainer.batch_size=2",
    "pretrain.trainer.progress_bar=false",
    "pretrain.loss.num_pairs=256",
    "pretrain.eval.retrieval_points=64",
    "pretrain.eval.retrieval_frames=2",
    "finetune.data.fuse_voxel_size=0.05",
    "finetune.trainer.max_steps=2",
    "label_points=[20]",
    "seeds=[0]",
    "workers=1",
]


def test_config_is_the_documented_benchmark() -> None:
    """Pretraining on every scene's frames (no labels), limited annotations 20/50/200 on scene0000_00 tested
    on all its labels, the probe, three seeds; no limited-reconstruction cell (one labelled scene)."""
    cfg = load_config(DemoConfig, CONFIG)
    assert cfg.pretrain.data.layout == "scannet" and cfg.pretrain.data.heldout_mode == "tail"
    assert cfg.finetune.data.scenes == ["scene0000_00"] and cfg.finetune.data.split == "all"
    assert cfg.label_points == [20, 50, 200] and cfg.label_fractions == [] and len(cfg.seeds) >= 3


@pytest.mark.real_data
@pytest.mark.slow
def test_benchmark_runs_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "scannet"
    root = shared_data / "scannet"
    args = ["demo", "--config", str(CONFIG), "--out", str(out), f"pretrain.data.root={root}"]
    assert main([*args, f"pretrain.data.cache_dir={tmp_path / 'cache'}", *TINY]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["finetune"]["data"]["root"] == str(root)  # the demo shares the pretraining data section
    m = json.loads((out / "metrics.json").read_text())
    assert m["pretrain"]["steps"] == 2 and m["pretrain"]["train_frames"] >= 10
    assert -1 <= m["pretrain"]["view_consistency_scene"] <= 1
    cells = {(r["init"], r["mode"], r["labels_mode"], r["labels"]) for r in m["results"]}
    assert cells == {
        (i, mode, lm, n)
        for i in ("scratch", "pretrained")
        for mode, lm, n in (("finetune", "points_per_scene", 20), ("probe", "scenes", 1.0))
    }
    run = json.loads(next((out / "runs").glob("finetune-pretrained-points20-seed0/metrics.json")).read_text())
    assert run["train_points_labelled"] == 20 and run["test"]["scenes"] == 1
    # evaluated on every labelled vertex of scene0000_00 (ScanNet's 20 classes, NYU40 mapped)
    assert len(run["test"]["per_class_iou"]) == 20
    assert "limited annotations" in (out / "report.md").read_text()
