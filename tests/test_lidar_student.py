"""The outdoor student's inputs: cylindrical voxels, the intensity and elevation features, the range crop and
the point limit, and the MinkUNet-34 preset on a LiDAR-sized scan with both sparse backends."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from ppkt.config import PretrainConfig, load_config
from ppkt.data.sample import PointSample
from ppkt.data.transforms import LimitPoints, RangeCrop, Voxelize
from ppkt.errors import ConfigError
from ppkt.models.student import build_student
from ppkt.sparse import SparseTensor
from ppkt.sparse.spconv import import_spconv
from ppkt.training.data import build_transform


def cloud(points: list[list[float]], intensity: list[float] | None = None) -> PointSample:
    pts = torch.tensor(points, dtype=torch.float32)
    return PointSample(
        points=pts,
        colors=torch.zeros(len(pts), 3),
        intensity=None if intensity is None else torch.tensor(intensity),
        labels=torch.arange(len(pts)),
    )


def test_cylindrical_cells_by_hand() -> None:
    """Cells of 0.1 m radius × 1° azimuth × 0.1 m height about the z axis (SLidR's grid)."""
    s = cloud(
        [
            [1.00, 0.000, 0.00],  # ρ 1.00 → 10, φ 0° → 0, z 0 → 0
            [1.04, 0.000, 0.05],  # same cell: ρ 10.4, φ 0, z 0.5
            [1.00, 0.010, 0.00],  # φ = 0.57° → still cell 0
            [1.00, 0.020, 0.00],  # φ = 1.15° → cell 1
            [0.01, 1.000, 0.00],  # φ = 89.4° → cell 89
            [-1.0, 0.010, 0.15],  # φ = 179.4° → cell 179, z 1.5 → 1
            [2.00, 0.000, -0.05],  # ρ 20, z −0.5 → −1
        ]
    )
    out = Voxelize(0.1, ["ones"], grid="cylindrical")(s)
    assert out.coords is not None and out.inverse is not None
    raw = torch.tensor(
        [[10, 0, 0], [10, 0, 0], [10, 0, 0], [10, 1, 0], [10, 89, 0], [10, 179, 1], [20, 0, -1]]
    )
    assert out.coords[out.inverse].tolist() == (raw - raw.min(0).values).tolist()  # shifted to start at 0
    assert out.coords.shape[0] == 5


def test_cubic_grid_is_unchanged_by_the_grid_option() -> None:
    s = cloud([[0.01, 0.02, 0.03], [0.26, 0.0, 0.0], [0.1, 0.1, 0.1]])
    a, b = Voxelize(0.25, ["ones"])(s), Voxelize(0.25, ["ones"], grid="cubic")(s)
    assert a.coords is not None and b.coords is not None
    assert torch.equal(a.coords, b.coords) and a.coords.shape[0] == 2


def test_intensity_and_elevation_features_are_voxel_means() -> None:
    s = cloud([[0.0, 0.0, -1.0], [0.05, 0.0, -0.96], [3.0, 0.0, 0.5]], intensity=[0.2, 0.6, 0.9])
    out = Voxelize(0.1, ["intensity", "elevation"])(s)
    assert out.feats is not None and out.inverse is not None and out.feats.shape == (2, 2)
    first, last = out.feats[out.inverse[0]], out.feats[out.inverse[2]]
    torch.testing.assert_close(first, torch.tensor([0.4, -0.98]))
    torch.testing.assert_close(last, torch.tensor([0.9, 0.5]))
    assert Voxelize(0.1, ["intensity", "elevation", "rgb"]).num_features == 5


def test_range_crop_and_point_limit_keep_labels_and_intensity_with_their_points() -> None:
    s = cloud([[1.0, 0.0, 5.0], [0.0, -2.9, 0.0], [3.0, 1.0, 0.0], [-10.0, 0.0, 0.0]], [0.1, 0.2, 0.3, 0.4])
    r = RangeCrop(3.0)(s)  # ρ in the xy plane: 1, 2.9, 3.16, 10
    assert r.labels is not None and r.intensity is not None
    assert r.labels.tolist() == [0, 1] and r.intensity.tolist() == pytest.approx([0.1, 0.2])
    torch.manual_seed(0)
    big = cloud([[float(i), 0.0, 0.0] for i in range(100)], [i / 100 for i in range(100)])
    lim = LimitPoints(10)(big)
    assert lim.labels is not None and lim.intensity is not None and lim.points.shape[0] == 10
    torch.testing.assert_close(lim.points[:, 0], lim.labels.float())  # each point kept its own label …
    torch.testing.assert_close(lim.intensity, lim.labels.float() / 100)  # … and its own intensity
    assert bool((torch.diff(lim.labels) > 0).all())  # in their original order
    assert LimitPoints(1000)(big).points.shape[0] == 100


def lidar_sweep(beams: int = 64, azimuths: int = 2048, seed: int = 0) -> PointSample:
    """An analytic sweep (``beams × azimuths`` returns, ±15° elevation, sensor 1.7 m above a flat ground and
    inside a cylindrical wall of radius 25 m): a LiDAR-sized point cloud in the sensor frame."""
    g = torch.Generator().manual_seed(seed)
    el = torch.deg2rad(torch.linspace(-15.0, 15.0, beams))[:, None]
    az = (2 * math.pi * torch.arange(azimuths) / azimuths)[None]
    d = torch.stack(
        [torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el).expand(-1, azimuths)], -1
    ).reshape(-1, 3)
    t_wall = 25.0 / torch.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2)
    t_ground = torch.where(d[:, 2] < 0, -1.7 / d[:, 2].clamp(max=-1e-6), torch.full_like(t_wall, 1e9))
    r = torch.minimum(t_wall, t_ground) + 0.01 * torch.randn(len(d), generator=g)
    pts = (d * r[:, None]).float()
    return PointSample(
        points=pts, colors=torch.zeros(len(pts), 3), intensity=torch.rand(len(pts), generator=g)
    )


