"""Fine-tuning and evaluation on LiDAR layouts: one labelled scan = one segmentation sample, split by
sequence, limited labels per scan, the layouts' classes, the SLidR 1 % recipes' splits, and ``ppkt
finetune`` / ``ppkt evaluate`` end to end on synthetic rig data and the real SemanticKITTI scan."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.cli.main import main
from ppkt.config import FinetuneConfig, load_config
from ppkt.config.finetune import SegDataConfig
from ppkt.data.protocols import nuscenes, semantickitti
from ppkt.data.readers import open_scans
from ppkt.data.segmentation import SceneSegmentationDataset
from ppkt.data.synth import CLASS_NAMES
from ppkt.data.synth.lidar import LidarModel
from ppkt.data.synth.lidar_writer import synthesize_lidar
from ppkt.errors import ConfigError
from ppkt.training.seg_data import eval_loader, load_scene_splits, seg_transform, train_loader

from .lidar_fixtures import write_kitti_sequence, write_nuscenes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 synthetic rooms × 2 sweeps (8 beams × 128 firings, 2 cameras of 24×32) in the rig layout."""
    return synthesize_lidar(
        tmp_path_factory.mktemp("lidar") / "data",
        3,
        2,
        seed=3,
        image_size=(24, 32),
        lidar=LidarModel(beams=8, azimuths=128),
        cameras=2,
    )


def _rig_cfg(root: Path, **kw: object) -> SegDataConfig:
    cfg = SegDataConfig(
        root=str(root),
        layout="rig",
        voxel="cylindrical",
        voxel_size=0.1,
        features=["intensity", "elevation"],
        test=0.3,
        val=0.0,
    )
    cfg.augment.crop = None
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_one_labelled_scan_is_one_sample_split_by_sequence(rig: Path) -> None:
    splits = load_scene_splits(_rig_cfg(rig), verbose=False)
    # 3 rooms, test = ceil(0.3 · 3) = 1 room: whole sequences go to one split
    assert [s.name for s in splits.train] == [f"scene_000{i}/00000{j}" for i in (0, 1) for j in (0, 1)]
    assert [s.name for s in splits.test] == ["scene_0002/000000", "scene_0002/000001"]
    assert splits.num_classes == len(CLASS_NAMES) - 1 and splits.class_names == list(CLASS_NAMES[1:])
    ds = SceneSegmentationDataset(splits.test)
    scan = open_scans(rig, "rig")[2].read(1)
    s = ds.sample(1)
    assert s.intensity is not None and s.labels is not None
    np.testing.assert_array_equal(s.points.numpy(), scan.points)  # the LiDAR frame, every point
    np.testing.assert_array_equal(s.intensity.numpy(), scan.intensity)
    assert scan.label is not None
    np.testing.assert_array_equal(s.labels.numpy(), np.where(scan.label > 0, scan.label - 1, -1))
    assert float(s.colors.abs().sum()) == 0.0
    v = seg_transform(_rig_cfg(rig), train=False)(s)
    assert v.feats is not None and v.feats.shape[1] == 2 and v.inverse is not None
    assert v.inverse.shape == (len(scan),)


def test_limited_labels_pick_scans_or_points_per_scan(rig: Path) -> None:
    cfg = _rig_cfg(rig)
    train = load_scene_splits(cfg, verbose=False).train
    half = SceneSegmentationDataset(train, label_mode="scenes", label_fraction=0.5, seed=1)
    assert len(half) == 2 and {s.name for s in half.scenes} < {s.name for s in train}
    again = SceneSegmentationDataset(list(reversed(train)), label_mode="scenes", label_fraction=0.5, seed=1)
    assert {s.name for s in again.scenes} == {s.name for s in half.scenes}  # by name, not order
    few = SceneSegmentationDataset(train, label_mode="points_per_scene", label_fraction=7, seed=0)
    assert [int((lab >= 0).sum()) for lab in few.labels] == [7, 7, 7, 7]
    assert few.num_labelled_points() == 28 and int(few.class_counts().sum()) == 28
    loader = train_loader(
        cfg, train, steps=3, batch_size=2, label_mode="points_per_scene", label_fraction=7, seed=0
    )
    batches = list(loader)
    assert len(batches) == 3 and all(int((b.labels >= 0).sum()) == 14 for b in batches)
    assert all(b.feats.shape[1] == 2 for b in batches)


