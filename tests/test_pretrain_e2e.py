"""End to end: the ``ppkt`` CLI pretrains on real rendered files and writes everything it promises."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from ppkt.cli.main import main
from ppkt.config.pretrain import SynthConfig
from ppkt.data.embedded import ensure_synthetic

from .conftest import REPO, TINY_PRETRAIN, assert_mentions


def test_pretrain_writes_config_checkpoints_logs_and_metrics(pretrain_run: Path, tiny_synth: Path) -> None:
    out = pretrain_run
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["root"] == str(tiny_synth) and cfg["loss"]["num_pairs"] == 256
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "checkpoints" / "best.ckpt").is_file()  # lowest held-out loss
    assert (out / "features.png").stat().st_size > 1000  # PCA of the point features, held-out frame
    assert "train/loss" in (out / "csv" / "version_0" / "metrics.csv").read_text()
    assert any(
        p.name.startswith("events.out.tfevents") for p in (out / "tensorboard" / "version_0").iterdir()
    )
    m = json.loads((out / "metrics.json").read_text())
    for key in ("loss_initial", "loss_final", "retrieval_top1_heldout", "retrieval_top1_random_init"):
        assert math.isfinite(m[key]), key
    assert m["retrieval_chance"] == pytest.approx(1 / 64)
    assert 0 <= m["retrieval_top1_heldout"] <= 1
    assert m["train_frames"] == 8 and m["heldout_frames"] == 4  # last of 3 scenes held out
    assert m["steps"] == 4
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4 and any(k.startswith("student.") for k in ckpt["state_dict"])


def test_resume_last_continues_the_run(pretrain_run: Path, tiny_synth: Path, tmp_path: Path) -> None:
    """``--resume last`` with the run's own ``config.yaml`` continues the same run (here a copy of the shared
    one): the global step goes on from the checkpoint, and the earlier logs are kept beside the new ones."""
    out = tmp_path / "run"
    shutil.copytree(pretrain_run, out)
    args = ["pretrain", "--config", str(out / "config.yaml"), "--out", str(out), "--resume", "last"]
    assert main([*args, "trainer.max_epochs=2"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["root"] == str(tiny_synth)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2 * 4
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 * 4
    assert any(k.startswith("student.") for k in ckpt["state_dict"])
    assert "train/loss" in (out / "csv" / "version_1" / "metrics.csv").read_text()  # earlier logs kept
    assert (out / "csv" / "version_0" / "metrics.csv").is_file()


def test_a_checkpoint_to_resume_from_is_checked_before_any_work(
    pretrained_ckpt: Path, tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def resume_error(resume: str, *overrides: str, run: Path = tmp_path / "run") -> str:
        args = ["pretrain", "--out", str(run), "--resume", resume, f"data.root={tiny_synth}", *TINY_PRETRAIN]
        capsys.readouterr()
        assert main([*args, *overrides]) == 2
        return capsys.readouterr().err

    missing = tmp_path / "missing.ckpt"
    assert_mentions(resume_error(str(missing)), missing, "does not exist")
    fresh = tmp_path / "fresh"
    assert_mentions(resume_error("last", run=fresh), fresh / "checkpoints" / "last.ckpt", "no earlier run")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    assert_mentions(resume_error(str(garbage)), garbage, "checkpoint")
    # another config's networks: the error names the checkpoint and the mismatching keys
    assert_mentions(
        resume_error(str(pretrained_ckpt), "upl.dim=32"), pretrained_ckpt, "wrong tensor shapes", "upl."
    )


def test_retrieval_evaluation_checks_its_counts(
    pretrained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(pretrained_ckpt)
    for flag in ("--points=1", "--frames=0"):
        assert (
            main(["evaluate", "--task", "retrieval", "--ckpt", ckpt, "--out", str(tmp_path / "e"), flag]) == 2
        )
        assert_mentions(capsys.readouterr().err, flag.split("=")[0])


def test_cli_rejects_unknown_keys_and_bad_files(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "--out", str(tmp_path / "a"), "data.voxelsize=0.1"]) == 2
    assert_mentions(capsys.readouterr().err, "'data.voxelsize'", "voxel_size")
    # a corrupt colour image: the error names the file
    bad = tmp_path / "bad"
    shutil.copytree(tiny_synth / "scene_0000", bad / "scene_0000")
    shutil.copytree(tiny_synth / "scene_0001", bad / "scene_0001")
    victim = sorted((bad / "scene_0000").glob("*.color.png"))[1]
    victim.write_bytes(victim.read_bytes()[:100])
    assert main(["pretrain", "--out", str(tmp_path / "b"), f"data.root={bad}", *TINY_PRETRAIN]) == 2
    assert victim.name in capsys.readouterr().err
    # with data.skip_bad=true the frame is skipped with a warning and training completes
    with pytest.warns(UserWarning, match=victim.name):
        assert (
            main(
                [
                    "pretrain",
                    "--out",
                    str(tmp_path / "c"),
                    f"data.root={bad}",
                    *TINY_PRETRAIN,
                    "data.skip_bad=true",
                ]
            )
            == 0
        )
    # a data-loader worker's error: the CLI prints the original message, not the worker's traceback
    run_d = ["pretrain", "--out", str(tmp_path / "d"), f"data.root={bad}", *TINY_PRETRAIN]
    assert main([*run_d, "data.num_workers=1", "teacher.cache=false"]) == 2
    err = capsys.readouterr().err
    msg = err[err.index("ppkt: error:") :]  # (stderr may also hold logging noise from earlier tests)
    assert victim.name in msg and "Original Traceback" not in msg and "worker" not in msg
    # every training frame bad: with skip_bad no step can run, which is an error rather than a NaN result
    for p in (bad / "scene_0000").glob("*.color.png"):
        p.write_bytes(b"junk")
    with pytest.warns(UserWarning):
        assert main([*run_d, "data.skip_bad=true"]) == 2
    assert_mentions(capsys.readouterr().err, bad, "no training step")
    assert main(["cache-features", "--batch-size", "0", f"data.root={bad}"]) == 2
    assert_mentions(capsys.readouterr().err, "--batch-size", "0")


def test_embedded_dataset_is_rendered_once_then_reused(tmp_path: Path) -> None:
    cfg = SynthConfig(scenes=1, frames_per_scene=2, seed=3, image_size=(30, 40))
    first = ensure_synthetic(**asdict(cfg), cache_dir=str(tmp_path), verbose=False)
    stamp = (first / "dataset.json").stat().st_mtime_ns
    again = ensure_synthetic(**asdict(cfg), cache_dir=str(tmp_path), verbose=False)
    assert again == first and (again / "dataset.json").stat().st_mtime_ns == stamp
    other = ensure_synthetic(
        scenes=1, frames_per_scene=2, seed=4, image_size=(30, 40), cache_dir=str(tmp_path)
    )
    assert other != first  # a different recipe gets its own folder


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo(tiny_synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "ppkt.cli.main",
        "pretrain",
        "--out",
        str(out),
        f"data.root={tiny_synth}",
        *TINY_PRETRAIN,
        "trainer.threads=1",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 2  # 8 training frames, 2 per process per step, 2 processes
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_superpixel_pooled_pretraining(tiny_synth: Path, tmp_path: Path) -> None:
    """loss.superpixels > 0 (SLidR): points and pixels are pooled per superpixel before the InfoNCE."""
    pytest.importorskip("skimage")
    from ppkt.config import PretrainConfig, from_dict
    from ppkt.training.data import frame_splits, make_loader, num_input_features
    from ppkt.training.pretrain_module import PPKTPretrainModule

    out = tmp_path / "sp"
    args = [f"data.root={tiny_synth}", *TINY_PRETRAIN, "loss.superpixels=10", "teacher.cache=false"]
    assert main(["pretrain", "--out", str(out), *args, "trainer.max_steps=1"]) == 0  # one pooled step
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 1 and math.isfinite(m["loss_initial"]) and math.isfinite(m["loss_final"])

    cfg = from_dict(PretrainConfig, yaml.safe_load((out / "config.yaml").read_text()))
    splits = frame_splits(cfg.data, verbose=False)
    batch = next(iter(make_loader(cfg.data, splits.train[:2], 2, train=False, superpixels=10)))
    module = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features)).eval()
    with torch.no_grad():
        points, pixels = module.superpixel_embeddings(batch)
        p = module.point_embeddings(batch, batch.pair_voxel)
        q = module.pixel_embeddings(
            module.teacher_features(batch), batch.image_size, batch.pair_image, batch.pair_uv
        )
    keys = sorted({(int(i), int(s)) for i, s in zip(batch.pair_image, batch.pair_segment)})
    assert points.shape == pixels.shape == (len(keys), cfg.upl.dim)
    for i, s in keys[:: max(1, len(keys) // 5)][:5]:
        r = keys.index((i, s))
        sel = (batch.pair_image == i) & (batch.pair_segment == s)
        torch.testing.assert_close(points[r], torch.nn.functional.normalize(p[sel].mean(0), dim=0))
        torch.testing.assert_close(pixels[r], torch.nn.functional.normalize(q[sel].mean(0), dim=0))
    assert main(["pretrain", "--out", str(tmp_path / "bad"), *args, "loss.superpixels=-1"]) == 2


def test_feature_rendering_of_a_frame_with_too_few_points_is_a_data_error() -> None:
    """``features.png`` needs 3 points for its PCA; fewer is a DataError (the run skips the picture)."""
    import numpy as np

    from ppkt.config import PretrainConfig
    from ppkt.data.types import Frame
    from ppkt.errors import DataError
    from ppkt.pipelines.report import feature_image
    from ppkt.training.pretrain_module import PPKTPretrainModule

    module = PPKTPretrainModule.from_config(PretrainConfig(), 3)
    depth = np.zeros((8, 8), np.float32)
    depth[0, 0] = depth[5, 6] = 1.0
    K = np.array([[8.0, 0, 4], [0, 8.0, 3], [0, 0, 1]])
    frame = Frame("room", "7", np.zeros((8, 8, 3), np.uint8), depth, K, np.eye(4))
    with pytest.raises(DataError) as err:
        feature_image(module, frame, 0.05, ["rgb"], 2)
    assert_mentions(err.value, "room/7", "2 points", "PCA")
    depth[2, 2] = depth[3, 3] = 2.0
    assert feature_image(module, frame, 0.05, ["rgb"], 2).shape == (8, 8, 3)
