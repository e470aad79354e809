"""Pure-PyTorch sparse convolutions vs dense ``torch.nn.functional`` convolutions (float64, exact)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ppkt.sparse import (
    BATCH_MAX,
    COORD_MAX,
    COORD_MIN,
    KernelMapCache,
    SparseConv3d,
    SparseInverseConv3d,
    SparseTensor,
    SubMConv3d,
    pack_keys,
    sparse_cat,
    unpack_keys,
)

torch.set_num_threads(2)

B, N = 2, 8  # batch items, grid side
RTOL, ATOL = 1e-10, 1e-12


def random_sparse(
    channels: int, seed: int = 0, batch: int = B, size: int = N, occupancy: float = 0.3
) -> tuple[Tensor, Tensor]:
    """Random unique coords ``[M, 4]`` (rows shuffled, not sorted) and float64 features ``[M, channels]``."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(batch, size, size, size, generator=g) < occupancy).nonzero().to(torch.int32)
    coords = coords[torch.randperm(coords.shape[0], generator=g)]
    feats = torch.randn(coords.shape[0], channels, generator=g, dtype=torch.float64)
    return coords, feats


def to_dense(feats: Tensor, coords: Tensor, size: int, batch: int = B) -> Tensor:
    """Differentiable scatter of ``[M, C]`` features into ``[batch, C, Z, Y, X]``."""
    dense = feats.new_zeros(batch, size, size, size, feats.shape[1])
    c = coords.long()
    dense = dense.index_put((c[:, 0], c[:, 3], c[:, 2], c[:, 1]), feats)
    return dense.permute(0, 4, 1, 2, 3)


def at_sites(dense: Tensor, coords: Tensor) -> Tensor:
    """Read ``[B, C, Z, Y, X]`` at ``[M, 4]`` (b, x, y, z) sites -> ``[M, C]``."""
    c = coords.long()
    return dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 3], c[:, 2], c[:, 1]]


