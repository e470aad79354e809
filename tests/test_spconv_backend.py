"""The ``spconv`` sparse-conv backend: per conv, same parameters and outputs as ``torch`` (skipped without
spconv), one checkpoint for both, and the CPU thread-safety refusal."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from ppkt.models.student import build_student
from ppkt.sparse import (
    BACKENDS,
    SparseConv3d,
    SparseConvModule,
    SparseInverseConv3d,
    SparseTensor,
    SubMConv3d,
    pack_keys,
    set_backend,
)
from ppkt.sparse.spconv import align_coords, import_spconv, to_spconv_indices


@pytest.fixture
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # spconv's CPU scatter races with more threads
    yield
    torch.set_num_threads(n)


@pytest.fixture
def spconv(one_thread: None) -> None:
    sp, why = import_spconv()
    if sp is None:
        pytest.skip(why or "spconv unavailable")


def random_input(seed: int, n: int = 4000, side: int = 20) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    raw = torch.cat(
        [torch.randint(0, 2, (n, 1), generator=g), torch.randint(-side, side, (n, 3), generator=g)], 1
    )
    coords = torch.unique(raw, dim=0)
    coords = coords[torch.randperm(len(coords), generator=g)]  # rows in any order, negative coordinates too
    return torch.rand(len(coords), 3, generator=g, dtype=torch.float64), coords


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown sparse-conv backend 'minkowski'"):
        build_student("unet_small", 3, backend="minkowski")
    with pytest.raises(ValueError, match="unknown sparse-conv backend"):
        SubMConv3d(3, 4, backend="Torch")
    conv = SubMConv3d(3, 4)
    with pytest.raises(ValueError, match="unknown sparse-conv backend"):
        set_backend(conv, "cuda")
    conv.backend = "cuda"  # a typo set directly is caught at the call
    with pytest.raises(ValueError, match="unknown sparse-conv backend"):
        conv(SparseTensor(torch.randn(2, 3), torch.zeros(2, 4, dtype=torch.int32) + torch.arange(2)[:, None]))


def test_set_backend_sets_every_conv_and_keeps_the_state_dict() -> None:
    net = build_student("unet_small", 3)
    keys = {k: v.clone() for k, v in net.state_dict().items()}
    convs = [m for m in net.modules() if isinstance(m, SparseConvModule)]
    assert len(convs) > 10 and all(c.backend == "torch" for c in convs)
    assert set_backend(net, "spconv") is net
    assert all(c.backend == "spconv" for c in convs) and "backend=spconv" in repr(net.stem.conv)
    assert build_student("unet_small", 3, backend="spconv").stem.conv.backend == "spconv"
    state = net.state_dict()
    assert list(state) == list(keys) and all(torch.equal(state[k], keys[k]) for k in keys)
    assert BACKENDS == ("torch", "spconv")


def test_spconv_index_order() -> None:
    coords = torch.tensor([[0, -3, 5, 17], [1, 2, -20, 0]], dtype=torch.int32)
    a = align_coords(coords)
    assert int(a[:, 1:].min()) >= 0
    assert torch.equal((a - coords)[:, 1:] % 16, torch.zeros(2, 3, dtype=torch.int32))
    idx, shape, batch = to_spconv_indices(a)
    assert torch.equal(idx[:, 1], a[:, 3]) and torch.equal(idx[:, 3], a[:, 1])  # (batch, z, y, x)
    assert batch == 2 and all(s % 16 == 0 for s in shape)


def _run_pair(
    convs: list[SparseConvModule], feats: Tensor, coords: Tensor
) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]]]:
    """Run ``convs`` in sequence (torch copies vs spconv copies): outputs (rows sorted by coordinates: a down
    conv's rows are in each backend's own order), input gradients, parameter gradients."""
    outs, gins, gparams = [], [], []
    for backend in BACKENDS:
        chain = [set_backend(copy.deepcopy(c), backend) for c in convs]
        f = feats.clone().requires_grad_(True)
        y = SparseTensor(f, coords)
        for c in chain:
            y = c(y)
        out = y.feats[torch.argsort(pack_keys(y.coords))]
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        assert f.grad is not None
        outs.append(out.detach())
        gins.append(f.grad)
        gparams.append([p.grad for c in chain for p in c.parameters() if p.grad is not None])
        assert len(gparams[-1]) == sum(1 for c in chain for _ in c.parameters())
    return outs, gins, gparams


@pytest.mark.spconv
@pytest.mark.parametrize(
    "make",
    [
        lambda: [SubMConv3d(3, 5, 3)],
        lambda: [SubMConv3d(3, 5, 5, bias=True)],
        lambda: [SubMConv3d(3, 5, 1, bias=True)],
        lambda: [SparseConv3d(3, 4, 2, 2)],
        lambda: [SparseConv3d(3, 4, 3, 2, padding=1, bias=True)],
        lambda: [SparseConv3d(3, 4, 2, 2), SubMConv3d(4, 4, 3), SparseInverseConv3d(4, 6, 2, 2, bias=True)],
        lambda: [SparseConv3d(3, 4, 3, 2, 1), SparseInverseConv3d(4, 2, 3, 2, 1)],
    ],
    ids=["subm3", "subm5_bias", "subm1", "down2", "down3_pad1", "down_subm_up", "down3_up3"],
)
def test_each_conv_matches_the_torch_backend(
    make: Callable[[], list[SparseConvModule]], spconv: None
) -> None:
    """One conv (or a down/up pair) per backend, same weights: same outputs, input and weight gradients."""
    torch.manual_seed(0)
    convs = [c.double() for c in make()]
    feats, coords = random_input(3, n=1500, side=8)
    (a, b), (ga, gb), (pa, pb) = _run_pair(convs, feats, coords)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    for u, v in zip(pa, pb):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-11)


@pytest.mark.spconv
@pytest.mark.parametrize("preset", ["unet_small", "res16unet34c"])
def test_one_checkpoint_both_backends(preset: str, tmp_path: Path, spconv: None) -> None:
    torch.manual_seed(0)
    ours = build_student(preset, 3).double().eval()
    for m in ours.modules():  # non-trivial BN statistics, so eval mode is really exercised
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "student.pt"
    torch.save(ours.state_dict(), path)
    theirs = build_student(preset, 3, backend="spconv").double().eval()
    theirs.load_state_dict(torch.load(path, weights_only=True))  # the same keys and shapes
    feats, coords = random_input(1)
    a = ours(SparseTensor(feats, coords))
    b = theirs(SparseTensor(feats, coords))
    assert a.shape == b.shape == (len(coords), ours.out_channels)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.spconv
def test_training_forward_and_every_gradient_match(spconv: None) -> None:
    """Train mode (batch statistics), float64: outputs, the input's and **every** parameter's gradient."""
    torch.manual_seed(0)
    net = build_student("unet_small", 3, out_channels=5).double()
    other = set_backend(copy.deepcopy(net), "spconv")
    feats, coords = random_input(2, n=3000, side=12)
    grads = []
    for model in (net, other):
        f = feats.clone().requires_grad_(True)
        out = model(SparseTensor(f, coords))
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        params = dict(model.named_parameters())
        assert all(p.grad is not None for p in params.values())
        grads.append((out.detach(), f.grad, {k: p.grad for k, p in params.items()}))
    (a, ga, pa), (b, gb, pb) = grads
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ga, gb, rtol=1e-7, atol=1e-9)
    assert pa.keys() == pb.keys()
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-7, atol=1e-9, msg=k)


@pytest.mark.spconv
def test_second_pass_and_mixed_backends(spconv: None) -> None:
    torch.manual_seed(0)
    net = build_student("unet_small", 3).double().eval()
    feats, coords = random_input(4, n=2000, side=10)
    ref = net(SparseTensor(feats, coords))
    x = SparseTensor(feats, coords)
    spc = set_backend(copy.deepcopy(net), "spconv")
    first = spc(x)
    assert "spconv" in x.cache.backend_state
    torch.testing.assert_close(spc(x), first, rtol=0, atol=0)  # the same input again: pairs reused
    # backends mixed per conv: the down/up pairs on torch, everything else on spconv
    for m in [*spc.down, *spc.up]:
        set_backend(m, "torch")
    torch.testing.assert_close(spc(SparseTensor(feats, coords)), ref, rtol=1e-9, atol=1e-9)
    # an inverse conv on another backend than its down conv is refused
    down, up = SparseConv3d(3, 3).double(), SparseInverseConv3d(3, 3, backend="spconv").double()
    with pytest.raises(ValueError, match="inverse conv must mirror"):
        up(down(SparseTensor(feats, coords)))
    with pytest.raises(ValueError, match="no cached down-sampling map"):
        set_backend(up, "torch")(set_backend(down, "spconv")(SparseTensor(feats, coords)))


@pytest.mark.spconv
def test_spconv_on_cpu_refuses_more_than_one_thread(spconv: None) -> None:
    torch.set_num_threads(2)  # restored by the fixture
    net = build_student("unet_small", 3, backend="spconv").double()
    feats, coords = random_input(2)
    with pytest.raises(RuntimeError, match="one thread"):
        net(SparseTensor(feats, coords))
