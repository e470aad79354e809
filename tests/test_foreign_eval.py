"""``ppkt evaluate`` and ``ppkt finetune --init … --probe`` on other frameworks' checkpoints.

Round trip on real files: a tiny ``ppkt finetune`` run of each exportable preset -> ``ppkt export`` with its
classifier -> ``ppkt evaluate --ckpt <that file> student.name=…`` gives the test metrics of evaluating the
ppkt checkpoint itself. Files without a classifier are refused with the commands that make one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ppkt.cli.main import main
from ppkt.export import detect_format, export_weights, import_classifier, read_weights_file
from ppkt.models.student import build_student
from ppkt.sparse import SparseTensor
from ppkt.training.common import load_run_checkpoint
from ppkt.training.foreign import foreign_segmentation_module
from ppkt.training.seg_module import SegmentationModule
from tests.test_export import cli_export, cloud, fake_run

from .conftest import TINY_FINETUNE, assert_mentions

#: tiny fine-tuning runs: one step from scratch is enough to have a ppkt checkpoint with a classifier
ONE_STEP = [*TINY_FINETUNE, "trainer.max_steps=1"]


def evaluate(ckpt: Path, out: Path, *extra: str) -> dict:
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "target"),
    [("spunet_v1m1", "pointcept"), ("slidr_res16unet34c", "minkunet34c"), ("mmdet3d_minkunet34", "mmdet3d")],
)
def test_evaluate_exported_classifier_equals_ppkt(
    tiny_synth: Path, tmp_path: Path, preset: str, target: str
) -> None:
    data = [f"data.root={tiny_synth}", f"student.name={preset}"]
    run = tmp_path / "run"
    assert main(["finetune", "--out", str(run), "--init", "scratch", *data, *ONE_STEP]) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    assert cli_export(ckpt, target, tmp_path / "foreign.pth") == 0
    ours = evaluate(ckpt, tmp_path / "ev_ppkt")
    theirs = evaluate(tmp_path / "foreign.pth", tmp_path / "ev_foreign", *data, *ONE_STEP)
    assert theirs["scenes"] == ours["scenes"] >= 1
    assert theirs["miou"] == pytest.approx(ours["miou"], abs=1e-9)
    assert theirs["accuracy"] == pytest.approx(ours["accuracy"], abs=1e-9)
    assert theirs["per_class_iou"] == ours["per_class_iou"]
    # and the same function, not only the same scores: equal logits on another cloud
    module = load_run_checkpoint(SegmentationModule, ckpt, "finetune").eval()
    foreign = detect_format(read_weights_file(tmp_path / "foreign.pth"))
    assert foreign is not None and foreign.target.name == target
    again = foreign_segmentation_module(
        tmp_path / "foreign.pth", foreign, module.cfg, module.num_classes, module.class_names
    )
    coords = cloud(batch=2, side=12, n=300, seed=4)
    x = SparseTensor(torch.rand(coords.shape[0], 3) - 0.5, coords)
    with torch.no_grad():
        expected = module.head(module.student(x))
        got = again.head(again.student(x))
    assert expected.std() > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_classifier_conventions(tmp_path: Path) -> None:
    """A classifier for class ids 1..N: Pointcept's and mmdet3d's ``final`` hold N outputs, SLidR's one more
    (its output 0 is the ignored label 0, written with zero weights); reading drops it again."""
    student = build_student("minkunet34c", 3)
    head = {"weight": torch.randn(13, 96), "bias": torch.randn(13)}
    slidr = export_weights(student, student.state_dict(), "minkunet34c", head=head, classifier=True)
    kernel, bias = slidr["model_points"]["final.kernel"], slidr["model_points"]["final.bias"]
    assert kernel.shape == (96, 14) and bias.shape == (1, 14)
    assert not kernel[:, 0].any() and not bias[0, 0]
    torch.testing.assert_close(kernel[:, 1:], head["weight"].t(), rtol=0, atol=0)
    foreign = detect_format(slidr)
    assert foreign is not None and foreign.num_outputs == 14
    back = import_classifier(foreign, 96, "slidr file")
    assert back is not None
    assert torch.equal(back["weight"], head["weight"]) and torch.equal(back["bias"], head["bias"])
    pc = build_student("spunet_v1m1", 3)
    pointcept = export_weights(pc, pc.state_dict(), "pointcept", head=head, classifier=True)
    assert pointcept["state_dict"]["module.backbone.final.weight"].shape == (13, 1, 1, 1, 96)
    foreign = detect_format(pointcept)
    assert foreign is not None
    back = import_classifier(foreign, 96, "pointcept file")
    assert back is not None and torch.equal(back["weight"], head["weight"])


def test_evaluate_refuses_files_without_a_classifier(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backbone-only file and a pretraining projection: exit 2, the message names the file and says to
    fine-tune or probe it; a ppkt checkpoint takes no config overrides."""
    fake_run(tmp_path / "pt.ckpt", "spunet_v1m1")  # a pretraining run: no classifier exported to Pointcept
    assert cli_export(tmp_path / "pt.ckpt", "pointcept", tmp_path / "backbone.pth") == 0
    fake_run(tmp_path / "mink.ckpt", "minkunet34c")  # SLidR-style: final is the projection (8-d here)
    assert cli_export(tmp_path / "mink.ckpt", "minkunet34c", tmp_path / "projection.pt") == 0
    raw = torch.load(tmp_path / "projection.pt", weights_only=True)
    torch.save({**raw, "model_images": {}}, tmp_path / "slidr_pretrain.pt")  # as SLidR's pretrain.py saves
    data = [f"data.root={tiny_synth}", *ONE_STEP]
    cases = [
        ("backbone.pth", "spunet_v1m1", "without a classifier"),
        ("projection.pt", "minkunet34c", "8 outputs"),
        ("slidr_pretrain.pt", "minkunet34c", "pretraining projection"),
    ]
    for name, preset, why in cases:
        path = tmp_path / name
        args = [
            "evaluate",
            "--ckpt",
            str(path),
            "--out",
            str(tmp_path / "ev"),
            f"student.name={preset}",
            *data,
        ]
        assert main(args) == 2, name
        assert_mentions(capsys.readouterr().err, str(path), why, "ppkt finetune --init", "--probe")
    args = ["evaluate", "--ckpt", str(tmp_path / "pt.ckpt"), "--out", str(tmp_path / "ev"), "student.name=x"]
    assert main(args) == 2
    assert_mentions(capsys.readouterr().err, "pt.ckpt", "carries its own config")


