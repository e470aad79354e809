"""Downstream segmentation: metrics, pretrained-backbone loading, probing, fine-tune/evaluate CLIs."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ppkt.cli.main import main
from ppkt.errors import WeightsError
from ppkt.pipelines.report import gains, summarize
from ppkt.training.seg_module import iou_from_confusion, load_pretrained_student

from .conftest import TINY_FINETUNE, assert_mentions


def test_iou_from_confusion_hand_case() -> None:
    cm = torch.tensor([[3, 1, 0], [1, 1, 0], [0, 0, 0]])  # class 2 absent from ground truth
    iou, miou, acc = iou_from_confusion(cm)
    assert iou[0].item() == pytest.approx(3 / 5) and iou[1].item() == pytest.approx(1 / 3)
    assert math.isnan(iou[2].item())
    assert miou.item() == pytest.approx((3 / 5 + 1 / 3) / 2)
    assert acc == pytest.approx(4 / 6)


def test_summary_and_gain_standard_error() -> None:
    def run(init: str, seed: int, miou: float) -> dict:
        return {
            "init": init,
            "mode": "finetune",
            "labels": 0.1,
            "train_scenes_labelled": 2,
            "seed": seed,
            "test": {"miou": miou},
        }

    rows = summarize(
        [
            run("scratch", 0, 10.0),
            run("scratch", 1, 12.0),
            run("pretrained", 0, 20.0),
            run("pretrained", 1, 24.0),
        ]
    )
    by = {r["init"]: r for r in rows}
    assert by["scratch"]["miou_mean"] == 11.0 and by["scratch"]["miou_std"] == pytest.approx(math.sqrt(2))
    (g,) = gains(rows)
    assert g["gain"] == 11.0 and g["se"] == pytest.approx(math.sqrt(2 / 2 + 8 / 2))
    assert g["significant"]


def test_pretrained_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_pretrained_student(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match=r"bad\.ckpt"):
        load_pretrained_student(bad)
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(WeightsError, match="no 'student"):
        load_pretrained_student(tmp_path / "other.ckpt")


def test_finetune_from_pretrained_then_evaluate(
    finetune_run: Path, pretrained_ckpt: Path, tmp_path: Path
) -> None:
    out = finetune_run  # --init <pretrained> --labels 0.5 --seed 1, 3 steps
    m = json.loads((out / "metrics.json").read_text())
    assert m["init"] == "pretrained" and m["mode"] == "finetune" and m["steps"] == 3
    assert m["labels"] == 0.5 and m["seed"] == 1
    assert m["train_scenes_labelled"] == 1  # ceil(0.5 · 2 training scenes)
    assert 0 <= m["test"]["miou"] <= 100 and m["test"]["scenes"] == 1
    assert (out / "config.yaml").is_file() and (out / "csv" / "version_0" / "metrics.csv").is_file()
    # the fine-tuned student started from the pretrained weights (and then moved)
    pre = torch.load(pretrained_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    ft = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    key = next(k for k in ft if k.startswith("student.") and k.endswith("weight") and ft[k].dim() == 5)
    assert not torch.equal(ft[key], pre[key])
    assert torch.allclose(ft[key], pre[key], atol=0.05)
    # ppkt evaluate reproduces the test mIoU on the original points
    ev = tmp_path / "ev"
    assert main(["evaluate", "--ckpt", str(out / "checkpoints" / "last.ckpt"), "--out", str(ev)]) == 0
    e = json.loads((ev / "metrics.json").read_text())
    assert e["miou"] == pytest.approx(m["test"]["miou"], abs=1e-6)
    assert set(e["per_class_iou"]) == set(m["test"]["per_class_iou"])


def test_probe_freezes_the_backbone(tiny_synth: Path, pretrained_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    assert (
        main(
            [
                "finetune",
                "--out",
                str(out),
                "--init",
                str(pretrained_ckpt),
                "--probe",
                f"data.root={tiny_synth}",
                *TINY_FINETUNE,
                "trainer.max_steps=2",
            ]
        )
        == 0
    )
    pre = torch.load(pretrained_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    ft = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for k, v in ft.items():
        if k.startswith("student."):
            assert torch.equal(v, pre[k]), k  # weights and BN statistics untouched
    assert json.loads((out / "metrics.json").read_text())["mode"] == "probe"


def test_head_only_steps_freeze_the_backbone_first(
    tiny_synth: Path, pretrained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """LP-FT: with ``head_only_steps`` = every step (2) the backbone (BN statistics included) stays exactly
    the pretrained one while the head trains; with one step fewer, the last step moves the backbone."""
    pre = torch.load(pretrained_ckpt, map_location="cpu", weights_only=True)["state_dict"]

    def run(name: str, head_only: int) -> dict[str, torch.Tensor]:
        args = ["finetune", "--out", str(tmp_path / name), "--init", str(pretrained_ckpt)]
        args += [f"data.root={tiny_synth}", *TINY_FINETUNE, "trainer.max_steps=2"]
        assert main([*args, f"optim.head_only_steps={head_only}"]) == 0
        ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
        sd: dict[str, torch.Tensor] = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        assert json.loads((tmp_path / name / "metrics.json").read_text())["mode"] == "finetune"
        return sd

    frozen = run("all_head_only", 2)
    moved = run("then_all", 1)
    student = [k for k in pre if k.startswith("student.")]
    assert all(torch.equal(frozen[k], pre[k]) for k in student)
    assert any(not torch.equal(moved[k], pre[k]) for k in student if k.endswith(".weight"))
    assert any(not torch.equal(moved[k], pre[k]) for k in student if k.endswith("running_mean"))
    head = [k for k in frozen if k.startswith("head.")]
    assert head and all(torch.isfinite(frozen[k]).all() for k in head)
    assert main(["finetune", "--out", str(tmp_path / "bad"), "optim.head_only_steps=-1"]) == 2
    assert_mentions(capsys.readouterr().err, "'optim.head_only_steps'", "-1")


def test_lovasz_loss_is_added_to_the_cross_entropy(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lov"
    args = ["finetune", "--out", str(out), f"data.root={tiny_synth}", *TINY_FINETUNE, "trainer.max_steps=2"]
    assert main([*args, "loss=ce+lovasz"]) == 0
    rows = list(csv.DictReader((out / "csv" / "version_0" / "metrics.csv").open()))
    pairs = [(float(r["train/loss"]), float(r["train/lovasz"])) for r in rows if r.get("train/lovasz")]
    assert len(pairs) == 2  # one per step (log_every_n_steps=1)
    assert all(0 < lov <= 1 and total > lov for total, lov in pairs)  # Lovász ∈ (0, 1]; CE > 0 on top
    assert main(["finetune", "--out", str(tmp_path / "bad"), "loss=dice"]) == 2
    assert_mentions(capsys.readouterr().err, "'loss'", "dice")


def test_inverse_sqrt_class_weights(
    finetune_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ppkt.config import FinetuneConfig, to_dict
    from ppkt.training.seg_module import SegmentationModule

    m = SegmentationModule(to_dict(FinetuneConfig()), 3, 4, ["a", "b", "c", "d"])
    assert torch.equal(m.class_weights, torch.ones(4))  # until set from the training labels
    m.set_class_weights(torch.tensor([400, 100, 0, 25]))
    w = m.class_weights
    assert w[2] == 0 and w[[0, 1, 3]].mean().item() == pytest.approx(1.0)
    assert (w[1] / w[0]).item() == pytest.approx(2.0) and (w[3] / w[0]).item() == pytest.approx(4.0)
    assert "class_weights" not in m.state_dict()  # training-only: checkpoints are unchanged
    with pytest.raises(ValueError, match="4 class counts"):
        m.set_class_weights(torch.ones(3))
    # end to end (the default): the run trains with the weights of its own labelled points and says so
    assert yaml.safe_load((finetune_run / "config.yaml").read_text())["class_weights"] == "inverse_sqrt"
    assert main(["finetune", "--out", str(tmp_path / "bad"), "class_weights=inverse"]) == 2
    assert_mentions(capsys.readouterr().err, "'class_weights'", "inverse")


def test_finetune_rejects_a_mismatched_student(
    tiny_synth: Path, pretrained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "finetune",
            "--out",
            str(tmp_path / "x"),
            "--init",
            str(pretrained_ckpt),
            "student.name=res16unet34c",
            f"data.root={tiny_synth}",
            *TINY_FINETUNE,
        ]
    )
    assert code == 2
    assert_mentions(capsys.readouterr().err, pretrained_ckpt, "res16unet34c")


def _copy_without_class_list(src: Path, dst: Path) -> Path:
    """The dataset's scene folders without ``dataset.json``: classes are then known only from the labels."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("dataset.json"))
    (dst / "dataset.json").unlink(missing_ok=True)
    return dst


