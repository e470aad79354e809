"""``ppkt bench`` case ``step_profile`` at tiny sizes on the tiny synthetic dataset: every part of the
pretraining and fine-tuning steps is timed, the shares add up to the step, the figures are finite, and the
bf16 loss stays close to the float32 one (no speed assertions)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from ppkt.bench.cases.step_profile import (
    FINETUNE_PARTS,
    PRETRAIN_PARTS,
    PartClock,
    case_step_profile,
    finetune_backward,
    map_keys,
    pretrain_backward,
)
from ppkt.bench.context import SIZES, BenchContext
from ppkt.bench.inputs import load_pretrain_batches, surface_cloud
from ppkt.bench.runner import _jsonable, format_table
from ppkt.config import FinetuneConfig, PretrainConfig, load_config, to_dict
from ppkt.sparse import SparseTensor
from ppkt.training.data import num_input_features
from ppkt.training.pretrain_module import PPKTPretrainModule
from ppkt.training.seg_module import SegmentationModule
from tests.conftest import TINY_FINETUNE, TINY_PRETRAIN


def _check_parts(res: dict[str, Any], parts: tuple[str, ...]) -> None:
    shares = [res[f"{p}_share"] for p in parts]
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in shares)
    assert abs(sum(shares) - 1) < 1e-6
    assert res["steps"] >= 1 and res["step"]["median_s"] > 0
    for p in parts:
        assert math.isfinite(res[p]["median_s"]) and res[p]["median_s"] >= 0
        assert res[p]["n"] == res["steps"] and res[p]["threads"] == 1
    # the parts that do work take time
    for p in ("data", "kmap", "student", "loss", "optimizer"):
        assert res[p]["median_s"] > 0
    assert res["kernel_maps"] == 9 and res["voxels_per_batch"] > 0
    assert res["compute_step"]["median_s"] > 0 and math.isfinite(res["instrumented_over_plain"])


def _check_precision(p: dict[str, Any]) -> None:
    assert p["losses_finite"]
    assert math.isfinite(p["loss_fp32"]) and math.isfinite(p["loss_bf16"])
    assert p["loss_rel_diff"] < 0.1  # bfloat16 keeps ~3 significant digits
    assert p["step_fp32"]["median_s"] > 0 and p["step_bf16"]["median_s"] > 0
    assert p["bf16_speedup"] > 0


def test_step_profile_tiny(tiny_synth: Path, tmp_path: Path) -> None:
    """The case on the tiny dataset, and its figures through the bench's table and JSON."""
    common = [f"data.root={tiny_synth}", f"data.cache_dir={tmp_path / 'cache'}"]
    pre = load_config(PretrainConfig, None, [*common, *TINY_PRETRAIN])
    ft = load_config(FinetuneConfig, None, [*common, *TINY_FINETUNE])
    ctx = BenchContext(torch.device("cpu"), threads=1, sizes=SIZES["tiny"], log=lambda _: None)
    res = case_step_profile(ctx, pretrain_cfg=pre, finetune_cfg=ft)

    parts = {"machine", "threads", "pretrain", "pretrain_scene", "finetune", "kernels"}
    assert parts <= set(res)
    # the key figures, also at the top level (the printed table)
    assert res["pretrain_student_share"] == res["pretrain"]["student_share"]
    assert res["finetune_bf16_speedup"] == res["finetune"]["precision"]["bf16_speedup"]
    assert "pretrain_scene_bf16_speedup" not in res
    table = format_table(
        {"date": "-", "device": "cpu", "torch": "-", "threads": 1, "cases": {"step_profile": res}}
    )
    assert "pretrain_student_share" in table and "finetune_step" in table
    json.dumps(_jsonable(res))
    assert isinstance(res["machine"]["amx_bf16"], bool) and isinstance(res["machine"]["avx512_bf16"], bool)
    for name in ("pretrain", "pretrain_scene"):
        _check_parts(res[name], PRETRAIN_PARTS)
        assert res[name]["teacher_upl"]["median_s"] > 0 and res[name]["pairs_per_batch"] >= 2
    assert res["pretrain"]["pairing"] == "frame" and res["pretrain_scene"]["pairing"] == "scene"
    assert res["pretrain"]["batch_size"] == 1 and res["pretrain"]["teacher_cache"] is True
    _check_parts(res["finetune"], FINETUNE_PARTS)
    assert res["finetune"]["batch_size"] == 2
    _check_precision(res["pretrain"]["precision"])
    _check_precision(res["finetune"]["precision"])
    assert "precision" not in res["pretrain_scene"]
    k = res["kernels"]
    keys = ("matmul_fp32_gflops", "matmul_bf16_gflops", "matmul_bf16_speedup", "index_add_bf16_speedup")
    for key in (*keys, "conv_mm_new_bf16_speedup", "conv_mm_same_bf16_speedup"):
        assert math.isfinite(k[key]) and k[key] > 0


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _assert_same_grads(a: torch.nn.Module, b: torch.nn.Module) -> None:
    ga, gb = _grads(a), _grads(b)
    assert ga and set(ga) == set(gb)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("loss", ["ppnce", "distill"])
def test_the_profiled_pretraining_step_has_the_training_steps_gradients(
    tiny_synth: Path, tmp_path: Path, loss: str
) -> None:
    over = [f"data.root={tiny_synth}", f"data.cache_dir={tmp_path / 'cache'}", *TINY_PRETRAIN]
    cfg = load_config(PretrainConfig, None, [*over, f"loss.name={loss}", "teacher.cache=false"])
    batch = load_pretrain_batches(cfg, 2, 1)[0]
    torch.manual_seed(0)
    parts = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features)).train()
    plain = copy.deepcopy(parts)
    keys = map_keys(parts.student, batch.feats, batch.coords)
    assert len(keys) == 9
    clock = PartClock(PRETRAIN_PARTS, torch.device("cpu"))
    clock.new_step()
    got = pretrain_backward(parts, batch, keys, torch.Generator().manual_seed(3), clock)
    want = plain(batch, torch.Generator().manual_seed(3))["loss"]
    want.backward()
    torch.testing.assert_close(got, want.detach())
    _assert_same_grads(parts, plain)
    assert all(clock.steps[0][p] > 0 for p in ("kmap", "student", "teacher_upl", "loss"))


def test_the_profiled_finetuning_step_has_the_training_steps_gradients() -> None:
    coords = surface_cloud(2000, seed=2)
    g = torch.Generator().manual_seed(0)
    batch = SimpleNamespace(feats=torch.rand(coords.shape[0], 3, generator=g), coords=coords)
    target = torch.randint(-1, 4, (coords.shape[0],), generator=g)
    torch.manual_seed(0)
    parts = SegmentationModule(to_dict(FinetuneConfig()), 3, 4, ["a", "b", "c", "d"]).train()
    plain = copy.deepcopy(parts)

    def loss_fn(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, t, ignore_index=-1)

    clock = PartClock(FINETUNE_PARTS, torch.device("cpu"))
    clock.new_step()
    keys = map_keys(parts.student, batch.feats, batch.coords)
    got = finetune_backward(parts, batch, target, keys, loss_fn, clock)
    want = loss_fn(plain.head(plain.student(SparseTensor(batch.feats, batch.coords))), target)
    want.backward()
    torch.testing.assert_close(got, want.detach())
    _assert_same_grads(parts, plain)
