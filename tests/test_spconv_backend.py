"""``student.backend=spconv``: one checkpoint, both backends, same outputs (skipped without spconv)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ppkt.models.student import build_student
from ppkt.models.student.spconv_backend import import_spconv
from ppkt.sparse import SparseTensor


@pytest.fixture
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # spconv's CPU scatter races with more threads
    yield
    torch.set_num_threads(n)


def random_input(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    raw = torch.cat(
        [torch.randint(0, 2, (4000, 1), generator=g), torch.randint(-20, 20, (4000, 3), generator=g)], 1
    )
    coords = torch.unique(raw, dim=0)
    coords = coords[torch.randperm(len(coords), generator=g)]  # rows in any order, negative coordinates too
    return torch.rand(len(coords), 3, generator=g, dtype=torch.float64), coords


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown sparse-conv backend 'minkowski'"):
        build_student("unet_small", 3, backend="minkowski")


@pytest.mark.spconv
@pytest.mark.parametrize("preset", ["unet_small", "res16unet34c"])
def test_one_checkpoint_both_backends(preset: str, tmp_path: Path, one_thread: None) -> None:
    sp, why = import_spconv()
    if sp is None:
        pytest.skip(why or "spconv unavailable")
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
def test_spconv_on_cpu_refuses_more_than_one_thread() -> None:
    sp, why = import_spconv()
    if sp is None:
        pytest.skip(why or "spconv unavailable")
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        net = build_student("unet_small", 3, backend="spconv").double()
        feats, coords = random_input(2)
        with pytest.raises(RuntimeError, match="one thread"):
            net(SparseTensor(feats, coords))
    finally:
        torch.set_num_threads(n)
