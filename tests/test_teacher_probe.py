"""The teacher probe: linear separability of the frozen teacher's pixel features, layer by layer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ppkt.cli.main import main
from ppkt.training.teacher_probe import fit_linear_probe, score_probe

from .conftest import REPO, assert_mentions


def test_linear_probe_separates_separable_classes_and_not_noise() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=g)
    centres = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    x = centres[y] + torch.randn(600, 2, generator=g)
    probe = fit_linear_probe(x[:400], y[:400], 3, steps=200)
    good = score_probe(probe, x[400:], y[400:], 3)
    assert good.miou > 0.9 and good.accuracy > 0.95
    noise = torch.randn(600, 2, generator=g)  # features that carry nothing about the class
    bad = score_probe(fit_linear_probe(noise[:400], y[:400], 3, steps=200), noise[400:], y[400:], 3)
    assert bad.miou < 0.45


def test_absent_classes_score_nan_and_stay_out_of_the_mean() -> None:
    probe = torch.nn.Linear(2, 3)
    with torch.no_grad():
        probe.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        probe.bias.copy_(torch.tensor([0.0, 0.0, -10.0]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    score = score_probe(probe, x, torch.tensor([0, 1, 1]), 3)
    assert score.per_class_iou[0] == pytest.approx(0.5) and score.per_class_iou[1] == pytest.approx(0.5)
    assert score.per_class_iou[2] != score.per_class_iou[2]  # NaN: class 2 is in no label
    assert score.miou == pytest.approx(0.5)


PROBE_ARGS = ["data.image_size=[48,64]", "data.heldout=0.3", "teacher.layers=[stage3,stage5]"]


def test_teacher_probe_scores_each_layer_and_all(tiny_synth: Path, tmp_path: Path) -> None:
    main(["teacher-probe", "--out", str(tmp_path / "p"), "--pixels", "200", "--steps", "100",
          f"data.root={tiny_synth}", *PROBE_ARGS])  # fmt: skip
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert [r["layers"] for r in m["results"]] == [["stage3"], ["stage5"], ["stage3", "stage5"]]
    assert [r["channels"] for r in m["results"]] == [40, 112, 152]
    assert m["train_frames"] == 8 and m["test_frames"] == 4
    for r in m["results"]:
        assert 0 < r["miou"] <= 1 and 0 < r["train_miou"] <= 1
        assert set(r["per_class_iou"]) >= {"floor", "wall"}
        assert r["per_class_iou"]["floor"] > 0.3  # the floor is the easiest surface of these rooms


def test_teacher_probe_reads_the_pretrain_section_of_a_demo_config(tiny_synth: Path, tmp_path: Path) -> None:
    config = tmp_path / "demo.yaml"
    data = {"root": str(tiny_synth), "heldout": 0.3, "image_size": [48, 64]}
    config.write_text(yaml.safe_dump({"pretrain": {"data": data}, "seeds": [0]}))
    assert main(["teacher-probe", "--config", str(config), "--out", str(tmp_path / "p"), "--pixels", "50",
                 "--steps", "5", "teacher.layers=[stage5]"]) == 0  # fmt: skip
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert m["image_size"] == [48, 64] and m["train_frames"] == 8 and m["labels"] == "label images"
    assert [r["layers"] for r in m["results"]] == [["stage5"]]


def test_teacher_probe_names_a_frame_without_labels(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_synth, data)
    victim = sorted(data.glob("scene_0001/*.label.png"))[0]
    victim.unlink()
    assert main(["teacher-probe", "--out", str(tmp_path / "p"), "--pixels", "50", "--steps", "5",
                 f"data.root={data}", *PROBE_ARGS]) == 2  # fmt: skip
    assert_mentions(capsys.readouterr().err, victim.name.split(".")[0], "label")
    assert not (tmp_path / "p" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("args", "parts"),
    [(["--pixels", "0"], ["--pixels", ">= 1"]), (["data.heldout=0"], ["data.heldout", "> 0"])],
)
def test_teacher_probe_bad_arguments(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], parts: list[str]
) -> None:
    assert main(["teacher-probe", "--out", str(tmp_path / "p"), f"data.root={tiny_synth}", *args]) == 2
    assert_mentions(capsys.readouterr().err, *parts)


@pytest.mark.real_data
def test_teacher_probe_on_scannet_projects_the_mesh_labels(shared_data: Path, tmp_path: Path) -> None:
    """ScanNet labels mesh vertices, not frames: the probe projects them into the frames (depth-checked) and
    skips the unlabelled scenes with a warning."""
    root, config = shared_data / "scannet", REPO / "configs" / "scannet_benchmark.yaml"
    code = main(["teacher-probe", "--config", str(config), "--out", str(tmp_path / "p"), "--pixels", "300",
                 "--steps", "50", f"data.root={root}", "data.frame_skip=10", "data.image_size=[120,160]",
                 "teacher.layers=[stage5]"])  # fmt: skip
    assert code == 0
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert m["labels"] == "labelled clouds projected into the frames"
    assert sorted(Path(p).name for p in m["skipped_unlabelled_scenes"]) == ["scene0113_00", "scene0448_01"]
    assert m["train_frames"] >= 10 and m["test_frames"] >= 1 and m["train_pixels"] >= 10 * 300
    r = m["results"][0]
    assert len(r["per_class_iou"]) == 20 and "floor" in r["per_class_iou"]
    assert r["per_class_iou"]["floor"] > 0.3 and 0 < r["miou"] <= 1


@pytest.mark.real_data
def test_teacher_probe_on_unlabelled_scannet_names_the_problem(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene = shared_data / "scannet" / "scene0113_00"  # no label PLY
    assert main(["teacher-probe", "--out", str(tmp_path / "p"), f"data.root={scene}", "data.layout=scannet",
                 "data.heldout_mode=tail"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert_mentions(err, "scene0113_00", "without labels")
    assert_mentions(err, "labelled training and held-out frames")
    assert not (tmp_path / "p" / "metrics.json").exists()