def test_slidr_stem_hint(tmp_path: Path) -> None:
    """SLidR's Res16UNet34C has a 3³ stem (its configs' kernel_size: 3): read into the 5³ ``minkunet34c``
    preset, the error says which preset fits."""
    from ppkt.errors import WeightsError
    from ppkt.export import import_student_weights

    student = build_student("slidr_res16unet34c", 1)
    torch.save(export_weights(student, student.state_dict(), "minkunet34c"), tmp_path / "slidr.pt")
    assert torch.load(tmp_path / "slidr.pt", weights_only=True)["model_points"]["conv0p1s1.kernel"].shape == (
        27,
        1,
        32,
    )
    with pytest.raises(WeightsError) as err:
        import_student_weights(tmp_path / "slidr.pt", build_student("minkunet34c", 1), "minkunet34c")
    assert_mentions(err.value, "conv0p1s1.kernel", "(27, 1, 32)", "student.name=slidr_res16unet34c")
    back = import_student_weights(tmp_path / "slidr.pt", build_student("slidr_res16unet34c", 1))
    assert back is not None and torch.equal(
        back["stem.conv.weight"], student.state_dict()["stem.conv.weight"]
    )


@pytest.mark.slow
def test_linear_probe_of_foreign_weights(tiny_synth: Path, tmp_path: Path) -> None:
    """``ppkt finetune --init <Pointcept file> --probe``: the backbone is the file's and stays frozen (its
    weights and BN statistics in the run's checkpoint equal the file's); the head trains; metrics exist."""
    student = fake_run(tmp_path / "pt.ckpt", "spunet_v1m1")
    assert cli_export(tmp_path / "pt.ckpt", "pointcept", tmp_path / "pointcept.pth") == 0
    run = tmp_path / "probe"
    args = ["finetune", "--out", str(run), "--init", str(tmp_path / "pointcept.pth"), "--probe"]
    assert main([*args, f"data.root={tiny_synth}", "student.name=spunet_v1m1", *TINY_FINETUNE]) == 0
    sd = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in student.state_dict().items():
        assert torch.equal(sd[f"student.{k}"], v), k
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mode"] == "probe" and metrics["init"] == "pretrained" and metrics["steps"] == 3
    assert 0 <= metrics["test"]["miou"] <= 100
