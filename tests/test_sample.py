"""The paired sample keeps its geometry: after every point and image transform, projecting the points with
the sample's intrinsics and camera poses lands exactly on the pairing's pixels; offset helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppkt.data.pairing import frame_to_sample
from ppkt.data.sample import (
    PairedSample,
    PointSample,
    batch_to_offset,
    collate,
    offset_starts,
    offset_to_batch,
)
from ppkt.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotate,
    RandomScale,
    Voxelize,
)
from ppkt.data.types import Frame

H, W = 24, 32
K = np.array([[20.0, 0.0, 15.5], [0.0, 22.0, 11.5], [0.0, 0.0, 1.0]])


def frame(seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    depth = (1.0 + rng.random((H, W))).astype(np.float32)
    pose = np.eye(4)
    pose[:3, :3] = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # camera looking along world +x
    pose[:3, 3] = [1.0, 2.0, 1.5]
    color = rng.integers(0, 255, (H, W, 3)).astype(np.uint8)
    return Frame("scene", f"f{seed}", color, depth, K.copy(), pose)


def reprojected_uv(s: PairedSample) -> torch.Tensor:
    """Pixel of every pair's point, computed from the sample's own intrinsics and camera poses."""
    p = s.points[s.pair_point].double()
    pose = s.poses[s.pair_image]
    cam = torch.linalg.solve(pose, torch.cat([p, torch.ones(len(p), 1, dtype=p.dtype)], 1).unsqueeze(-1))
    pix = s.intrinsics[s.pair_image] @ cam[:, :3]
    return (pix[:, :2, 0] / pix[:, 2:, 0]).float()


def test_back_projection_carries_the_camera() -> None:
    s = frame_to_sample(frame())
    assert s.intrinsics.shape == (1, 3, 3) and s.poses.shape == (1, 4, 4)
    torch.testing.assert_close(reprojected_uv(s), s.pair_uv, atol=1e-3, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_the_geometry_follows_every_transform(seed: int) -> None:
    torch.manual_seed(seed)
    steps = Compose(
        [
            RandomResizedCrop((16, 20), (0.3, 0.9)),
            RandomHorizontalFlip(1.0),
            RandomRotate(2, 180.0),
            RandomScale(0.8, 1.2),
            RandomCrop(1.0),
        ]
    )
    s = steps(frame_to_sample(frame(seed)))
    before = frame_to_sample(frame(seed))
    assert 0 < s.pair_point.numel() < before.pair_point.numel()
    torch.testing.assert_close(reprojected_uv(s), s.pair_uv, atol=2e-3, rtol=0)


def test_select_points_drops_and_renumbers_pairs() -> None:
    s = frame_to_sample(frame())
    keep = torch.zeros(s.points.shape[0], dtype=torch.bool)
    keep[::3] = True
    old_points = s.points.clone()
    old_uv = dict(zip(s.pair_point.tolist(), s.pair_uv.tolist()))
    s.select_points(keep)
    assert s.points.shape[0] == int(keep.sum()) == s.pair_point.numel()
    kept_old = keep.nonzero().squeeze(1)
    assert torch.equal(s.points, old_points[kept_old])
    assert [old_uv[int(kept_old[i])] for i in s.pair_point] == s.pair_uv.tolist()


def test_a_point_sample_has_no_images() -> None:
    p = PointSample(points=torch.rand(10, 3), colors=torch.rand(10, 3))
    out = Voxelize(0.5)(RandomRotate()(p))
    assert type(out) is PointSample and out.coords is not None and not hasattr(out, "images")


def test_offset_helpers_hand_case() -> None:
    offset = torch.tensor([2, 2, 5])
    assert offset_to_batch(offset).tolist() == [0, 0, 2, 2, 2]
    assert offset_starts(offset).tolist() == [0, 2, 2]
    assert batch_to_offset(torch.tensor([0, 0, 2, 2, 2]), 3).tolist() == [2, 2, 5]


def test_collate_shifts_pairs_and_stacks_cameras() -> None:
    vox = Voxelize(0.05)
    a, b = vox(frame_to_sample(frame(0))), vox(frame_to_sample(frame(1)))
    batch = collate([a, b])
    assert batch.intrinsics.shape == (2, 3, 3) and batch.poses.shape == (2, 4, 4)
    sample_of_pair = offset_to_batch(batch.offset)[batch.pair_voxel]
    assert torch.equal(sample_of_pair, batch.pair_image)  # one image per sample, pairs stay in their sample