@pytest.fixture
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # spconv's CPU scatter races with more threads
    yield
    torch.set_num_threads(n)


@pytest.mark.spconv
def test_minkunet34c_on_cylindrical_lidar_voxels_with_both_backends(one_thread: None) -> None:
    sp, why = import_spconv()
    if sp is None:
        pytest.skip(why or "spconv unavailable")
    s = Voxelize(0.1, ["intensity", "elevation"], grid="cylindrical")(lidar_sweep(16, 512))
    assert s.coords is not None and s.feats is not None
    coords = torch.cat([torch.zeros(len(s.coords), 1, dtype=torch.int32), s.coords], 1)
    torch.manual_seed(0)
    ours = build_student("minkunet34c", 2).double().eval()
    theirs = build_student("minkunet34c", 2, backend="spconv").double().eval()
    theirs.load_state_dict(ours.state_dict())
    a = ours(SparseTensor(s.feats.double(), coords))  # a tensor per network: it caches its kernel maps
    b = theirs(SparseTensor(s.feats.double(), coords))
    assert a.shape == (len(coords), 96)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_a_120k_point_scan_trains_a_minkunet34c_step_on_the_cpu() -> None:
    """A full 64 × 2048 sweep (131k points), limited to 120k points and voxelized cylindrically at 0.1 m:
    one training step (forward and backward) of the MinkUNet-34 student on the CPU."""
    s = LimitPoints(120_000)(lidar_sweep())
    s = Voxelize(0.1, ["intensity"], grid="cylindrical")(s)
    assert s.coords is not None and s.feats is not None
    assert s.points.shape[0] == 120_000 and 10_000 < s.coords.shape[0] < 120_000
    coords = torch.cat([torch.zeros(len(s.coords), 1, dtype=torch.int32), s.coords], 1)
    net = build_student("minkunet34c", 1)
    out = net(SparseTensor(s.feats, coords))
    out.square().mean().backward()
    assert out.shape == (len(coords), 96) and bool(torch.isfinite(out).all())


def test_the_lidar_keys_are_checked_and_reach_the_transforms() -> None:
    cfg = load_config(
        PretrainConfig,
        None,
        ["data.voxel=cylindrical", "data.max_range=30", "data.max_points=1000", "data.features=[intensity]"],
    )
    names = [type(t).__name__ for t in build_transform(cfg.data, train=True).transforms]
    assert names[:2] == ["RangeCrop", "LimitPoints"] and names[-1] == "Voxelize"
    vox = build_transform(cfg.data, train=False).transforms[-1]
    assert isinstance(vox, Voxelize) and vox.grid == "cylindrical"
    for bad, key in (("data.max_points=0", "data.max_points"), ("data.voxel=polar", "data.voxel")):
        with pytest.raises(ConfigError, match=key):
            load_config(PretrainConfig, None, [bad])
