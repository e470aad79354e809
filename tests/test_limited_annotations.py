"""The label-efficient protocols of ``ppkt finetune`` and the demo: limited annotations (a fixed number of
labelled points per training scene, chosen by the seed), limited reconstructions (a fraction of the scenes),
the scene selection and the ``split: all`` protocol, and the demo's grid and report of both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.cli.main import main
from ppkt.config import FinetuneConfig, load_config
from ppkt.config.demo import DemoConfig
from ppkt.data.segmentation import SceneSegmentationDataset, point_label_mask
from ppkt.data.types import FusedScene
from ppkt.errors import ConfigError
from ppkt.pipelines.demo import demo_jobs
from ppkt.pipelines.report import gains, report_markdown, summarize
from ppkt.training.seg_data import load_scene_splits
from tests.conftest import TINY_FINETUNE, assert_mentions


def make_fused(name: str, n: int, seed: int, labelled: float = 0.7) -> FusedScene:
    rng = np.random.default_rng(seed)
    label = np.where(rng.random(n) < labelled, rng.integers(1, 4, n), 0)
    return FusedScene(
        name, rng.random((n, 3)).astype(np.float32), rng.random((n, 3)).astype(np.float32), label, 4
    )


@pytest.mark.parametrize("count", [1, 20, 50, 200])
def test_a_fixed_number_of_labelled_points_per_scene(count: int) -> None:
    scenes = [make_fused(f"scene{i}", 1000, i) for i in range(3)] + [make_fused("tiny", 30, 9)]
    ds = SceneSegmentationDataset(scenes, label_mode="points_per_scene", label_fraction=count, seed=3)
    assert len(ds) == len(scenes)  # every scene trains, each with its few labels
    for s, lab in zip(scenes, ds.labels):
        kept = (lab != -1).numpy()
        assert kept.sum() == min(count, int((s.label > 0).sum()))  # a scene with fewer keeps them all
        assert (s.label[kept] > 0).all() and (lab.numpy()[kept] == s.label[kept] - 1).all()
    assert ds.num_labelled_points() == sum(min(count, int((s.label > 0).sum())) for s in scenes)


def test_the_choice_depends_on_the_seed_and_scene_only_and_is_nested() -> None:
    labelled = make_fused("scene0", 5000, 0).label > 0
    masks = {k: point_label_mask(labelled, seed=1, name="scene0", count=k) for k in (20, 50, 100, 200)}
    for small, big in ((20, 50), (50, 100), (100, 200)):
        assert (masks[big][masks[small]]).all()  # 20 ⊂ 50 ⊂ 100 ⊂ 200
    again = point_label_mask(labelled.copy(), seed=1, name="scene0", count=20)
    np.testing.assert_array_equal(again, masks[20])  # a function of (seed, scene name): the same for any init
    assert not np.array_equal(point_label_mask(labelled, seed=2, name="scene0", count=20), masks[20])
    assert not np.array_equal(point_label_mask(labelled, seed=1, name="scene1", count=20), masks[20])
    # the same seeded order as the fraction of points: a count is a prefix of it as well
    fraction = point_label_mask(labelled, 200 / labelled.sum(), seed=1, name="scene0")
    np.testing.assert_array_equal(fraction, masks[200])
    with pytest.raises(ConfigError, match="label count"):
        point_label_mask(labelled, count=0)


def test_config_checks_the_number_of_points() -> None:
    cfg = load_config(FinetuneConfig, overrides=["labels_mode=points_per_scene", "labels=20"])
    assert cfg.labels == 20.0
    for bad in ("0.5", "20.5"):
        with pytest.raises(ConfigError) as e:
            load_config(FinetuneConfig, overrides=["labels_mode=points_per_scene", f"labels={bad}"])
        assert_mentions(e.value, "'labels'", "points_per_scene", bad)
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        load_config(FinetuneConfig, overrides=["labels=20"])  # a fraction in the other modes
    with pytest.raises(ConfigError, match=r"data\.scenes"):
        load_config(FinetuneConfig, overrides=["data.scenes=[a, a]"])
    with pytest.raises(ConfigError, match="label_points"):
        load_config(DemoConfig, overrides=["label_points=[0]"])


def test_scene_selection_and_the_all_split(tiny_synth: Path) -> None:
    base = [f"data.root={tiny_synth}", *TINY_FINETUNE]
    names = [p.name for p in sorted(tiny_synth.iterdir()) if p.is_dir()]
    cfg = load_config(FinetuneConfig, overrides=[*base, f"data.scenes=[{names[0]}]", "data.split=all"])
    splits = load_scene_splits(cfg.data, verbose=False)
    assert [s.name for s in splits.train] == [s.name for s in splits.test] == [names[0]] and not splits.val
    cfg = load_config(FinetuneConfig, overrides=[*base, "data.scenes=[nope]"])
    with pytest.raises(ConfigError) as e:
        load_scene_splits(cfg.data, verbose=False)
    assert_mentions(e.value, "data.scenes", "'nope'", names[0])


def test_finetune_with_limited_annotations(tiny_synth: Path, tmp_path: Path) -> None:
    """``--labels-mode points_per_scene --labels 5``: every training scene with 5 labelled points."""
    out = tmp_path / "la"
    args = ["finetune", "--out", str(out), "--labels-mode", "points_per_scene", "--labels", "5"]
    assert main([*args, f"data.root={tiny_synth}", *TINY_FINETUNE, "trainer.max_steps=2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels_mode"] == "points_per_scene" and m["labels"] == 5
    assert m["train_scenes_labelled"] == 2 and m["train_points_labelled"] == 10
    assert 0 <= m["test"]["miou"] <= 100


def test_demo_grid_has_both_protocols_and_the_probe_with_identical_inits() -> None:
    cfg = load_config(
        DemoConfig, overrides=["label_fractions=[0.1]", "label_points=[20, 200]", "seeds=[0, 4]"]
    )
    jobs = {name: fc for name, fc, _ in demo_jobs(cfg, Path("pre.ckpt"))}
    assert len(jobs) == 2 * 2 * 4  # (LR 0.1, LA 20, LA 200, probe) × 2 inits × 2 seeds
    assert "finetune-pretrained-points20-seed4" in jobs and "probe-scratch-labels1-seed0" in jobs
    for name, fc in jobs.items():
        if "-scratch-" not in name:
            continue
        twin = jobs[name.replace("-scratch-", "-pretrained-")]
        assert fc.init == "scratch" and twin.init == "pre.ckpt"
        twin.init = "scratch"
        assert twin == fc  # the same labels, data, schedule and seed: only the init differs
    la = jobs["finetune-scratch-points200-seed4"]
    assert (la.labels_mode, la.labels, la.probe, la.trainer.seed) == ("points_per_scene", 200.0, False, 4)


def test_report_shows_each_protocol_with_standard_errors() -> None:
    def run(init: str, seed: int, miou: float, mode: str = "finetune", labels_mode: str = "scenes") -> dict:
        labels = 20.0 if labels_mode == "points_per_scene" else 0.1
        return {
            "init": init,
            "mode": mode,
            "labels_mode": labels_mode,
            "labels": labels,
            "train_scenes_labelled": 3,
            "train_points_labelled": 60,
            "seed": seed,
            "test": {"miou": miou},
        }

    runs = [
        run(i, s, m, mode, lm)
        for mode, lm in (("finetune", "scenes"), ("finetune", "points_per_scene"), ("probe", "scenes"))
        for i, s, m in (
            ("scratch", 0, 10.0),
            ("scratch", 1, 14.0),
            ("pretrained", 0, 20.0),
            ("pretrained", 1, 22.0),
        )
    ]
    rows = summarize(runs)
    assert len(rows) == 6
    scratch_la = next(r for r in rows if r["labels_mode"] == "points_per_scene" and r["init"] == "scratch")
    assert scratch_la["miou_se"] == pytest.approx(math.sqrt(8) / math.sqrt(2))  # std / √n
    report = report_markdown(
        rows, gains(rows), {"pretrain": {"view_consistency_frames": 0.5}}, 1.0, "1 test scene"
    )
    for text in ("limited reconstructions", "limited annotations", "linear probe", "20 points/scene"):
        assert text in report
    assert "| 12.00 ± 2.00 | 21.00 ± 1.00 | +9.00 ± 2.24 | n/a |" in report  # mean ± s.e.; gain ± its s.e.
    # with the runs: the paired s.e. from the per-seed differences 10 and 8 (std √2, over √2 seeds)
    paired = gains(rows, runs)
    assert [g["paired_se"] for g in paired] == pytest.approx([1.0, 1.0, 1.0])
    assert "| +9.00 ± 2.24 | 1.00 | gain > 2 s.e. |" in report_markdown(rows, paired, {}, 1.0)
    # a pretrained run whose seed has no scratch run: no pairing
    unpaired = runs[:1] + runs[2:4]  # scratch seed 0; pretrained seeds 0 and 1
    assert gains(summarize(unpaired), unpaired)[0]["paired_se"] is None
    assert "0.500" in report  # the view consistency of the pretext check
    assert torch.isfinite(torch.tensor([r["miou_se"] for r in rows])).all()


def test_several_pretraining_runs_pool_their_cells_with_the_spread_between_runs() -> None:
    """``pretrain_seeds``: the pretrained jobs of every pretraining run, the scratch jobs once; a pooled cell
    is the mean of all its runs and its s.e. the one of the mean of the pretraining runs' means."""
    cfg = load_config(DemoConfig, overrides=["label_fractions=[0.1]", "label_points=[]", "seeds=[0, 1]"])
    jobs = demo_jobs(cfg, {3: Path("p3.ckpt"), 5: Path("p5.ckpt")})
    names = {name: (fc.init, p) for name, fc, p in jobs}
    assert len(jobs) == 2 * 2 * 3  # (LR 0.1, probe) × 2 seeds × (scratch, 2 pretraining runs)
    assert names["finetune-scratch-labels0.1-seed1"] == ("scratch", None)
    assert names["finetune-pretrained-p5-labels0.1-seed1"] == ("p5.ckpt", 5)
    assert names["probe-pretrained-p3-labels1-seed0"] == ("p3.ckpt", 3)

    def run(init: str, seed: int, miou: float, pretrain_seed: int | None = None) -> dict:
        r = {
            "init": init,
            "mode": "finetune",
            "labels_mode": "scenes",
            "labels": 0.1,
            "train_scenes_labelled": 3,
            "seed": seed,
            "test": {"miou": miou},
        }
        return r if pretrain_seed is None else r | {"pretrain_seed": pretrain_seed}

    scratch = [run("scratch", 0, 10.0), run("scratch", 1, 14.0)]
    run3 = [run("pretrained", 0, 20.0, 3), run("pretrained", 1, 22.0, 3)]
    rows = summarize([*scratch, *run3, run("pretrained", 0, 24.0, 5), run("pretrained", 1, 28.0, 5)])
    by = {r["init"]: r for r in rows}
    pre = by["pretrained"]
    assert pre["seeds"] == 4 and pre["pretrain_runs"] == 2 and pre["miou_mean"] == 23.5
    assert pre["miou_se"] == pytest.approx(math.sqrt(12.5) / math.sqrt(2))  # runs' means 21, 26
    assert "pretrain_runs" not in by["scratch"] and by["scratch"]["miou_se"] == pytest.approx(2.0)
    (g,) = gains(rows)
    assert g["gain"] == 11.5 and g["se"] == pytest.approx(math.sqrt(6.25 + 4.0))
    # paired: run 3's per-seed differences 10, 8 (mean 9), run 5's 14, 14 (mean 14): s.e. over the two runs
    all_runs = [*scratch, *run3, run("pretrained", 0, 24.0, 5), run("pretrained", 1, 28.0, 5)]
    assert gains(rows, all_runs)[0]["paired_se"] == pytest.approx(math.sqrt(12.5) / math.sqrt(2))
    runs = {"pretrain-seed3": {"loss_initial": 8.0}, "pretrain-seed5": {"loss_initial": 7.0}}
    report = report_markdown(rows, [g], runs, 1.0)
    assert "2 pretraining runs × 2 seeds" in report
    assert "| pretrain-seed3 | 8.000 |" in report and "| pretrain-seed5 | 7.000 |" in report
    with pytest.raises(ConfigError, match="pretrain_seeds"):
        load_config(DemoConfig, overrides=["pretrain_seeds=[1, 1]"])
