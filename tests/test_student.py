"""The sparse-conv U-Net student: shapes, order, gradients, presets, state_dict, batch independence."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ppkt.models.student import STUDENT_PRESETS, STUDENTS, SparseUNet, build_student
from ppkt.sparse import SparseTensor

torch.set_num_threads(2)


def surface_cloud(batch: int = 2, seed: int = 0, side: int = 24) -> tuple[Tensor, Tensor]:
    """Voxelised points on a floor plane and a sphere per item: unique coords ``[M, 4]`` (shuffled)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        n = 3000
        floor = torch.rand(n, 2, generator=g) * side
        pts = [torch.cat([floor, torch.full((n, 1), 1.0)], 1)]
        d = torch.randn(n, 3, generator=g)
        centre = torch.tensor([side / 2, side / 2, side / 3]) + torch.rand(3, generator=g) * 4
        pts.append(centre + (side / 5) * d / d.norm(dim=1, keepdim=True))
        vox = torch.unique(torch.cat(pts).floor().to(torch.int32), dim=0)
        rows.append(torch.cat([torch.full((vox.shape[0], 1), b, dtype=torch.int32), vox], 1))
    coords = torch.cat(rows)
    return coords[torch.randperm(coords.shape[0], generator=g)], coords


def test_unet_small_shapes_and_order() -> None:
    coords, _ = surface_cloud()
    torch.manual_seed(0)
    model = build_student("unet_small", 3).double().eval()
    assert isinstance(model, SparseUNet) and model.out_channels == STUDENT_PRESETS["unet_small"]["planes"][-1]
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    x = SparseTensor(feats, coords)
    out = model(x)
    assert out.shape == (coords.shape[0], model.out_channels) and out.dtype == torch.float64
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    assert torch.equal(x.coords, coords)
    assert x.cache.strides == [1, 2, 4, 8, 16]
    # a permutation of the input rows permutes the output rows identically
    perm = torch.randperm(coords.shape[0], generator=torch.Generator().manual_seed(1))
    out_perm = model(SparseTensor(feats[perm], coords[perm]))
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-10, atol=1e-12)
    # a second pass over the same input reuses every kernel map
    builds = x.cache.num_builds
    torch.testing.assert_close(model(x), out, rtol=0, atol=0)
    assert x.cache.num_builds == builds


def test_res16unet34c_tiny_input_and_head() -> None:
    coords, _ = surface_cloud(batch=1, side=12)
    model = build_student("res16unet34c", 4).eval()  # a tiny input has single-voxel coarse levels
    assert model.out_channels == 96
    assert [len(list(layer.children())) for layer in model.enc] == [2, 3, 4, 6]
    assert [len(list(layer.children())) for layer in model.dec] == [2, 2, 2, 2]
    out = model(SparseTensor(torch.randn(coords.shape[0], 4), coords))
    assert out.shape == (coords.shape[0], 96) and torch.isfinite(out).all()
    head = build_student("unet_small", 1, out_channels=20, layers=(1, 1, 1, 1, 2, 1, 1, 1)).eval()
    assert head.out_channels == 20 and len(list(head.dec[0].children())) == 2
    assert head(SparseTensor(torch.randn(coords.shape[0], 1), coords)).shape == (coords.shape[0], 20)


def test_gradients_reach_all_parameters() -> None:
    coords, _ = surface_cloud(batch=2, seed=3)
    torch.manual_seed(0)
    model = build_student("unet_small", 3, out_channels=8).train()
    feats = torch.randn(coords.shape[0], 3, requires_grad=True)
    out = model(SparseTensor(feats, coords))
    (out * torch.randn_like(out)).sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_unknown_student_name() -> None:
    with pytest.raises(ValueError, match="res16unet34c") as err:
        build_student("unet_huge", 3)
    assert "unet_small" in str(err.value)
    assert set(STUDENTS) == {
        "unet_small",
        "res16unet34c",
        "minkunet34c",
        "slidr_res16unet34c",
        "spunet_v1m1",
        "mmdet3d_minkunet34",
    }
    with pytest.raises(ValueError, match="8 entries"):
        SparseUNet(3, planes=(8, 8))
    with pytest.raises(ValueError, match="expects 3 input channels"):
        build_student("unet_small", 3)(SparseTensor(torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.int32)))


def test_state_dict_roundtrip() -> None:
    coords, _ = surface_cloud(batch=1, seed=4)
    feats = torch.randn(coords.shape[0], 3)
    torch.manual_seed(0)
    a = build_student("unet_small", 3)
    with torch.no_grad():  # populate BatchNorm running statistics
        a(SparseTensor(feats, coords))
    torch.manual_seed(1)
    b = build_student("unet_small", 3)
    a.eval(), b.eval()
    x = SparseTensor(feats, coords)
    assert not torch.allclose(a(x), b(x))
    missing = b.load_state_dict(a.state_dict())
    assert not missing.missing_keys and not missing.unexpected_keys
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    assert any(k.endswith("running_mean") for k in a.state_dict())


def test_batch_independence_in_eval_mode() -> None:
    _, coords = surface_cloud(batch=2, seed=5)
    torch.manual_seed(0)
    model = build_student("unet_small", 3).double()
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(2):  # non-trivial BatchNorm running statistics
            model(SparseTensor(feats, coords))
    model.eval()
    first = coords[:, 0] == 0
    both = model(SparseTensor(feats, coords))
    alone = model(SparseTensor(feats[first], coords[first]))
    torch.testing.assert_close(alone, both[first], rtol=1e-12, atol=1e-12)
    # item 1 moved to batch index 7 (an empty gap between) changes nothing either
    gap = coords.clone()
    gap[~first, 0] = 7
    torch.testing.assert_close(model(SparseTensor(feats, gap)), both, rtol=1e-12, atol=1e-12)