def test_max_range_and_max_points_bound_training_scans_only(rig: Path) -> None:
    cfg = _rig_cfg(rig, max_points=300, max_range=3.0)
    cfg.augment.scale = (1.0, 1.0)  # the crop is in sensor metres; a random scaling after it may exceed them
    splits = load_scene_splits(cfg, verbose=False)
    loader = train_loader(
        cfg, splits.train, steps=1, batch_size=1, label_mode="scenes", label_fraction=1.0, seed=0
    )
    (b,) = list(loader)
    assert b.points.shape[0] <= 300 and float(b.points[:, :2].norm(dim=1).max()) <= 3.0 + 1e-5
    full = next(iter(eval_loader(cfg, splits.test)))
    assert full.points.shape[0] == len(open_scans(rig, "rig")[2].read(0))  # evaluation: every point


def test_ppkt_finetune_and_evaluate_on_lidar_scans(rig: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    args = ["finetune", "--out", str(out), f"data.root={rig}", "data.layout=rig", "data.voxel=cylindrical"]
    args += ["data.voxel_size=0.1", "data.features=[intensity,elevation]", "data.test=0.3", "data.val=0"]
    args += ["data.augment.crop=null", "data.max_points=2000", "loss=ce+lovasz", "--labels-mode"]
    args += ["points_per_scene", "--labels", "50", "trainer.max_steps=2", "trainer.batch_size=2"]
    args += ["trainer.progress_bar=false", "trainer.threads=1"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 2 and m["train_scenes_labelled"] == 4 and m["train_points_labelled"] == 200
    assert m["test"]["scenes"] == 2 and math.isfinite(m["test"]["miou"])
    assert set(m["test"]["per_class_iou"]) == set(CLASS_NAMES[1:])
    ev = tmp_path / "ev"
    assert main(["evaluate", "--ckpt", str(out / "checkpoints" / "last.ckpt"), "--out", str(ev)]) == 0
    e = json.loads((ev / "metrics.json").read_text())
    assert e["scenes"] == 2 and e["miou"] == pytest.approx(m["test"]["miou"])


def test_rgbd_only_keys_and_unsupported_layouts_are_config_errors(rig: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.split"):
        load_scene_splits(_rig_cfg(rig, split="official"), verbose=False)
    with pytest.raises(ConfigError, match=r"data\.train_subset"):
        load_scene_splits(_rig_cfg(rig, train_subset="one_percent"), verbose=False)


def test_semantickitti_1pct_config_picks_every_100th_training_scan(tmp_path: Path) -> None:
    root = tmp_path / "skitti"
    write_kitti_sequence(root, "00", n=150, images=False, poses=False)
    write_kitti_sequence(root, "01", n=60, images=False, poses=False)
    write_kitti_sequence(root, "08", n=3, images=False, poses=False)
    cfg = load_config(FinetuneConfig, CONFIGS / "semantickitti_1pct_finetune.yaml", [f"data.root={root}"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.head_lr, cfg.loss) == ("sgd", 0.02, 2.0, "ce+lovasz")
    assert (cfg.optim.schedule, cfg.data.voxel, cfg.data.voxel_size) == ("cosine", "cylindrical", 0.1)
    splits = load_scene_splits(cfg.data, verbose=False)
    # sorted training list: 00/000000 … 00/000149, 01/000000 … → every 100th from the first
    assert [s.name for s in splits.train] == ["00/000000", "00/000100", "01/000050"]
    expected = semantickitti.one_percent(
        [("00", f"{i:06d}") for i in range(150)] + [("01", f"{i:06d}") for i in range(60)]
    )
    assert [s.name for s in splits.train] == [f"{a}/{b}" for a, b in expected]
    assert [s.name for s in splits.test] == ["08/000000", "08/000001", "08/000002"]
    assert splits.num_classes == 19 and splits.class_names[0] == "car"


def test_nuscenes_1pct_config_picks_every_100th_training_scene(tmp_path: Path) -> None:
    train = sorted(nuscenes.TRAIN_SCENES)[:200]
    scenes = {name: 1 for name in train[:2]} | {"scene-0003": 2} | {name: 1 for name in train[2:]}
    write_nuscenes(tmp_path / "nus", scenes, version="v1.0-trainval")
    cfg = load_config(
        FinetuneConfig, CONFIGS / "nuscenes_1pct_finetune.yaml", [f"data.root={tmp_path / 'nus'}"]
    )
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.head_lr, cfg.loss) == ("sgd", 0.02, 2.0, "ce+lovasz")
    splits = load_scene_splits(cfg.data, verbose=False)
    assert [s.sequence for s in splits.train] == [train[99], train[199]]  # the 100th and 200th
    assert [s.sequence for s in splits.test] == ["scene-0003", "scene-0003"]  # a validation scene
    assert splits.num_classes == 16
    probe = load_config(
        FinetuneConfig, CONFIGS / "nuscenes_linear_probe.yaml", [f"data.root={tmp_path / 'nus'}"]
    )
    assert probe.probe and probe.data.train_subset == "all" and probe.optim.head_lr == 0.05
    assert len(load_scene_splits(probe.data, verbose=False).train) == 200


@pytest.mark.real_data
def test_the_real_semantickitti_scan_is_a_segmentation_sample(shared_data: Path) -> None:
    root = shared_data / "semantickitti"
    cfg = SegDataConfig(
        root=str(root), layout="semantickitti", split="all", voxel="cylindrical", voxel_size=0.1
    )
    cfg.features = ["intensity"]
    splits = load_scene_splits(cfg, verbose=False)
    assert [s.name for s in splits.test] == ["00/000000"] and splits.num_classes == 19
    s = SceneSegmentationDataset(splits.test).sample(0)
    assert s.points.shape == (124_668, 3) and s.labels is not None and s.intensity is not None
    counts = torch.bincount(s.labels[s.labels >= 0], minlength=19)
    assert int((s.labels < 0).sum()) == 4886 and counts[0] == 4234 and counts[8] == 35281  # car, road
    v = seg_transform(cfg, train=False)(s)
    assert v.coords is not None and 0 < v.coords.shape[0] < 124_668


def test_occlusion_keys_reach_the_lidar_pairing(rig: Path) -> None:
    from ppkt.config import PretrainConfig
    from ppkt.data.frame_dataset import FrameDataset
    from ppkt.data.pairing import scan_to_sample
    from ppkt.data.types import FrameRef
    from ppkt.training.data import occlusion_args

    source = open_scans(rig, "rig")[0]
    scan = source.read(0)
    loose = load_config(PretrainConfig, None, ["data.occlusion_tolerance=1000", "data.occlusion_window=1"])
    pairs = {}
    for name, cfg in (("default", PretrainConfig()), ("loose", loose)):
        ds = FrameDataset(
            [FrameRef(source, 0)], lambda s: s, min_depth=0.3, occlusion=occlusion_args(cfg.data)
        )
        sample = ds[0]
        assert sample is not None
        pairs[name] = int(sample.pair_point.numel())
    expected = scan_to_sample(
        scan, min_depth=0.3, multi_camera="all", occlusion_tolerance=1000, occlusion_window=1
    )
    assert pairs["loose"] == int(expected.pair_point.numel()) >= pairs["default"] > 0
    with pytest.raises(ConfigError, match=r"data\.occlusion_window"):
        load_config(PretrainConfig, None, ["data.occlusion_window=2"])


def test_the_lidar_demo_config_runs_one_percent_and_the_probe_on_the_pretraining_sweeps() -> None:
    from ppkt.config.demo import DemoConfig
    from ppkt.pipelines.demo import align_finetune_data, demo_jobs

    cfg = load_config(DemoConfig, CONFIGS / "lidar_demo.yaml")
    align_finetune_data(cfg)
    f = cfg.finetune.data
    assert (f.layout, f.voxel, f.features, f.test) == ("rig", "cylindrical", ["intensity", "elevation"], 0.25)
    jobs = {name: fc for name, fc, _ in demo_jobs(cfg, Path("pre.ckpt"))}
    assert len(jobs) == 3 * 2 * 2  # (1 %, probe) × 2 inits × 3 seeds
    one = jobs["finetune-pretrained-labels0.01-seed2"]
    assert (one.labels_mode, one.labels, one.probe, one.init) == ("scenes", 0.01, False, "pre.ckpt")
    probe = jobs["probe-scratch-labels1-seed0"]
    assert probe.probe and probe.labels == 1.0 and probe.init == "scratch"
    assert probe.trainer.max_steps == one.trainer.max_steps == 60


@pytest.mark.real_data
def test_the_kitti_object_config_holds_out_the_last_frames_of_each_split(shared_data: Path) -> None:
    from ppkt.config import PretrainConfig
    from ppkt.training.data import frame_splits

    root = shared_data / "kitti-object"
    cfg = load_config(PretrainConfig, CONFIGS / "kitti_object.yaml", [f"data.root={root}"])
    splits = frame_splits(cfg.data, verbose=False)
    held = [r.name for r in splits.heldout]
    assert [r.name for r in splits.train] == [
        f"{s}/00000{i}" for s in ("testing", "training") for i in (0, 1, 2)
    ]
    assert held == [f"{s}/00000{i}" for s in ("testing", "training") for i in (3, 4, 5)]