def test_a_class_only_in_the_test_scenes_is_counted(
    tiny_synth: Path, finetune_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Class 13 exists only in the test scene: fine-tuning sizes its head, class weights and metrics for
    it; a model that predicts fewer classes than the data holds is refused by ``ppkt evaluate``."""
    rare = _copy_without_class_list(tiny_synth, tmp_path / "rare")
    for f in sorted((rare / "scene_0002").glob("*.label.png")):  # the test scene (data.test=0.3 of 3)
        lab = np.array(Image.open(f))
        lab[lab == 1] = 13
        Image.fromarray(lab).save(f)
    out = tmp_path / "ft"
    assert (
        main(["finetune", "--out", str(out), f"data.root={rare}", *TINY_FINETUNE, "trainer.max_steps=1"]) == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["test"]["per_class_iou"]) == 13 and m["test"]["per_class_iou"]["class_13"] is not None
    assert m["test"]["per_class_iou"]["class_1"] is None  # class 1 only in the training scenes now

    # the shared run was trained where the largest class is 12
    small = json.loads((finetune_run / "metrics.json").read_text())
    assert len(small["test"]["per_class_iou"]) == 12
    capsys.readouterr()
    ckpt = finetune_run / "checkpoints" / "last.ckpt"
    assert main(["evaluate", "--ckpt", str(ckpt), "--data", str(rare), "--out", str(tmp_path / "ev")]) == 2
    assert_mentions(capsys.readouterr().err, rare, ckpt, "13", "12")


def test_data_without_labels_and_bad_output_paths_are_refused(
    tiny_synth: Path, pretrained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nolabels = _copy_without_class_list(tiny_synth, tmp_path / "nolabels")
    for f in nolabels.glob("*/*.label.png"):
        f.unlink()
    assert main(["finetune", "--out", str(tmp_path / "a"), f"data.root={nolabels}", *TINY_FINETUNE]) == 2
    assert_mentions(capsys.readouterr().err, nolabels, "labelled points")

    # labels only in the test scene: the training scenes have none to learn from
    partial = _copy_without_class_list(tiny_synth, tmp_path / "partial")
    for f in [*partial.glob("scene_0000/*.label.png"), *partial.glob("scene_0001/*.label.png")]:
        Image.fromarray(np.zeros_like(np.array(Image.open(f)))).save(f)
    assert main(["finetune", "--out", str(tmp_path / "b"), f"data.root={partial}", *TINY_FINETUNE]) == 2
    assert_mentions(capsys.readouterr().err, partial, "scene_0000", "scene_0001", "no labelled points")

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["finetune", "--out", str(afile), f"data.root={tiny_synth}", *TINY_FINETUNE]) == 2
    assert_mentions(capsys.readouterr().err, afile, "not a folder")
    assert afile.read_text() == "x"

    # a student pretrained on rgb cannot be fine-tuned on other input features
    code = main(
        [
            "finetune",
            "--out",
            str(tmp_path / "c"),
            "--init",
            str(pretrained_ckpt),
            f"data.root={tiny_synth}",
            *TINY_FINETUNE,
            "data.features=[rgb, height]",
        ]
    )
    assert code == 2
    assert_mentions(capsys.readouterr().err, pretrained_ckpt, "['rgb']", "data.features=['rgb', 'height']")


#: ``ppkt demo --quick`` shrunk further for the test: 3 tiny rendered scenes (2 train, 1 test), 1 epoch of
#: pretraining, 2 fine-tuning steps per job, the jobs one after the other in the test's process (the worker
#: processes of ``workers > 1`` are tested on their own below). The grid and the report stay as they are.
TINY_DEMO = [
    "pretrain.data.synth.scenes=3",
    "pretrain.data.synth.frames_per_scene=4",
    "pretrain.data.synth.image_size=[60,80]",
    "pretrain.data.image_size=[48,64]",
    "pretrain.data.voxel_size=0.1",
    "pretrain.trainer.max_epochs=1",
    "pretrain.trainer.batch_size=2",
    "pretrain.trainer.progress_bar=false",
    "pretrain.loss.num_pairs=256",
    "pretrain.eval.retrieval_points=64",
    "pretrain.eval.retrieval_frames=2",
    "finetune.data.fuse_voxel_size=0.05",
    "finetune.trainer.max_steps=2",
    "workers=1",
]


@pytest.mark.slow
def test_demo_quick(tmp_path: Path) -> None:
    """``ppkt demo --quick`` end to end on the embedded data: render, pretrain, the grid of fine-tuning and
    probing jobs over 2 seeds, the report."""
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(out), f"pretrain.data.cache_dir={tmp_path / 'cache'}"]
    assert main([*args, *TINY_DEMO]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["seeds"] == [0, 1] and cfg["label_fractions"] == [0.01, 1.0]  # --quick's
    assert cfg["label_points"] == [20]
    m = json.loads((out / "metrics.json").read_text())
    cells = {(r["init"], r["mode"], r["labels_mode"], r["labels"]) for r in m["results"]}
    inits = ("scratch", "pretrained")
    assert cells == {(i, "finetune", "scenes", f) for i in inits for f in (0.01, 1.0)} | {
        (i, "finetune", "points_per_scene", 20) for i in inits
    } | {(i, "probe", "scenes", 1.0) for i in inits}
    assert all(r["seeds"] == 2 and 0 <= r["miou_mean"] <= 100 for r in m["results"])
    assert len(list((out / "runs").glob("*/metrics.json"))) == 2 * len(cells)  # every job ran
    # the demo pretrains with scene pairing and an HHA teacher: 2 training rooms × 4 frames fused 4 views at a
    # time = one sample per room, batches of 2 samples → 1 step
    data = cfg["pretrain"]["data"]
    assert (data["pairing"]["mode"], data["pairing"]["views"], data["teacher_input"]) == ("scene", 4, "hha")
    assert (m["pretrain"]["steps"], m["pretrain"]["train_frames"]) == (1, 8)
    assert (out / "report.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "| protocol | labels" in report and "limited annotations" in report and "s.e." in report


@pytest.mark.slow
def test_demo_with_several_pretraining_runs(tmp_path: Path) -> None:
    """``pretrain_seeds=[0, 1]``: two pretraining runs (other seeds, so other students), the pretrained
    jobs from each, pooled cells whose s.e. is over the two runs' means, both runs in the report."""
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), f"pretrain.data.cache_dir={tmp_path / 'cache'}", *TINY_DEMO]
    grid = ["label_fractions=[1.0]", "label_points=[]", "seeds=[0, 1]", "pretrain_seeds=[0, 1]"]
    assert main([*args, *grid]) == 0
    states = [
        torch.load(out / f"pretrain-seed{p}" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for p in (0, 1)
    ]
    key = next(k for k in states[0] if k.startswith("student.") and k.endswith("weight"))
    assert not torch.equal(states[0][key], states[1][key])
    runs = {p.name for p in (out / "runs").iterdir()}
    assert len(runs) == 2 * 2 * 3 and "finetune-pretrained-p1-labels1-seed0" in runs
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["pretrain_runs"]) == {"pretrain-seed0", "pretrain-seed1"}
    for row in m["results"]:
        if row["init"] == "scratch":
            assert row["seeds"] == 2 and "pretrain_runs" not in row
            continue
        assert row["seeds"] == 4 and row["pretrain_runs"] == 2
        tag = "finetune" if row["mode"] == "finetune" else "probe"
        means = [
            np.mean(
                [
                    json.loads(
                        (out / "runs" / f"{tag}-pretrained-p{p}-labels1-seed{s}" / "metrics.json").read_text()
                    )["test"]["miou"]
                    for s in (0, 1)
                ]
            )
            for p in (0, 1)
        ]
        assert row["miou_mean"] == pytest.approx(np.mean(means))
        assert row["miou_se"] == pytest.approx(np.std(means, ddof=1) / np.sqrt(2))
    report = (out / "report.md").read_text()
    assert "2 pretraining runs × 2 seeds" in report and "| pretrain-seed1 |" in report


