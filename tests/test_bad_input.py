"""Bad input caught early, with a message naming the file or key: crafted checkpoints never run code,
trainer keys are checked when the config loads, intrinsics that cannot belong to the image, frames missing
a file, unbounded label ids, the retrieval report's frame count, and the packaging metadata."""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.cli.main import main
from ppkt.config import FinetuneConfig, PretrainConfig, from_dict, load_config, to_dict
from ppkt.config.demo import DemoConfig
from ppkt.data import fusion
from ppkt.data.frame_dataset import FrameDataset
from ppkt.data.fusion import fuse_scene
from ppkt.data.readers.folder import RGBDFolder
from ppkt.data.splits import split_by_order
from ppkt.data.types import FrameRef
from ppkt.errors import ConfigError, DataError, WeightsError
from ppkt.models.teachers.base import load_weights
from ppkt.models.teachers.resnet import read_resnet_state_dict
from ppkt.training.common import load_run_checkpoint, read_checkpoint
from ppkt.training.pretrain_module import PPKTPretrainModule
from ppkt.training.seg_module import SegmentationModule, load_pretrained_student

from .conftest import REPO

H, W = 24, 32
K_PIXELS = "30 0 16\n0 30 12\n0 0 1\n"


def _scene(
    root: Path,
    names: tuple[str, ...] = ("0", "1", "2"),
    K: str = K_PIXELS,
    color_ext: str = "png",
    label: np.ndarray | None = None,
) -> Path:
    """A generic-layout scene of ``H×W`` frames: random colour, depth 1.2-1.8 m, identity-ish poses."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "intrinsics.txt").write_text(K)
    for i, n in enumerate(names):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f"{n}.color.{color_ext}")
        depth = rng.integers(1200, 1800, (H, W)).astype(np.uint16)
        Image.fromarray(depth).save(root / f"{n}.depth.png")
        pose = np.eye(4)
        pose[0, 3] = 0.05 * i
        np.savetxt(root / f"{n}.pose.txt", pose)
        if label is not None:
            Image.fromarray(label.astype(np.uint16)).save(root / f"{n}.label.png")
    return root


# ------------------------------------------------------------------------------ 3. crafted checkpoints


class _Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """``(checkpoint, marker)``: a Lightning-looking checkpoint whose pickle creates ``marker``, with
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` set (which turns torch's default back to full unpickling)."""
    marker = tmp_path / "payload-ran"
    ckpt = tmp_path / "crafted.ckpt"
    torch.save(
        {
            "state_dict": {"student.w": torch.zeros(1)},
            "hyper_parameters": {"config": {}, "in_channels": 3},
            "pytorch-lightning_version": L.__version__,
            "payload": _Payload(marker),
        },
        ckpt,
    )
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    return ckpt, marker


@pytest.mark.parametrize("task", ["segmentation", "retrieval"])
def test_crafted_checkpoint_runs_no_code_in_evaluate(
    crafted: tuple[Path, Path], tmp_path: Path, task: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, marker = crafted
    assert main(["evaluate", "--task", task, "--ckpt", str(ckpt), "--out", str(tmp_path / "e")]) == 2
    assert not marker.exists(), "the checkpoint's pickle ran code"
    err = capsys.readouterr().err
    assert f"ppkt: error: {ckpt}: not a readable PyTorch checkpoint" in err, err


LOADERS: dict[str, Callable[[Path], object]] = {
    "read_checkpoint": read_checkpoint,
    "load_run_checkpoint": lambda p: load_run_checkpoint(PPKTPretrainModule, p, "pretrain"),
    "load_pretrained_student (--init)": load_pretrained_student,
    "teacher weights": lambda p: load_weights(torch.nn.Linear(1, 1), p),
    "resnet weights": read_resnet_state_dict,
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_crafted_checkpoint_runs_no_code_in_any_loader(crafted: tuple[Path, Path], loader: str) -> None:
    ckpt, marker = crafted
    with pytest.raises(WeightsError, match=re.escape(str(ckpt))):
        LOADERS[loader](ckpt)
    assert not marker.exists(), "the checkpoint's pickle ran code"


def _save_checkpoint(module: L.LightningModule, path: Path) -> None:
    """``module`` saved as a Lightning checkpoint holds it (state dict, hyper-parameters, version)."""
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
            "epoch": 0,
            "global_step": 3,
        },
        path,
    )


def test_own_checkpoint_loads_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ppkt's own checkpoints hold tensors and plain data only: they load with ``weights_only=True`` (no
    allow-list), into the module their hyper-parameters describe."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    saved = SegmentationModule(to_dict(FinetuneConfig()), 3, 4, ["a", "b", "c", "d"])
    _save_checkpoint(saved, tmp_path / "seg.ckpt")
    loaded = load_run_checkpoint(SegmentationModule, tmp_path / "seg.ckpt", "finetune")
    assert loaded.num_classes == 4 and loaded.class_names == ["a", "b", "c", "d"]
    for k, v in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with pytest.raises(WeightsError, match="not a ppkt pretrain checkpoint"):
        load_run_checkpoint(PPKTPretrainModule, tmp_path / "seg.ckpt", "pretrain")


def _pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return dict(tomllib.loads((REPO / "pyproject.toml").read_text()))


def _requirement_floor(name: str) -> tuple[int, ...]:
    deps = _pyproject()["project"]["dependencies"]
    spec = next(d for d in deps if re.match(rf"{name}\s*>=", d))
    return tuple(int(x) for x in spec.split(">=")[1].split("."))


def test_torch_floor_has_a_safe_weights_only_loader() -> None:
    """torch < 2.6 runs code from a crafted pickle even with ``weights_only=True`` (CVE-2025-32434), and
    torch < 2.10 lets one corrupt memory (CVE-2026-24747); Lightning < 2.6 cannot pass ``weights_only`` to
    ``Trainer.fit`` (resume)."""
    assert _requirement_floor("torch") >= (2, 10)
    assert _requirement_floor("lightning") >= (2, 6)


# ------------------------------------------------------------------ 4. trainer keys, when the config loads


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.strategy=foo", "'trainer.strategy': 'foo' is not one of \\['auto', 'ddp'"),
        ("trainer.devices=abc", "'trainer.devices': must be a count >= 1, -1 \\(all\\).* got 'abc'"),
        ("trainer.devices=[]", "'trainer.devices': must be a count >= 1"),
        ("trainer.devices=[0, -1]", "'trainer.devices': must be a count >= 1"),
        ("trainer.devices=[0, 0]", "'trainer.devices': must be a count >= 1"),
        ("trainer.devices=1,x", "'trainer.devices'"),
    ],
)
def test_trainer_keys_are_checked_when_the_config_loads(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, overrides=[override])
    if "strategy" not in override:  # fine-tuning has no strategy key
        with pytest.raises(ConfigError, match=message):
            load_config(FinetuneConfig, overrides=[override])
        with pytest.raises(ConfigError, match=message.replace("'trainer.", "'finetune.trainer.")):
            load_config(DemoConfig, overrides=[f"finetune.{override}"])
    with pytest.raises(ConfigError, match=message.replace("'trainer.", "'pretrain.trainer.")):
        load_config(DemoConfig, overrides=[f"pretrain.{override}"])


def test_valid_trainer_keys_still_load() -> None:
    for overrides in (
        ["trainer.strategy=ddp_find_unused_parameters_true"],
        ["trainer.devices=auto"],
        ["trainer.devices=2"],
        ["trainer.devices='2'"],
        ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"],
    ):
        load_config(PretrainConfig, overrides=overrides)
    # GPU indices are a valid config (a checkpoint's stored config rebuilds anywhere); running them needs GPUs
    assert from_dict(PretrainConfig, {"trainer": {"devices": [0, 1]}}).trainer.devices == [0, 1]


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.accelerator=gpu"], "'trainer.accelerator': 'gpu' needs a GPU, but torch sees none"),
        (["trainer.accelerator=cuda"], "'trainer.accelerator': 'cuda' needs a GPU, but torch sees none"),
        (["trainer.accelerator=mps"], "'trainer.accelerator': 'mps' needs"),
        (["trainer.devices=-1"], "'trainer.devices': on the CPU it must be a process count >= 1"),
        (["trainer.devices=[0, 1]"], "'trainer.devices': on the CPU it must be a process count >= 1"),
        (["trainer.devices=0,1"], "'trainer.devices': on the CPU it must be a process count >= 1"),
    ],
)
def test_trainer_keys_this_machine_cannot_run(no_gpu: None, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, overrides=overrides)
    with pytest.raises(ConfigError, match=message):
        load_config(FinetuneConfig, overrides=overrides)
    with pytest.raises(ConfigError, match=message.replace("'trainer.", "'finetune.trainer.")):
        load_config(DemoConfig, overrides=[f"finetune.{o}" for o in overrides])


def test_strategy_this_machine_cannot_run(no_gpu: None) -> None:
    with pytest.raises(ConfigError, match=r"'trainer\.strategy': 'fsdp' needs a CUDA GPU$"):
        load_config(PretrainConfig, overrides=["trainer.strategy=fsdp"])


def test_a_gpu_checkpoint_still_evaluates_on_the_cpu(no_gpu: None) -> None:
    """The machine checks belong to loading a config to run, not to rebuilding a module from the config
    stored in a checkpoint (``evaluate`` of a GPU run on a CPU machine)."""
    config = to_dict(load_config(FinetuneConfig))
    config["trainer"]["accelerator"] = "gpu"
    config["trainer"]["devices"] = [0, 1]
    assert SegmentationModule(config, 3, 4, ["a", "b", "c", "d"]).cfg.trainer.accelerator == "gpu"


@pytest.mark.parametrize("override", ["trainer.strategy=foo", "trainer.devices=abc"])
def test_cli_rejects_trainer_keys_before_any_work(
    tmp_path: Path, override: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ppkt.pipelines.pretrain as pretrain

    def no_work(*_: object, **__: object) -> None:
        raise AssertionError("data was split before the config was checked")

    monkeypatch.setattr(pretrain, "frame_splits", no_work)
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "data.root=/nonexistent", override]) == 2
    assert f"ppkt: error: config key '{override.split('=')[0]}'" in capsys.readouterr().err
    assert not out.exists()


def test_split_error_names_the_config_keys() -> None:
    with pytest.raises(ConfigError, match=r"^data\.test=0\.8, data\.val=0\.5: would leave no training item"):
        split_by_order(list(range(4)), 0.8, 0.5)
    with pytest.raises(ConfigError) as info:
        split_by_order(list(range(4)), 0.8, 0.5)
    assert "cfg." not in str(info.value)


# ---------------------------------------------------------------- 5. bad input that passed or crashed late


@pytest.mark.parametrize(
    ("K", "problem"),
    [
        ("0.914 0 0.5\n0 1.218 0.5\n0 0 1\n", "look normalised"),  # fx, cx in image widths
        ("0.914 0 16\n0 1.218 12\n0 0 1\n", "field of view"),  # focal lengths alone normalised
    ],
)
def test_intrinsics_that_cannot_belong_to_the_image(tmp_path: Path, K: str, problem: str) -> None:
    scene = _scene(tmp_path / "s", K=K)
    with pytest.raises(DataError) as info:
        RGBDFolder(scene).read(0)
    message = str(info.value)
    assert message.startswith(f"{scene / 'intrinsics.txt'}: "), message
    assert problem in message and "multiply" in message and f"{W}x{H}" in message, message


def test_pixel_intrinsics_of_a_small_image_are_fine(tmp_path: Path) -> None:
    RGBDFolder(_scene(tmp_path / "s", K="8 0 4\n0 8 3\n0 0 1\n")).read(0)  # wide but plausible (127°)


def test_frame_without_depth_is_an_error_naming_it(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s")
    (scene / "1.depth.png").unlink()
    folder = RGBDFolder(scene)
    assert folder.frames == ["0", "1", "2"]  # listed by any of its files, not silently dropped
    with pytest.raises(DataError, match=re.escape(f"{scene / '1.depth.png'}: missing depth image")):
        folder.read(1)


def test_depth_symlink_loop_is_an_error_naming_it(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s")
    (scene / "1.depth.png").unlink()
    (scene / "1.depth.png").symlink_to(scene / "1.depth.png")
    folder = RGBDFolder(scene)
    assert folder.frames == ["0", "1", "2"]
    with pytest.raises(DataError, match=re.escape(f"{scene / '1.depth.png'}: ") + ".*symbolic link"):
        folder.read(1)


def test_frame_without_depth_is_skipped_with_a_warning_under_skip_bad(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s")
    (scene / "2.depth.png").unlink()
    folder = RGBDFolder(scene)
    ds = FrameDataset([FrameRef(folder, i) for i in range(len(folder))], lambda s: s, skip_bad=True)
    with pytest.warns(UserWarning, match=re.escape(str(scene / "2.depth.png"))):
        items = [ds[i] for i in range(len(ds))]
    assert [x is None for x in items] == [False, False, True]


def test_scannet_frame_without_depth_is_an_error_naming_it(tmp_path: Path) -> None:
    from ppkt.data.readers.scannet import ScanNetScene

    scene = tmp_path / "scene0000_00"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene / sub).mkdir(parents=True)
    K4 = np.eye(4)
    K4[:3, :3] = np.loadtxt(K_PIXELS.splitlines())
    for name in ("intrinsic_depth.txt", "intrinsic_color.txt"):
        np.savetxt(scene / "intrinsic" / name, K4)
    for i in range(3):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(scene / "color" / f"{i}.jpg")
        Image.fromarray(np.full((H, W), 1500, np.uint16)).save(scene / "depth" / f"{i}.png")
        np.savetxt(scene / "pose" / f"{i}.txt", np.eye(4))
    (scene / "depth" / "1.png").unlink()
    reader = ScanNetScene(scene)
    assert reader.frames == ["0", "1", "2"]
    with pytest.raises(DataError, match=re.escape(f"{scene / 'depth' / '1.png'}: missing depth image")):
        reader.read(1)


def test_missing_colour_names_the_scenes_extension(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s", color_ext="jpg")
    (scene / "1.color.jpg").unlink()
    with pytest.raises(DataError, match=re.escape(f"{scene / '1.color.jpg'}: missing color image")):
        RGBDFolder(scene).read(1)
    png = _scene(tmp_path / "p")
    (png / "1.color.png").unlink()
    with pytest.raises(DataError, match=re.escape(f"{png / '1.color.png'}: missing color image")):
        RGBDFolder(png).read(1)


@pytest.mark.parametrize("big", [255, 300, 60000])
def test_label_id_beyond_the_bound_without_dataset_json(tmp_path: Path, big: int) -> None:
    assert big > getattr(fusion, "MAX_UNNAMED_LABEL_ID", 254)
    label = np.ones((H, W), np.int64)
    label[3, 4] = big
    scene = _scene(tmp_path / "s", label=label)
    with pytest.raises(DataError) as info:
        fuse_scene(RGBDFolder(scene), voxel_size=0.05)
    message = str(info.value)
    assert message.startswith(f"{scene / '0.label.png'}: label id {big} ")
    assert "dataset.json" in message, message


def test_label_ids_within_the_bound_or_named_by_dataset_json(tmp_path: Path) -> None:
    label = np.ones((H, W), np.int64)
    label[3, 4] = 7
    fused = fuse_scene(RGBDFolder(_scene(tmp_path / "a", label=label)), voxel_size=0.05)
    assert fused.num_classes == 8
    # a dataset.json naming its classes bounds the ids by its list instead
    root = tmp_path / "named"
    scene = _scene(root / "s", label=label)
    info = {"format": "ppkt-rgbd-folder", "recipe": {}, "classes": ["none", "a", "b"]}
    (root / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=re.escape(f"{scene / '0.label.png'}: label id 7 ") + ".*3 classes"):
        fuse_scene(RGBDFolder(scene), voxel_size=0.05)


def test_retrieval_reports_the_frames_it_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ppkt.pipelines.retrieval as retrieval
    from ppkt.training.retrieval import RetrievalResult

    def frames_seen(module: object, loader: Any, num_points: int, seed: int = 0) -> RetrievalResult:
        return RetrievalResult(0.5, 1 / num_points, len(loader.dataset), 0)  # the scores are not the point

    monkeypatch.setattr(retrieval, "retrieval_top1", frames_seen)
    data = tmp_path / "data"
    _scene(data / "s", names=tuple(str(i) for i in range(6)))
    cfg = load_config(
        PretrainConfig,
        overrides=[
            f"data.image_size=[{H}, {W}]",
            "data.voxel_size=0.1",
            "data.num_workers=0",
            "teacher.cache=false",
            "trainer.batch_size=2",
        ],
    )
    L.seed_everything(0, verbose=False)
    module = PPKTPretrainModule.from_config(cfg, 3)
    ckpt = tmp_path / "pre.ckpt"
    _save_checkpoint(module, ckpt)
    m = retrieval.run_retrieval_eval(ckpt, str(data), tmp_path / "e", num_points=8, num_frames=4)
    assert m["frames_used"] == "4 of 6 frames (evenly spaced)" and m["retrieval_frames"] == 4
    m = retrieval.run_retrieval_eval(ckpt, str(data), tmp_path / "e", num_points=8, num_frames=10)
    assert m["frames_used"] == "all 6 frames"


# ------------------------------------------------------------------------------------------ 8. packaging


def test_license_is_an_spdx_string() -> None:
    meta = _pyproject()
    assert meta["project"]["license"] == "MIT"
    floor = next(r for r in meta["build-system"]["requires"] if r.startswith("setuptools"))
    assert tuple(int(x) for x in floor.split(">=")[1].split(".")) >= (77, 0, 3)  # PEP 639 support
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert not [w for w in caught if "license" in str(w.message)], [str(w.message) for w in caught]
    assert dist.metadata.license_expression == "MIT"
