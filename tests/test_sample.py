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


def cube_scene(cameras: int = 3, seed: int = 0) -> PairedSample:
    """A LiDAR-like sample built directly: points on the faces of a 2 m cube about the origin, seen by
    ``cameras`` cameras standing 5 m out at azimuths 0°, 120°, 240°, looking at the origin. Each point is
    paired with every camera whose image it falls in (points are in the sensor frame; ``poses[v]`` is
    camera-to-sensor)."""
    from ppkt.data.synth.trajectory import look_at

    g = torch.Generator().manual_seed(seed)
    face = torch.randint(0, 6, (3000,), generator=g)
    pts = torch.rand(3000, 3, generator=g, dtype=torch.float64) * 2 - 1
    pts[torch.arange(3000), face % 3] = torch.where(face < 3, 1.0, -1.0).double()
    Kc = torch.tensor([[20.0, 0.0, 15.5], [0.0, 20.0, 11.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    poses, pp, pi, puv = [], [], [], []
    for v in range(cameras):
        a = 2 * np.pi * v / cameras
        T = torch.from_numpy(look_at(np.array([5 * np.cos(a), 5 * np.sin(a), 0.5]), np.zeros(3)))
        cam = (torch.linalg.inv(T)[:3, :3] @ pts.T).T + torch.linalg.inv(T)[:3, 3]
        uvw = (Kc @ cam.T).T
        uv = uvw[:, :2] / uvw[:, 2:]
        ok = (cam[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
        idx = ok.nonzero().squeeze(1)
        poses.append(T)
        pp.append(idx)
        pi.append(torch.full_like(idx, v))
        puv.append(uv[idx].float())
    return PairedSample(
        points=pts.float(),
        colors=torch.zeros(3000, 3),
        intensity=torch.rand(3000, generator=g),
        images=torch.rand(cameras, 3, H, W, generator=g),
        intrinsics=Kc.expand(cameras, 3, 3).clone(),
        poses=torch.stack(poses),
        pair_point=torch.cat(pp),
        pair_image=torch.cat(pi),
        pair_uv=torch.cat(puv),
        cameras=[f"cam_{v}" for v in range(cameras)],
        name=f"cube/{seed}",
    )


def test_a_multi_camera_sample_projects_onto_its_pairs() -> None:
    s = cube_scene()
    assert set(s.pair_image.tolist()) == {0, 1, 2} and s.intrinsics.shape == (3, 3, 3)
    torch.testing.assert_close(reprojected_uv(s), s.pair_uv, atol=1e-3, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_the_geometry_of_three_cameras_follows_every_transform(seed: int) -> None:
    """Each image gets its own random crop and flip; the pairs of every image keep projecting right."""
    torch.manual_seed(seed)
    steps = Compose(
        [
            RandomResizedCrop((16, 20), (0.3, 0.9)),
            RandomHorizontalFlip(0.5),
            RandomRotate(2, 180.0),
            RandomScale(0.8, 1.2),
            RandomCrop(1.5),
        ]
    )
    before = cube_scene(seed=seed)
    s = steps(before)
    assert s.images.shape == (3, 3, 16, 20) and s.intrinsics.shape == (3, 3, 3)
    assert set(s.pair_image.tolist()) == {0, 1, 2}
    assert 0 < s.pair_point.numel() < before.pair_point.numel()
    torch.testing.assert_close(reprojected_uv(s), s.pair_uv, atol=2e-3, rtol=0)
    # per-image crops: the three images' pixel maps (new intrinsics · old⁻¹) are not all the same
    maps = s.intrinsics @ torch.linalg.inv(before.intrinsics)
    assert not torch.allclose(maps[0], maps[1]) or not torch.allclose(maps[1], maps[2])


def test_flip_mirrors_each_image_independently() -> None:
    torch.manual_seed(0)
    s = cube_scene()
    out = RandomHorizontalFlip(0.5)(s)
    flipped = [not torch.equal(out.images[v], s.images[v]) for v in range(3)]
    assert any(flipped) and not all(flipped)  # this seed flips some images, not all
    for v in range(3):
        want = s.images[v].flip(-1) if flipped[v] else s.images[v]
        assert torch.equal(out.images[v], want)
        mine = s.pair_image == v
        u_want = W - 1 - s.pair_uv[mine, 0] if flipped[v] else s.pair_uv[mine, 0]
        torch.testing.assert_close(out.pair_uv[mine, 0], u_want)
    torch.testing.assert_close(reprojected_uv(out), out.pair_uv, atol=1e-3, rtol=0)


def test_collate_offsets_the_images_of_multi_camera_samples() -> None:
    vox = Voxelize(0.2, ["intensity"])
    a, b = vox(cube_scene(3, 0)), vox(cube_scene(2, 1))
    batch = collate([a, b])
    assert batch.images.shape[0] == 5 and batch.image_offset.tolist() == [3, 5]
    assert batch.intrinsics.shape == (5, 3, 3) and batch.poses.shape == (5, 4, 4)
    sample_of_pair = offset_to_batch(batch.offset)[batch.pair_voxel]
    image_sample = offset_to_batch(batch.image_offset)[batch.pair_image]
    assert torch.equal(sample_of_pair, image_sample)  # every pair's image belongs to its own sample
    assert set(batch.pair_image[sample_of_pair == 1].tolist()) == {3, 4}