def grads_of(loss: Tensor, *tensors: Tensor) -> list[Tensor]:
    return [g.clone() for g in torch.autograd.grad(loss, tensors)]


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize(("cin", "cout"), [(1, 1), (3, 8), (8, 5)])
def test_submanifold_matches_dense_conv3d(kernel_size: int, cin: int, cout: int) -> None:
    coords, feats = random_sparse(cin, seed=kernel_size * 10 + cin)
    feats.requires_grad_(True)
    conv = SubMConv3d(cin, cout, kernel_size).double()
    y = conv(SparseTensor(feats, coords))
    assert y.coords is not None and torch.equal(y.coords, coords) and y.stride == 1
    ref = at_sites(
        F.conv3d(to_dense(feats, coords, N), conv.weight.permute(0, 4, 1, 2, 3), padding=kernel_size // 2),
        coords,
    )
    torch.testing.assert_close(y.feats, ref, rtol=RTOL, atol=ATOL)
    probe = torch.randn_like(ref)
    got = grads_of((y.feats * probe).sum(), feats, conv.weight)
    want = grads_of((ref * probe).sum(), feats, conv.weight)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    assert got[0].abs().sum() > 0 and got[1].abs().sum() > 0


def test_submanifold_kernel1_and_bias() -> None:
    coords, feats = random_sparse(4, seed=3)
    conv = SubMConv3d(4, 6, 1, bias=True).double()
    assert conv.bias is not None
    x = SparseTensor(feats, coords)
    assert torch.equal(x.dense((N, N, N), B), to_dense(feats, coords, N))
    y = conv(x)
    torch.testing.assert_close(
        y.feats, feats @ conv.weight.reshape(6, 4).t() + conv.bias, rtol=RTOL, atol=ATOL
    )
    conv3 = SubMConv3d(4, 6, 3, bias=True).double()
    ref = F.conv3d(to_dense(feats, coords, N), conv3.weight.permute(0, 4, 1, 2, 3), conv3.bias, padding=1)
    torch.testing.assert_close(
        conv3(SparseTensor(feats, coords)).feats, at_sites(ref, coords), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize(("kernel_size", "padding"), [(2, 0), (3, 1)])
@pytest.mark.parametrize(("cin", "cout"), [(1, 2), (4, 3)])
def test_down_conv_matches_dense_conv3d(kernel_size: int, padding: int, cin: int, cout: int) -> None:
    coords, feats = random_sparse(cin, seed=kernel_size + 7 * cin)
    feats.requires_grad_(True)
    conv = SparseConv3d(cin, cout, kernel_size, stride=2, padding=padding).double()
    y = conv(SparseTensor(feats, coords))
    assert y.stride == 2
    size = N + 2  # room for the outputs whose receptive field pokes past the occupied 8^3 block
    weight = conv.weight.permute(0, 4, 1, 2, 3)
    dense_out = F.conv3d(to_dense(feats, coords, size), weight, stride=2, padding=padding)
    # expected output sites: every dense output whose receptive field holds an active input
    occupied = to_dense(torch.ones(coords.shape[0], 1, dtype=torch.float64), coords, size)
    box = torch.ones(1, 1, kernel_size, kernel_size, kernel_size, dtype=torch.float64)
    touched = F.conv3d(occupied, box, stride=2, padding=padding)[:, 0]
    bi, zi, yi, xi = (touched > 0).nonzero().unbind(1)
    expected = {tuple(r) for r in torch.stack([bi, xi, yi, zi], 1).tolist()}
    assert {tuple(r) for r in y.coords.tolist()} == expected
    assert len(expected) == y.num_points  # unique output sites
    # output sites are sorted by (batch, x, y, z)
    keys = pack_keys(y.coords)
    assert torch.all(keys[1:] > keys[:-1])
    ref = at_sites(dense_out, y.coords)
    torch.testing.assert_close(y.feats, ref, rtol=RTOL, atol=ATOL)
    probe = torch.randn_like(ref)
    got = grads_of((y.feats * probe).sum(), feats, conv.weight)
    want = grads_of((ref * probe).sum(), feats, conv.weight)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("kernel_size", "padding"), [(2, 0), (3, 1)])
@pytest.mark.parametrize(("cin", "cout"), [(2, 1), (5, 4)])
def test_inverse_conv_matches_dense_conv_transpose3d(
    kernel_size: int, padding: int, cin: int, cout: int
) -> None:
    coords, feats = random_sparse(3, seed=kernel_size * 3 + cin)
    x = SparseTensor(feats, coords)
    coarse = SparseConv3d(3, cin, kernel_size, 2, padding).double()(x)
    coarse_feats = torch.randn(coarse.num_points, cin, dtype=torch.float64, requires_grad=True)
    up = SparseInverseConv3d(cin, cout, kernel_size, 2, padding).double()
    y = up(coarse.replace_feats(coarse_feats))
    assert y.stride == 1 and y.coords is x.coords  # exactly the fine sites, in the fine order
    size = N // 2 + 2
    dense = F.conv_transpose3d(
        to_dense(coarse_feats, coarse.coords, size),
        up.weight.permute(4, 0, 1, 2, 3),
        stride=2,
        padding=padding,
    )
    ref = at_sites(dense, coords)
    torch.testing.assert_close(y.feats, ref, rtol=RTOL, atol=ATOL)
    probe = torch.randn_like(ref)
    got = grads_of((y.feats * probe).sum(), coarse_feats, up.weight)
    want = grads_of((ref * probe).sum(), coarse_feats, up.weight)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def test_kernel_maps_are_built_once_per_level() -> None:
    coords, feats = random_sparse(4, seed=11)
    x = SparseTensor(feats, coords)
    c1, c2 = SubMConv3d(4, 4).double(), SubMConv3d(4, 4).double()
    h = c2(c1(x))
    assert x.cache.build_counts[("subm", 1, 3, 1, 1)] == 1
    assert x.cache.num_builds == 1
    assert x.cache.submanifold(1, 3) is x.cache.submanifold(1, 3)
    # other kernel sizes are other maps; a second pass over the same input builds nothing new
    SubMConv3d(4, 4, 5).double()(h.replace_feats(h.feats * 2))
    c2(c1(x))
    assert x.cache.num_builds == 2
    down, up = SparseConv3d(4, 4).double(), SparseInverseConv3d(4, 4).double()
    coarse = SubMConv3d(4, 4).double()(down(h))
    assert x.cache.num_builds == 4  # the down map and the stride-2 submanifold map
    up(coarse)
    up(down(x))
    SubMConv3d(4, 4).double()(coarse)
    assert x.cache.num_builds == 4  # up conv reuses the transposed down map
    assert all(n == 1 for n in x.cache.build_counts.values())


def test_pack_unpack_roundtrip_and_bounds() -> None:
    coords = torch.tensor(
        [[0, COORD_MIN, COORD_MAX, 0], [BATCH_MAX, COORD_MAX, COORD_MIN, -1], [3, -5, 7, 11]],
        dtype=torch.int32,
    )
    keys = pack_keys(coords)
    assert keys.dtype == torch.int64 and bool((keys >= 0).all())
    assert torch.equal(unpack_keys(keys), coords)
    assert keys.argsort().tolist() == [0, 2, 1]  # batch-major order
    for bad in ([0, COORD_MAX + 1, 0, 0], [0, 0, COORD_MIN - 1, 0], [BATCH_MAX + 1, 0, 0, 0], [-1, 0, 0, 0]):
        with pytest.raises(ValueError, match="packable range"):
            pack_keys(torch.tensor([bad], dtype=torch.int32))
    # in range, but the 3x3x3 neighbourhood is not: the map builder refuses instead of aliasing keys
    edge = SparseTensor(torch.ones(1, 1), torch.tensor([[0, COORD_MAX, 0, 0]]))
    with pytest.raises(ValueError, match="kernel margin 1"):
        SubMConv3d(1, 1)(edge)
    with pytest.raises(ValueError, match="coords must have shape"):
        pack_keys(torch.zeros(3, 3, dtype=torch.int32))


def test_invalid_inputs_raise() -> None:
    coords = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]], dtype=torch.int32)
    with pytest.raises(ValueError, match="duplicate coordinates"):
        SubMConv3d(1, 1)(SparseTensor(torch.ones(2, 1), coords))
    with pytest.raises(ValueError, match="rows"):
        SparseTensor(torch.ones(3, 1), coords)
    with pytest.raises(ValueError, match="integer"):
        SparseTensor(torch.ones(2, 1), coords.float())
    coords, feats = random_sparse(2, seed=5)
    x = SparseTensor(feats, coords)
    with pytest.raises(ValueError, match="no cached down-sampling map"):
        SparseInverseConv3d(2, 2).double()(SparseTensor(feats, coords, stride=2))
    coarse = SparseConv3d(2, 2).double()(x)
    with pytest.raises(ValueError, match="no cached down-sampling map"):
        SparseInverseConv3d(2, 2, kernel_size=3, padding=1).double()(coarse)
    with pytest.raises(ValueError, match="already exists"):
        SparseConv3d(2, 2, kernel_size=3, padding=1).double()(x)
    with pytest.raises(ValueError, match="expected 3 channels"):
        SubMConv3d(3, 2)(x)
    with pytest.raises(ValueError, match="odd"):
        SubMConv3d(2, 2, 2)
    with pytest.raises(ValueError, match="stride >= 2"):
        SparseConv3d(2, 2, kernel_size=3, stride=1)
    with pytest.raises(ValueError, match="share coordinates"):
        sparse_cat([x, coarse])


