"""The view-consistency figure of the pretext check: per-voxel features of one scene seen in two frames, and
in a frame vs the fused scene, on a two-frame RGB-D scene written to disk whose colours are constant per
voxel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.cli.main import main
from ppkt.data.readers import open_scenes
from ppkt.data.sample import PointSample
from ppkt.data.transforms import Voxelize
from ppkt.data.types import FrameRef
from ppkt.training.view_consistency import ConsistencyData, consistency_data, view_consistency

#: a fronto-parallel wall 2.1 m in front of two cameras 0.5 m apart; a 24×32 image of focal length 20 puts
#: pixel centres 0.105 m apart on it, every one at least 2.5 mm from a multiple of 0.125 m (no point lies
#: on a voxel boundary, so float rounding cannot move one to another voxel)
H, W, F, DEPTH, SHIFT = 24, 32, 20.0, 2.1, 0.5
VOXEL, FUSE_VOXEL = 0.25, 0.125  # the fused cloud's voxels nest in the network's


def _voxel_color(key: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng([key[0] + 1000, key[1] + 1000])
    return rng.integers(20, 236, size=3, dtype=np.uint8)


@pytest.fixture
def wall_scene(tmp_path: Path) -> Path:
    """One generic-layout scene of two frames; every pixel is coloured by its world voxel (``VOXEL``)."""
    scene = tmp_path / "data" / "scene_000"
    scene.mkdir(parents=True)
    cx, cy = (W - 1) / 2, (H - 1) / 2
    np.savetxt(scene / "intrinsics.txt", np.array([[F, 0, cx], [0, F, cy], [0, 0, 1]]))
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    for i, tx in enumerate((0.0, SHIFT)):
        x, y = (u - cx) * DEPTH / F + tx, (v - cy) * DEPTH / F
        for a in (x, y):  # the geometry keeps every point off the voxel boundaries
            assert np.abs(a / FUSE_VOXEL - np.round(a / FUSE_VOXEL)).min() * FUSE_VOXEL > 2e-3
        kx, ky = np.floor(x / VOXEL).astype(int), np.floor(y / VOXEL).astype(int)
        color = np.stack([_voxel_color((a, b)) for a, b in zip(kx.ravel(), ky.ravel())]).reshape(H, W, 3)
        Image.fromarray(color).save(scene / f"{i:06d}.color.png")
        Image.fromarray(np.full((H, W), round(DEPTH * 1000), dtype=np.uint16)).save(
            scene / f"{i:06d}.depth.png"
        )
        pose = np.eye(4)
        pose[0, 3] = tx
        np.savetxt(scene / f"{i:06d}.pose.txt", pose)
    return tmp_path / "data"


def _data(root: Path, tmp_path: Path) -> ConsistencyData:
    (folder,) = open_scenes(root, "generic")
    refs = [FrameRef(folder, 0), FrameRef(folder, 1)]
    return consistency_data(
        refs,
        min_depth=0.1,
        max_depth=6.0,
        frame_skip=1,
        fuse_voxel_size=FUSE_VOXEL,
        cache_dir=str(tmp_path / "c"),
    )


def _colour_net(feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Depends on nothing but each voxel's own input colour."""
    return torch.cat([feats, feats**2, torch.sin(7 * feats), torch.ones(len(feats), 1)], dim=1)


def test_colour_only_network_is_perfectly_consistent(wall_scene: Path, tmp_path: Path) -> None:
    data = _data(wall_scene, tmp_path)
    voxelize: Voxelize[PointSample] = Voxelize(VOXEL, ["rgb"], 2)
    got = view_consistency(_colour_net, data.frames, data.scenes, voxelize)
    assert got.frame_pairs == 1 and got.frames_scored == 2
    # the two frames share the wall between them: 0.5 m less than one frame's width, at 0.25 m voxels
    assert 60 < got.voxels_frames < 200 and got.voxels_scene > got.voxels_frames
    assert got.frames == pytest.approx(1.0, abs=1e-6) and got.scene == pytest.approx(1.0, abs=1e-6)


def test_a_per_frame_offset_breaks_consistency(wall_scene: Path, tmp_path: Path) -> None:
    data = _data(wall_scene, tmp_path)
    voxelize: Voxelize[PointSample] = Voxelize(VOXEL, ["rgb"], 2)
    g = torch.Generator().manual_seed(0)

    def offset_net(feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """The colour network plus one random vector per call, i.e. per view."""
        out = _colour_net(feats, coords)
        return out + torch.randn(out.shape[1], generator=g)

    got = view_consistency(offset_net, data.frames, data.scenes, voxelize)
    assert -1 <= got.frames < 0.99 and -1 <= got.scene < 0.99
    # and one that reads where the voxel sits in its input (the viewpoint) is not consistent either
    got = view_consistency(
        lambda f, c: torch.cat([f, c[:, 1:].float()], 1), data.frames, data.scenes, voxelize
    )
    assert got.frames == pytest.approx(1.0, abs=1e-6)  # one grid position per scene: coordinates agree ...
    pairs_only = view_consistency(
        lambda f, c: torch.cat([f, (c[:, 1:] - c[:, 1:].min(0).values).float()], 1),
        data.frames,
        data.scenes,
        voxelize,
    )
    assert pairs_only.frames < 0.99  # ... but coordinates relative to each input's own extent do not


def test_nothing_to_compare_gives_nan(wall_scene: Path, tmp_path: Path) -> None:
    data = _data(wall_scene, tmp_path)
    voxelize: Voxelize[PointSample] = Voxelize(VOXEL, ["rgb"], 2)
    got = view_consistency(_colour_net, data.frames[:1], {}, voxelize)
    assert got.frame_pairs == got.frames_scored == 0 and math.isnan(got.frames) and math.isnan(got.scene)


def test_pretext_check_reports_it(pretrain_run: Path, tiny_synth: Path, tmp_path: Path) -> None:
    """``ppkt pretrain`` writes the figures (trained and random-init student) to ``metrics.json``, and so does
    ``ppkt evaluate --task retrieval``."""
    m = json.loads((pretrain_run / "metrics.json").read_text())
    for k in ("view_consistency_frames", "view_consistency_scene"):
        for key in (k, f"{k}_random_init"):
            assert -1 <= m[key] <= 1, key
    assert m["view_consistency_pairs"] >= 1 and m["view_consistency_frames_scored"] >= 1
    out = tmp_path / "eval"
    ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    args = ["evaluate", "--task", "retrieval", "--ckpt", str(ckpt), "--frames", "2", "--points", "16"]
    assert main([*args, "--out", str(out)]) == 0
    e = json.loads((out / "metrics.json").read_text())
    assert -1 <= e["view_consistency_frames"] <= 1 and -1 <= e["view_consistency_scene_random_init"] <= 1