@pytest.mark.slow
def test_demo_jobs_run_in_reused_worker_processes(
    tiny_synth: Path, pretrained_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``workers=2`` (the demo's default): the fine-tuning jobs run in two worker processes, from their
    configs alone, and the results come back in job order. A worker runs job after job (torch imported and
    the scenes loaded once), and a job's result does not depend on what ran before it in the process: the
    third and fourth jobs repeat the first two to the last digit, and the in-process run agrees."""
    from ppkt.config import FinetuneConfig, load_config
    from ppkt.pipelines import demo
    from ppkt.training.seg_data import load_scene_splits

    overrides = [f"data.root={tiny_synth}", *TINY_FINETUNE, "trainer.max_steps=2", "trainer.threads=1"]
    scratch = load_config(FinetuneConfig, overrides=overrides)
    pretrained = load_config(FinetuneConfig, overrides=[*overrides, f"init={pretrained_ckpt}", "probe=true"])
    splits = load_scene_splits(scratch.data, verbose=False)
    here = demo.run_jobs([("here", scratch)], tmp_path, 1, splits)[0]

    def in_this_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a job ran in the demo's own process")

    monkeypatch.setattr(demo, "run_finetune", in_this_process)  # spawned workers import their own
    jobs = [("a", pretrained), ("b", scratch), ("c", pretrained), ("d", scratch)]
    results = demo.run_jobs(jobs, tmp_path, 2, splits)
    assert [(r["init"], r["mode"]) for r in results] == [("pretrained", "probe"), ("scratch", "finetune")] * 2
    for name, r in zip("abcd", results):
        written = json.loads((tmp_path / name / "metrics.json").read_text())
        assert written["steps"] == r["steps"] == 2 and written["test"]["miou"] == r["test"]["miou"]
    assert results[2]["test"] == results[0]["test"] and results[3]["test"] == results[1]["test"]
    assert results[1]["test"] == here["test"]


@pytest.mark.slow
def test_demo_runs_the_scratch_jobs_beside_pretraining(
    tiny_synth: Path, pretrained_ckpt: Path, tmp_path: Path
) -> None:
    """``overlap`` (the demo's default with ``workers > 1``): the jobs that need no checkpoint run one at a
    time while pretraining runs in the demo's process; the others start only once it has returned."""
    import time

    from ppkt.config import FinetuneConfig, load_config
    from ppkt.pipelines import demo
    from ppkt.training.seg_data import load_scene_splits

    overrides = [f"data.root={tiny_synth}", *TINY_FINETUNE, "trainer.max_steps=1", "trainer.threads=1"]
    scratch = load_config(FinetuneConfig, overrides=overrides)
    pretrained = load_config(FinetuneConfig, overrides=[*overrides, f"init={pretrained_ckpt}", "probe=true"])
    splits = load_scene_splits(scratch.data, verbose=False)
    seen: dict[str, bool] = {}

    def pretraining(wait_free: object) -> None:  # stands in for pretraining: waits for both scratch jobs
        deadline = time.monotonic() + 300
        while not all((tmp_path / n / "metrics.json").exists() for n in ("s0", "s1")):
            assert time.monotonic() < deadline, "the scratch jobs did not run beside the call"
            time.sleep(0.2)
        seen["pretrained started early"] = (tmp_path / "p0").exists()

    jobs = [("s0", scratch), ("s1", scratch), ("p0", pretrained)]
    results = demo.run_jobs(jobs, tmp_path, 2, splits, beside=(pretraining, 2))
    assert seen == {"pretrained started early": False}
    assert [(r["init"], r["mode"]) for r in results] == [
        ("scratch", "finetune"),
        ("scratch", "finetune"),
        ("pretrained", "probe"),
    ]
    assert results[0]["test"]["miou"] == pytest.approx(results[1]["test"]["miou"])  # same config, same result


def test_holding_the_feed_starts_no_further_job_beside_the_call(
    tiny_synth: Path, pretrained_ckpt: Path, tmp_path: Path
) -> None:
    """``wait_free()`` (pretraining's switch to every core): the running scratch job ends first, no other
    starts beside the call, and those not started run after it with the others."""
    import time

    from ppkt.config import FinetuneConfig, load_config
    from ppkt.pipelines import demo
    from ppkt.training.seg_data import load_scene_splits

    overrides = [f"data.root={tiny_synth}", *TINY_FINETUNE, "trainer.max_steps=1", "trainer.threads=1"]
    scratch = load_config(FinetuneConfig, overrides=overrides)
    pretrained = load_config(FinetuneConfig, overrides=[*overrides, f"init={pretrained_ckpt}", "probe=true"])
    splits = load_scene_splits(scratch.data, verbose=False)
    seen: dict[str, object] = {}

    def pretraining(wait_free) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 300
        while not (tmp_path / "s0").exists():  # the first scratch job has started
            assert time.monotonic() < deadline, "no scratch job ran beside the call"
            time.sleep(0.05)
        wait_free()
        seen["after hold"] = sorted(p.name for p in tmp_path.iterdir() if (p / "metrics.json").exists())
        seen["started"] = sorted(p.name for p in tmp_path.iterdir())
        wait_free()  # a second call returns at once

    jobs = [("s0", scratch), ("s1", scratch), ("s2", scratch), ("p0", pretrained)]
    results = demo.run_jobs(jobs, tmp_path, 2, splits, beside=(pretraining, 3))
    assert seen["after hold"] == seen["started"]  # every job started beside the call had ended
    assert "p0" not in seen["started"] and len(seen["started"]) in (1, 2)  # s0 (and s1 if s0 was done)
    assert [r["init"] for r in results] == ["scratch", "scratch", "scratch", "pretrained"]  # all ran
    assert results[0]["test"]["miou"] == pytest.approx(results[2]["test"]["miou"])


def test_threads_switch_at_a_fixed_step_after_the_wait(tmp_path: Path) -> None:
    """``ThreadsAtStep``: the first ``share`` of the steps at the starting threads, then ``wait()`` once and
    the new thread count, at step ``round(share × steps)`` whatever the wait."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from ppkt.training.common import ThreadsAtStep

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)
            self.threads: list[int] = []

        def training_step(self, batch: list[torch.Tensor], i: int) -> torch.Tensor:
            self.threads.append(torch.get_num_threads())
            return self.lin(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    before = torch.get_num_threads()
    waits: list[int] = []
    try:
        torch.set_num_threads(1)
        model = Tiny()
        switch = ThreadsAtStep(0.4, 2, lambda: waits.append(len(model.threads)))
        data = DataLoader(TensorDataset(torch.randn(10, 3)), batch_size=2)  # 5 steps an epoch, 2 epochs
        trainer = L.Trainer(
            max_epochs=2, callbacks=[switch], default_root_dir=tmp_path, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(model, data)
    finally:
        torch.set_num_threads(before)
    assert model.threads == [1] * 4 + [2] * 6  # round(0.4 × 10) = 4 steps at 1 thread
    assert waits == [4]
    with pytest.raises(ValueError, match="share"):
        ThreadsAtStep(0.0, 2, lambda: None)


@pytest.mark.slow
def test_a_failing_call_beside_the_jobs_stops_them(tiny_synth: Path, tmp_path: Path) -> None:
    """Pretraining that fails while scratch jobs run beside it: the error comes out, queued jobs never
    start."""
    from ppkt.config import FinetuneConfig, load_config
    from ppkt.pipelines import demo
    from ppkt.training.seg_data import load_scene_splits

    overrides = [f"data.root={tiny_synth}", *TINY_FINETUNE, "trainer.max_steps=1", "trainer.threads=1"]
    scratch = load_config(FinetuneConfig, overrides=overrides)
    splits = load_scene_splits(scratch.data, verbose=False)

    def pretraining(wait_free: object) -> None:
        raise RuntimeError("pretraining broke")

    jobs = [(f"s{i}", scratch) for i in range(4)]
    with pytest.raises(RuntimeError, match="pretraining broke"):
        demo.run_jobs(jobs, tmp_path, 2, splits, beside=(pretraining, 4))
    assert not (tmp_path / "s3").exists()


@pytest.mark.slow
def test_demo_overlaps_scratch_jobs_with_pretraining(tmp_path: Path) -> None:
    """The demo with ``workers=2`` (its default): pretraining gets the cores one job leaves, the scratch jobs
    run beside it, and the report has every cell."""
    import os

    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), f"pretrain.data.cache_dir={tmp_path / 'cache'}", *TINY_DEMO]
    grid = ["label_fractions=[1.0]", "label_points=[]", "seeds=[0]", "workers=2"]
    assert main([*args, *grid]) == 0
    cores = os.cpu_count() or 1
    run_cfg = yaml.safe_load((out / "pretrain" / "config.yaml").read_text())
    assert run_cfg["trainer"]["threads"] == max(1, cores - max(1, cores // 2))
    m = json.loads((out / "metrics.json").read_text())
    assert {(r["init"], r["mode"]) for r in m["results"]} == {
        (i, mode) for i in ("scratch", "pretrained") for mode in ("finetune", "probe")
    }
    assert len(list((out / "runs").glob("*/metrics.json"))) == 4
