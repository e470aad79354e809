"""Scene-level, multi-view pairing: several RGB-D frames fused, every point paired with every frame that
sees it (``data.pairing``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.cli.main import main
from ppkt.data.frame_dataset import group_frames
from ppkt.data.pairing import frames_to_sample
from ppkt.data.types import Frame, FrameRef

F, C, S = 40.0, 19.5, 40  # focal length, principal point, image side (pixels)


def wall_frame(name: str, x: float, depth: np.ndarray | None = None) -> Frame:
    """A camera at (x, 0, 0) looking along +z at the wall z = 2 (depth 2 everywhere unless given)."""
    pose = np.eye(4)
    pose[0, 3] = x
    d = np.full((S, S), 2.0, np.float32) if depth is None else depth
    color = np.zeros((S, S, 3), np.uint8)
    color[..., 0] = np.arange(S, dtype=np.uint8)[None, :] * 6  # a horizontal red ramp
    K = np.array([[F, 0, C], [0, F, C], [0, 0, 1]])
    return Frame("wall", name, color, d, K, pose)


def reproject(sample, pairs: torch.Tensor) -> torch.Tensor:
    p = sample.points[sample.pair_point[pairs]].double()
    out = []
    for k, j in enumerate(sample.pair_image[pairs].tolist()):
        cam = torch.linalg.inv(sample.poses[j])
        q = sample.intrinsics[j] @ (cam[:3, :3] @ p[k] + cam[:3, 3])
        out.append(q[:2] / q[2])
    return torch.stack(out)


def test_every_fused_point_is_paired_with_every_frame_that_sees_it() -> None:
    a, b = wall_frame("0", 0.0), wall_frame("1", 0.5)
    s = frames_to_sample([a, b], fuse_voxel_size=0.05, depth_tolerance=0.05)
    assert s.images.shape == (2, 3, S, S) and s.intrinsics.shape == (2, 3, 3) and s.poses.shape == (2, 4, 4)
    # the wall seen by camera 0 spans x in [-1, 1] (at z = 2: 20 px / 40 px·2 m), camera 1 spans [-0.5, 1.5]
    x = s.points[:, 0]
    assert float(x.min()) == pytest.approx(-1.0, abs=0.06) and float(x.max()) == pytest.approx(1.5, abs=0.06)
    seen = torch.zeros(len(s.points), 2, dtype=torch.bool)
    seen[s.pair_point, s.pair_image] = True
    only_a, both, only_b = (x < -0.55), (x > -0.45) & (x < 0.95), (x > 1.05)
    assert seen[only_a, 0].all() and not seen[only_a, 1].any()
    assert seen[both].all()
    assert seen[only_b, 1].all() and not seen[only_b, 0].any()
    # every pair's pixel is where the sample's own K and pose project its point
    idx = torch.arange(0, len(s.pair_point), 7)
    assert torch.allclose(reproject(s, idx), s.pair_uv[idx].double(), atol=1e-3)


def test_points_hidden_behind_a_frame_s_measured_depth_get_no_pixel_there() -> None:
    near = np.full((S, S), 2.0, np.float32)
    near[:, 15:25] = 1.0  # camera 1 measures a nearer surface in its central columns
    a, b = wall_frame("0", 0.0), wall_frame("1", 0.5, near)
    s = frames_to_sample([a, b], fuse_voxel_size=0.05, depth_tolerance=0.05)
    z, x = s.points[:, 2], s.points[:, 0]
    in_b = s.pair_point[s.pair_image == 1]
    wall_behind = (z > 1.9) & (x > 0.5 - 0.2) & (x < 0.5 + 0.2)  # wall points behind the near surface
    assert wall_behind.sum() > 10
    assert not torch.isin(wall_behind.nonzero().squeeze(1), in_b).any()
    # the near surface itself is paired with camera 1, and the wall beside it still is
    assert torch.isin((z < 1.1).nonzero().squeeze(1), in_b).all()
    assert torch.isin(((z > 1.9) & (x > 1.0)).nonzero().squeeze(1), in_b).all()


def test_frames_of_one_sample_must_share_a_size() -> None:
    from ppkt.errors import DataError

    small = wall_frame("1", 0.5)
    small.depth, small.color = small.depth[:20], small.color[:20]
    with pytest.raises(DataError, match=r"wall/1 \(20, 40\)"):
        frames_to_sample([wall_frame("0", 0.0), small], fuse_voxel_size=0.05)


class _Scene:
    def __init__(self, name: str, n: int) -> None:
        self.scene, self.frames = name, [str(i) for i in range(n)]


@pytest.mark.parametrize("mode", ["frame", "window", "scene"])
def test_every_frame_is_in_exactly_one_sample(mode: str) -> None:
    scenes = [_Scene("a", 10), _Scene("b", 3)]
    refs = [FrameRef(s, i) for s in scenes for i in range(len(s.frames))]  # type: ignore[arg-type]
    windows = group_frames(refs, mode, 4)
    flat = [r for w in windows for r in w]
    assert sorted((r.folder.scene, r.index) for r in flat) == sorted((r.folder.scene, r.index) for r in refs)
    assert all(len({r.folder.scene for r in w}) == 1 for w in windows)
    got = [[r.index for r in w] for w in windows]
    expected = {
        "frame": [[i] for i in range(10)] + [[i] for i in range(3)],
        "window": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2]],
        "scene": [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8], [0, 1, 2]],
    }[mode]
    assert got == expected


def test_scene_level_pretraining_runs_end_to_end(tiny_synth: Path, tmp_path: Path) -> None:
    from tests.conftest import TINY_PRETRAIN

    out = tmp_path / "run"
    args = ["pretrain", "--out", str(out), f"data.root={tiny_synth}", f"data.cache_dir={tmp_path / 'cache'}"]
    overrides = [*TINY_PRETRAIN, "trainer.max_epochs=2", "data.pairing.mode=scene", "data.pairing.views=2"]
    assert main([*args, *overrides]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # 8 training frames -> 4 samples of 2 frames -> 2 batches of 2 per epoch
    assert m["steps"] == 4 and np.isfinite(m["loss_final"])
    assert m["retrieval_top1_heldout"] >= 0
    # the same checkpoint scored on single frames (to compare pairings on the same samples)
    ev = tmp_path / "eval"
    ckpt = str(out / "checkpoints/last.ckpt")
    args = ["evaluate", "--task", "retrieval", "--ckpt", ckpt, "--out", str(ev), "--pairing", "frame"]
    assert main(args) == 0
    r = json.loads((ev / "metrics.json").read_text())
    assert r["pairing"] == "frame" and r["retrieval_frames"] == 2  # eval.retrieval_frames=2 single frames


@pytest.mark.parametrize("mode", ["window", "scene"])
def test_fused_pairing_of_lidar_scans_is_a_config_error(mode: str) -> None:
    """LiDAR scans are paired with their own cameras, never fused: the key is named before data is read."""
    from ppkt.config import PretrainConfig, load_config
    from ppkt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.pairing\.mode.*'rig'.*mode=frame"):
        load_config(PretrainConfig, overrides=["data.layout=rig", f"data.pairing.mode={mode}"])


def test_ppkt_pretrain_pairs_per_frame_and_the_demo_pairs_fused_scenes_with_an_hha_teacher() -> None:
    from ppkt.config import PretrainConfig
    from ppkt.config.demo import DemoConfig

    demo, plain = DemoConfig().pretrain, PretrainConfig()
    assert (plain.data.pairing.mode, plain.data.teacher_input) == ("frame", "rgb")
    assert plain.trainer.batch_size == 8
    # the demo differs from ``ppkt pretrain`` in these keys only: 2 fused 4-view samples (8 frames, as
    # the per-frame batch) a step, a teacher that sees the depth as HHA, plane-aware pairs, and 14 epochs
    # instead of 9
    assert (demo.data.pairing.mode, demo.data.pairing.views, demo.trainer.batch_size) == ("scene", 4, 2)
    assert demo.data.teacher_input == "hha"
    assert (demo.trainer.max_epochs, plain.trainer.max_epochs) == (14, 9)
    assert (demo.loss.plane_share, plain.loss.plane_share) == (0.5, None)
    demo.data.teacher_input, demo.data.pairing.mode = plain.data.teacher_input, plain.data.pairing.mode
    demo.trainer.batch_size, demo.trainer.max_epochs = plain.trainer.batch_size, plain.trainer.max_epochs
    demo.loss.plane_share = plain.loss.plane_share
    assert demo == plain


def test_fused_samples_kept_in_memory_are_the_samples_read_again(tiny_synth: Path, tmp_path: Path) -> None:
    """``data.pairing.memory_mb`` keeps each fused window of the first epoch: later epochs' batches are
    bit-identical to those of a loader that reads and fuses again, and need no frame file (deleted here)."""
    import dataclasses
    import shutil

    from ppkt.config import PretrainConfig, load_config
    from ppkt.errors import DataError
    from ppkt.training.data import frame_splits, make_loader
    from ppkt.training.resume import epoch_sampler

    root = tmp_path / "data"
    shutil.copytree(tiny_synth, root)

    def loader(memory_mb: float):  # type: ignore[no-untyped-def]
        overrides = [f"data.root={root}", "data.image_size=[48,64]", "data.voxel_size=0.1"]
        overrides += ["data.pairing.mode=scene", "data.pairing.views=2"]
        overrides += [f"data.pairing.memory_mb={memory_mb}"]
        cfg = load_config(PretrainConfig, overrides=overrides)
        return make_loader(cfg.data, frame_splits(cfg.data, verbose=False).train, 2, True, seed=3)

    def epoch(ld, e: int) -> list[dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
        epoch_sampler(ld).set_epoch(e)  # type: ignore[union-attr]
        return [
            {f.name: v for f in dataclasses.fields(b) if isinstance(v := getattr(b, f.name), torch.Tensor)}
            for b in ld
        ]

    fresh, kept, tight = loader(0), loader(2048), loader(0.001)
    expected = [epoch(fresh, 0), epoch(fresh, 1)]
    assert len(kept.dataset.dataset.kept) == 0  # type: ignore[attr-defined]
    first = epoch(kept, 0)
    assert len(kept.dataset.dataset.kept) == len(kept.dataset)  # type: ignore[attr-defined, arg-type]
    epoch(tight, 0)
    assert len(tight.dataset.dataset.kept) == 0  # type: ignore[attr-defined]  # 1 KiB holds no window
    for frame in (root / "scene_0000").rglob("*.png"):
        frame.unlink()
    second = epoch(kept, 1)
    for got, want in zip([first, second], expected, strict=True):
        assert len(got) == len(want) > 0
        for a, b in zip(got, want, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), k
    with pytest.raises(DataError, match="scene_0000"):
        epoch(fresh, 1)  # without memory the frames are read again
