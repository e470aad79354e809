"""``ppkt bench`` case ``step_profile`` at tiny sizes on the tiny synthetic dataset: every part of the
pretraining and fine-tuning steps is timed, the shares add up to the step, the figures are finite, and the
bf16 loss stays close to the float32 one (no speed assertions)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ppkt.bench.cases.step_profile import FINETUNE_PARTS, PRETRAIN_PARTS, case_step_profile
from ppkt.bench.context import SIZES, BenchContext
from ppkt.config import FinetuneConfig, PretrainConfig, load_config
from tests.conftest import TINY_FINETUNE, TINY_PRETRAIN


def _check_parts(res: dict[str, Any], parts: tuple[str, ...]) -> None:
    shares = [res[f"{p}_share"] for p in parts]
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in shares)
    assert abs(sum(shares) - 1) < 1e-6
    assert res["steps"] >= 1 and res["step"]["median_s"] > 0
    for p in parts:
        assert math.isfinite(res[p]["median_s"]) and res[p]["median_s"] >= 0
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
