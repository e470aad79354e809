"""``ppkt bench``: the timing helper, the FLOP counter and the CLI with its spconv comparisons (tiny sizes,
no speed assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppkt.bench import TRAIN_STEP_FACTOR, count_conv_flops, summarize, time_fn
from ppkt.bench.cases import CASES
from ppkt.bench.inputs import surface_cloud
from ppkt.bench.runner import parse_cases
from ppkt.cli.main import build_parser, main
from ppkt.errors import ConfigError
from ppkt.sparse import SparseTensor, SubMConv3d
from ppkt.sparse.spconv import import_spconv


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


def test_parse_cases() -> None:
    assert parse_cases("gemm_efficiency,sparse_conv_layer") == ["sparse_conv_layer", "gemm_efficiency"]
    with pytest.raises(ConfigError):
        parse_cases("nope")


def test_bench_help_names_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    """``ppkt bench --help`` lists the cases by hand (the command module does not import them): it must
    name every one of ``CASES``."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    named = {w.strip(" ,:;()") for w in capsys.readouterr().out.split()}
    assert set(CASES) <= named, sorted(set(CASES) - named)


def test_cli_bench_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    threads = torch.get_num_threads()
    rc = main(
        [
            "bench", "--quick", "--sizes", "tiny", "--threads", "1", "--device", "cpu",
            "--cases", "sparse_conv_layer,unet_step,gemm_efficiency", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    assert torch.get_num_threads() == threads  # --threads applies to the run only
    data = json.loads((out / "bench.json").read_text())
    assert {"date", "device", "torch", "threads", "quick", "cases"} <= set(data)
    assert data["quick"] is True and data["threads"] == 1
    assert set(data["cases"]) == {"sparse_conv_layer", "unet_step", "gemm_efficiency"}
    assert all("error" not in case for case in data["cases"].values())
    layer, unet = data["cases"]["sparse_conv_layer"], data["cases"]["unet_step"]
    cfg = layer["configs"][0]
    assert cfg["ppkt_1t"]["n"] >= 1 and cfg["ppkt_1t"]["threads"] == 1
    assert unet["ppkt"]["n"] >= 1 and unet["kernel_maps"] == 9
    sp, why = import_spconv()
    if sp is None:  # the comparisons say why they were skipped; ppkt's own figures are there
        assert layer["skipped"] == why and cfg["spconv"] == unet["spconv"] == {"skipped": why}
        assert "ratio_vs_spconv" not in layer and "ratio_vs_spconv" not in unet
    else:  # spconv ran (no "spconv failed"), on the same weights: same outputs and gradients
        assert "skipped" not in layer and "spconv" not in cfg and "spconv" not in unet
        assert cfg["spconv_1t"]["threads"] == 1
        assert layer["ratio_vs_spconv"] > 0 and unet["ratio_vs_spconv"] > 0
        assert cfg["max_abs_diff"] < 1e-4 and cfg["max_abs_diff_grad_input"] < 1e-4
        assert cfg["max_rel_diff_grad_weight"] < 1e-4
        assert unet["max_abs_diff"] < 1e-4 * max(1.0, unet["max_abs_output"])
    gemm = data["cases"]["gemm_efficiency"]
    assert gemm["flops_per_step"] > 0 and gemm["matmul_gflops"] > 0 and gemm["efficiency"] > 0


def test_the_command_sets_the_thread_pool_env_unless_the_user_chose() -> None:
    from ppkt.cli.main import THREAD_POOL_ENV, set_thread_pool_env

    env: dict[str, str] = {"PATH": "/bin"}
    set_thread_pool_env(env)
    assert env == {"PATH": "/bin", **THREAD_POOL_ENV} and env["GOMP_SPINCOUNT"] == "1000"
    for user in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(user)
        set_thread_pool_env(env)
        assert env == user


def test_the_command_module_does_not_load_torch() -> None:
    """The OpenMP setting only works if torch is not loaded before ``main`` runs."""
    code = "import sys, ppkt.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
