"""``ppkt bench``: the timing helper, the FLOP counter, the spconv mirror and the CLI (tiny sizes, no speed
assertions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ppkt.bench import TRAIN_STEP_FACTOR, count_conv_flops, summarize, time_fn
from ppkt.bench.cases import surface_cloud
from ppkt.bench.runner import parse_cases
from ppkt.cli.main import main
from ppkt.errors import ConfigError
from ppkt.models.student.spconv_backend import align_coords, import_spconv, to_spconv_indices
from ppkt.sparse import SparseTensor, SubMConv3d


def test_summarize_known_values() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"median_s": 3.0, "iqr_s": 2.0, "min_s": 1.0, "max_s": 5.0, "n": 5}
    assert summarize([0.5])["iqr_s"] == 0.0


def test_time_fn_counts_warmup_and_repeats() -> None:
    calls: list[int] = []
    setups: list[int] = []
    t = time_fn(lambda: calls.append(1), repeats=7, warmup=2, setup=lambda: setups.append(1))
    assert len(calls) == 9 and len(setups) == 9
    assert t["n"] == 7
    assert 0 <= t["min_s"] <= t["median_s"] <= t["max_s"]
    assert t["iqr_s"] >= 0
    assert t["threads"] == torch.get_num_threads()
    assert t["device"] == "cpu"


def test_flops_two_adjacent_voxels() -> None:
    cin, cout = 3, 5
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.randn(2, cin), coords)
    conv = SubMConv3d(cin, cout, 3)
    counts = count_conv_flops(conv, lambda: conv(x))
    # 2 identity pairs + 2 neighbour pairs (each voxel sees the other once)
    assert counts == {"forward_flops": 2 * 4 * cin * cout, "pairs": 4, "convs": 1}
    assert TRAIN_STEP_FACTOR == 3

    pointwise = SubMConv3d(cin, cout, 1)
    assert count_conv_flops(pointwise, lambda: pointwise(x))["pairs"] == 2


def test_surface_cloud_size_and_validity() -> None:
    c = surface_cloud(3000, seed=0)
    assert c.dtype == torch.int32 and c.shape[1] == 4
    assert 0.85 * 3000 < c.shape[0] < 1.15 * 3000
    assert int(c.min()) >= 0
    assert torch.unique(c, dim=0).shape[0] == c.shape[0]


def test_spconv_index_order() -> None:
    coords = torch.tensor([[0, -3, 5, 17], [1, 2, -20, 0]], dtype=torch.int32)
    a = align_coords(coords)
    assert int(a[:, 1:].min()) >= 0
    assert torch.equal((a - coords)[:, 1:] % 16, torch.zeros(2, 3, dtype=torch.int32))
    idx, shape, batch = to_spconv_indices(a)
    assert torch.equal(idx[:, 1], a[:, 3]) and torch.equal(idx[:, 3], a[:, 1])  # (batch, z, y, x)
    assert batch == 2 and all(s % 16 == 0 for s in shape)


def test_parse_cases() -> None:
    assert parse_cases("gemm_efficiency,sparse_conv_layer") == ["sparse_conv_layer", "gemm_efficiency"]
    with pytest.raises(ConfigError):
        parse_cases("nope")


@pytest.fixture
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.spconv
def test_spconv_mirror_matches_ppkt(one_thread: None) -> None:
    """Same weights, same coordinates: spconv's U-Net equals ppkt's (float64, forward and gradients)."""
    sp, why = import_spconv()
    if sp is None:
        pytest.skip(why or "spconv unavailable")
    from ppkt.models.student import build_student
    from ppkt.models.student.spconv_backend import SpconvUNet

    torch.set_num_threads(1)  # spconv's CPU scatter races with more threads (restored by the fixture)
    torch.manual_seed(0)
    raw = torch.cat([torch.randint(0, 2, (3000, 1)), torch.randint(-12, 12, (3000, 3))], dim=1)
    coords = align_coords(torch.unique(raw, dim=0))
    feats = torch.rand(coords.shape[0], 3, dtype=torch.float64)
    net = build_student("unet_small", 3).double()
    mirror = SpconvUNet(net, sp)
    a = net(SparseTensor(feats, coords))
    g = torch.randn_like(a)
    (a * g).sum().backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    b = mirror(mirror.make_input(feats, coords))
    (b * g).sum().backward()
    assert torch.allclose(a, b, atol=1e-9)
    for k, p in net.named_parameters():
        if k in grads:
            assert p.grad is not None and torch.allclose(p.grad, grads[k], rtol=1e-7, atol=1e-9), k


def test_cli_bench_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    threads = torch.get_num_threads()
    rc = main(
        [
            "bench", "--quick", "--sizes", "tiny", "--threads", "1", "--device", "cpu",
            "--cases", "sparse_conv_layer,gemm_efficiency", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    assert torch.get_num_threads() == threads  # --threads applies to the run only
    data = json.loads((out / "bench.json").read_text())
    assert {"date", "device", "torch", "threads", "quick", "cases"} <= set(data)
    assert data["quick"] is True and data["threads"] == 1
    assert set(data["cases"]) == {"sparse_conv_layer", "gemm_efficiency"}
    layer = data["cases"]["sparse_conv_layer"]
    assert "error" not in layer
    assert "ratio_vs_spconv" in layer or "skipped" in layer
    cfg = layer["configs"][0]
    assert cfg["ppkt_1t"]["n"] >= 1 and cfg["ppkt_1t"]["threads"] == 1
    if "ratio_vs_spconv" in layer:
        assert cfg["max_abs_diff"] < 1e-4
    gemm = data["cases"]["gemm_efficiency"]
    assert "error" not in gemm
    assert gemm["flops_per_step"] > 0 and gemm["matmul_gflops"] > 0 and gemm["efficiency"] > 0