def test_empty_batch_items_and_empty_tensor() -> None:
    torch.manual_seed(0)
    coords, feats = random_sparse(3, seed=2, batch=3)
    keep = coords[:, 0] != 1  # batch item 1 has no points
    coords, feats = coords[keep], feats[keep]
    subm, down, up = (
        SubMConv3d(3, 4).double(),
        SparseConv3d(4, 5).double(),
        SparseInverseConv3d(5, 2).double(),
    )

    def run(c: Tensor, f: Tensor) -> tuple[SparseTensor, SparseTensor, SparseTensor]:
        h = subm(SparseTensor(f, c))
        coarse = down(h)
        return h, coarse, up(coarse)

    full = run(coords, feats)
    assert full[0].feats.shape == (coords.shape[0], 4)
    for item in (0, 2):
        part = run(coords[coords[:, 0] == item], feats[coords[:, 0] == item])
        for p, f in zip(part, full):
            sel = f.coords[:, 0] == item
            assert torch.equal(p.coords, f.coords[sel])
            torch.testing.assert_close(p.feats, f.feats[sel], rtol=RTOL, atol=ATOL)
    # an input with no points at all
    empty = SparseTensor(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.int32))
    outs = run(empty.coords, empty.feats)
    assert [tuple(o.feats.shape) for o in outs] == [(0, 4), (0, 5), (0, 2)]


def test_negative_coordinates_use_floor_semantics() -> None:
    coords, feats = random_sparse(3, seed=9)
    shift = torch.tensor([0, -8, -6, -10], dtype=torch.int32)  # even shifts: same stride-2 cells
    subm, down, up = (
        SubMConv3d(3, 4).double(),
        SparseConv3d(4, 4).double(),
        SparseInverseConv3d(4, 2).double(),
    )
    a, b = SparseTensor(feats, coords), SparseTensor(feats, coords + shift)
    ha, hb = subm(a), subm(b)
    torch.testing.assert_close(ha.feats, hb.feats, rtol=RTOL, atol=ATOL)
    ca, cb = down(ha), down(hb)
    assert torch.equal(cb.coords, ca.coords + shift // 2)
    torch.testing.assert_close(ca.feats, cb.feats, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(up(ca).feats, up(cb).feats, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_cell_down_map_equals_general_map(k: int) -> None:
    """The one-pass ``kernel == stride`` map (shifts for powers of two) equals the per-offset search."""
    coords, _ = random_sparse(2, seed=k)
    coords = coords + torch.tensor([0, -7, -5, -9], dtype=torch.int32)  # negative coordinates too
    c = coords.to(torch.int64)
    fast, fast_level = KernelMapCache._build_down_cells(c, k)
    slow, slow_level = KernelMapCache._build_down_general(c, k, k, 0)
    assert torch.equal(fast_level.coords, slow_level.coords)
    assert fast.n_out == slow.n_out and fast.n_in == slow.n_in
    for f in range(k**3):
        # same pairs per offset (the general path lists them in input order too)
        assert torch.equal(fast.in_idx[f], slow.in_idx[f]), f
        assert torch.equal(fast.out_idx[f], slow.out_idx[f]), f


def test_autocast_bfloat16_on_cpu() -> None:
    coords, feats = random_sparse(8, seed=4)
    conv = SubMConv3d(8, 8)
    x = SparseTensor(feats.float(), coords)
    ref = conv(x).feats
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x).feats
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)
    y.float().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
