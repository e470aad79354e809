"""What the teacher sees of an RGB-D frame (``data.teacher_input``): RGB, the depth as HHA, or both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.cli.main import main
from ppkt.config import PretrainConfig, load_config
from ppkt.data.pairing import frame_to_sample, frames_to_sample
from ppkt.data.teacher_cache import FeatureCache
from ppkt.data.teacher_input import hha_image, input_parts, teacher_image
from ppkt.data.types import Frame
from ppkt.errors import ConfigError
from ppkt.models.teachers import StackedTeacher, build_teacher
from ppkt.training.data import build_transform

from .conftest import TINY_PRETRAIN, assert_mentions

H, W, F = 60, 80, 40.0
K = np.array([[F, 0.0, W / 2 - 0.5], [0.0, F, H / 2 - 0.5], [0.0, 0.0, 1.0]])
CAMERA_HEIGHT = 1.5


def room_frame() -> Frame:
    """A camera 1.5 m above a floor (z = 0), looking level along world +y at a wall 3 m away: camera x = world
    x, camera y (down) = world −z, camera z = world y. Depth is ray-traced; the colour encodes the pixel."""
    pose = np.eye(4)
    pose[:3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    pose[:3, 3] = [0.0, 0.0, CAMERA_HEIGHT]
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    down = (v - K[1, 2]) / K[1, 1]  # camera y of the ray at camera depth 1
    floor = np.where(down > 0, CAMERA_HEIGHT / np.maximum(down, 1e-9), np.inf)
    depth = np.minimum(floor, 3.0).astype(np.float32)  # camera depth = distance along world y to the wall
    depth[0, 0] = 0.0  # one invalid pixel
    color = np.stack([u * 3, v * 4, np.full_like(u, 200)], axis=2).astype(np.uint8)
    return Frame("room", "f0", color, depth, K.copy(), pose)


def test_hha_of_a_floor_and_a_wall() -> None:
    f = room_frame()
    hha = hha_image(f.depth, f.K, f.pose, up_axis=2)
    assert hha.shape == (3, H, W) and hha.dtype == torch.float32
    assert float(hha.min()) >= 0.0 and float(hha.max()) <= 1.0
    wall = (slice(2, 20), slice(2, W - 2))  # rows above the horizon: the wall
    floor = (slice(52, H - 1), slice(2, W - 2))  # rows whose ray meets the floor within 3 m
    disparity, height, angle = hha
    torch.testing.assert_close(disparity[wall], torch.full_like(disparity[wall], 0.5 / 3.0))
    torch.testing.assert_close(angle[wall], torch.full_like(angle[wall], 0.5), atol=1e-4, rtol=0)  # 90°
    torch.testing.assert_close(angle[floor], torch.zeros_like(angle[floor]), atol=1e-4, rtol=0)  # 0°: up
    # height above the frame's lowest surface (the floor): 0 on the floor; on the wall the world z
    assert float(height[floor].abs().max()) < 0.02
    v = 10
    z = CAMERA_HEIGHT - 3.0 * (v - K[1, 2]) / K[1, 1]
    assert float(height[v, W // 2]) == pytest.approx(z / 3.0, abs=0.02)
    # a pixel without depth is 0 in every channel; a near one saturates the disparity
    assert torch.equal(hha[:, 0, 0], torch.zeros(3))
    near = f.depth.copy()
    near[30:33, 30:33] = 0.2
    assert float(hha_image(near, f.K, f.pose)[0, 31, 31]) == 1.0


def test_gravity_puts_a_finer_height_where_hha_has_the_disparity() -> None:
    """``gravity``: channel 0 is the height ÷ 1 m (no disparity: nothing in it depends on the camera's
    distance); channels 1–2 are HHA's height and angle."""
    f = room_frame()
    hha = hha_image(f.depth, f.K, f.pose)
    gravity = teacher_image(f, "gravity")
    assert gravity.shape == (3, H, W)
    torch.testing.assert_close(gravity[1:], hha[1:])
    torch.testing.assert_close(gravity[0], (hha[1] * 3.0).clamp(max=1.0), atol=1e-5, rtol=0)
    # the floor: HHA's disparity changes with the distance from the camera, gravity's channel 0 does not
    floor = (slice(52, H - 1), slice(2, W - 2))
    assert float(hha[0][floor].max() - hha[0][floor].min()) > 0.04
    assert float(gravity[0][floor].abs().max()) < 0.02
    # the wall: its height (1 m and above saturate)
    for v in (10, 25):
        z = CAMERA_HEIGHT - 3.0 * (v - K[1, 2]) / K[1, 1]
        assert float(gravity[0, v, W // 2]) == pytest.approx(min(z, 1.0), abs=0.02)
    assert torch.equal(gravity[:, 0, 0], torch.zeros(3))


def test_hha_is_the_same_for_a_flipped_view() -> None:
    """Each HHA channel is a scalar of the surface, so a mirrored frame's HHA is the mirrored HHA (the
    pretraining's horizontal flip stays exact)."""
    f = room_frame()
    mirrored_pose = f.pose.copy()
    mirrored_pose[:3, 0] *= -1  # camera x flipped
    K2 = f.K.copy()
    K2[0, 2] = W - 1 - f.K[0, 2]
    a = hha_image(f.depth, f.K, f.pose)
    b = hha_image(np.ascontiguousarray(f.depth[:, ::-1]), K2, mirrored_pose)
    torch.testing.assert_close(b, a.flip(-1), atol=1e-5, rtol=0)


def test_teacher_image_stacks_the_parts() -> None:
    f = room_frame()
    assert input_parts("rgb+hha") == ["rgb", "hha"]
    with pytest.raises(ValueError, match="rgb\\+hha"):
        input_parts("depth")
    rgb, both = teacher_image(f, "rgb"), teacher_image(f, "rgb+hha")
    assert rgb.shape == (3, H, W) and both.shape == (6, H, W)
    torch.testing.assert_close(rgb, torch.from_numpy(f.color).permute(2, 0, 1).float() / 255)
    assert torch.equal(both[:3], rgb) and torch.equal(both[3:], teacher_image(f, "hha"))


def test_samples_carry_the_teacher_image_and_the_transforms_keep_pairing_exact() -> None:
    f = room_frame()
    s = frame_to_sample(f, teacher_input="rgb+hha")
    assert s.images.shape == (1, 6, H, W)
    torch.testing.assert_close(s.colors, frame_to_sample(f).colors)  # the student still sees RGB
    cfg = load_config(PretrainConfig, overrides=["data.image_size=[30,40]", "data.augment.flip=1.0"])
    torch.manual_seed(0)
    t = build_transform(cfg.data, train=True)(s)
    assert t.images.shape == (1, 6, 30, 40)
    # the RGB part still encodes each pair's pixel (R = 3u): the crop, resize and flip moved both parts alike
    u = t.pair_uv[:, 0].round().long()
    v = t.pair_uv[:, 1].round().long()
    rgb_at_pair = t.images[0, :3, v, u].T
    hha_at_pair = t.images[0, 3:, v, u].T
    assert torch.corrcoef(torch.stack([rgb_at_pair[:, 0], t.colors[t.pair_point][:, 0]]))[0, 1] > 0.95
    assert float(hha_at_pair.abs().sum()) > 0
    fused = frames_to_sample([f, f], fuse_voxel_size=0.05, teacher_input="hha")
    assert fused.images.shape == (2, 3, H, W)


def test_stacked_teacher_runs_the_teacher_on_each_part() -> None:
    base = build_teacher("efficientnet_lite0", layers=["stage3", "stage5"])
    stacked = build_teacher("efficientnet_lite0", layers=["stage3", "stage5"], inputs=2)
    assert isinstance(stacked, StackedTeacher)
    assert stacked.out_channels == [80, 224] and stacked.strides == base.strides
    torch.manual_seed(0)
    a, b = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48)
    out = stacked(torch.cat([a, b], 1))
    for level, pa, pb in zip(out, base(a), base(b), strict=True):
        torch.testing.assert_close(level, torch.cat([pa, pb], 1))
    with pytest.raises(ValueError, match="6, H, W"):
        stacked(a)
    assert not any(p.requires_grad for p in stacked.parameters())


def test_teacher_input_config_errors_and_cache_recipe() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, overrides=["data.teacher_input=depth"])
    assert_mentions(e.value, "data.teacher_input", "depth")
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, overrides=["data.layout=rig", "data.teacher_input=hha"])
    assert_mentions(e.value, "data.teacher_input", "LiDAR", "rgb")
    args = ("efficientnet_lite0", None, ["stage5"], [16], [112], [48, 64])
    rgb = FeatureCache.make_recipe(*args)
    assert "input" not in rgb  # caches filled before the key existed stay valid
    assert FeatureCache.make_recipe(*args, "hha")["input"] == "hha"


def test_pretraining_and_the_teacher_probe_with_rgb_and_hha(tiny_synth: Path, tmp_path: Path) -> None:
    common = [f"data.root={tiny_synth}", f"data.cache_dir={tmp_path / 'cache'}", "data.teacher_input=rgb+hha"]
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *common, *TINY_PRETRAIN, "trainer.max_steps=2"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(m["loss_final"])
    (recipe,) = (tmp_path / "cache").glob("teacher-*/recipe.json")
    r = json.loads(recipe.read_text())
    # the cached maps: twice the teacher's channels (16, 24, 40, 112, 320), RGB's then HHA's
    assert r["input"] == "rgb+hha" and r["channels"] == [32, 48, 80, 224, 640]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["hyper_parameters"]["config"]["data"]["teacher_input"] == "rgb+hha"
    probe = ["--out", str(tmp_path / "p"), "--pixels", "100", "--steps", "20", "data.heldout=0.3"]
    assert main(["teacher-probe", *probe, *common, "data.image_size=[48,64]", "teacher.layers=[stage5]"]) == 0
    p = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert p["teacher_input"] == "rgb+hha" and [r["channels"] for r in p["results"]] == [224]
