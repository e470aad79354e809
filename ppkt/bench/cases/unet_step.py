"""``unet_step``: the default student's training step (forward + backward), its kernel maps alone, and the
same step on the ``spconv`` backend with the same weights."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ppkt.bench.context import BenchContext, error_text, time_ratio
from ppkt.bench.inputs import unet_input
from ppkt.bench.timing import num_threads
from ppkt.models.student import SparseUNet, build_student
from ppkt.sparse import SparseTensor, set_backend
from ppkt.sparse.spconv import import_spconv


def bench_student(ctx: BenchContext, in_channels: int) -> SparseUNet:
    """The default student (``unet_small``), seeded, on the device, in train mode."""
    torch.manual_seed(0)
    return build_student("unet_small", in_channels).to(ctx.device).train()


def _unet_step_fn(net: torch.nn.Module, feats: Tensor, coords: Tensor) -> Callable[[], None]:
    def step() -> None:
        net.zero_grad(set_to_none=True)
        out = net(SparseTensor(feats, coords))  # a fresh kernel-map cache every step, as in training
        out.sum().backward()

    return step


def ppkt_unet_timing(ctx: BenchContext) -> dict[str, Any]:
    """ppkt's unet_small forward + backward at the configured threads (memoised per run)."""
    if "unet_ppkt" not in ctx.memo:
        feats, coords, _ = unet_input(ctx)
        net = bench_student(ctx, feats.shape[1])
        with num_threads(ctx.threads):
            ctx.memo["unet_ppkt"] = ctx.time(_unet_step_fn(net, feats, coords))
    return dict(ctx.memo["unet_ppkt"])


def case_unet_step(ctx: BenchContext) -> dict[str, Any]:
    """The default student (``unet_small``) forward + backward (loss = sum of outputs), a fresh kernel-map
    cache every step (maps included, as in training); the map building is also timed alone."""
    feats, coords, desc = unet_input(ctx)
    ctx.log(f"[bench] unet_step: {desc['voxels']} voxels")
    res: dict[str, Any] = dict(desc)
    res["ppkt"] = ppkt_unet_timing(ctx)
    net = bench_student(ctx, feats.shape[1])
    step = _unet_step_fn(net, feats, coords)

    # which maps a step builds (in build order), then time building just those
    probe = SparseTensor(feats, coords)
    with torch.no_grad():
        net(probe)
    keys = list(probe.cache.build_counts)
    res["kernel_maps"] = len(keys)

    def build_maps() -> None:
        cache = SparseTensor(feats, coords).cache
        for kind, stride, k, s, p in keys:
            if kind == "subm":
                cache.submanifold(stride, k)
            else:
                cache.downsample(stride, k, s, p)

    with num_threads(ctx.threads):
        res["kmap"] = ctx.time(build_maps)
    res["kmap_share"] = res["kmap"]["median_s"] / res["ppkt"]["median_s"]
    suffix = ""
    if not ctx.cuda:
        suffix = "_1t"
        if ctx.threads != 1:
            with num_threads(1):
                res["ppkt_1t"] = ctx.time(step)
        else:
            res["ppkt_1t"] = res["ppkt"]

    sp, why = import_spconv()
    if sp is None:
        res["spconv"] = {"skipped": why}
        return res
    try:
        with num_threads(1 if not ctx.cuda else None):
            mirror = set_backend(copy.deepcopy(net), "spconv")  # the same weights, run by spconv
            with torch.no_grad():
                a = net(SparseTensor(feats, coords))
                b = mirror(SparseTensor(feats, coords))
            res["max_abs_diff"] = float((a - b).abs().max())
            res["max_abs_output"] = float(a.abs().max())

            def sstep() -> None:
                mirror.zero_grad(set_to_none=True)
                mirror(SparseTensor(feats, coords)).sum().backward()

            res["spconv" + suffix] = ctx.time(sstep)
        res["ratio_vs_spconv"] = time_ratio(res["ppkt" + suffix], res["spconv" + suffix])
    except Exception as e:
        res["spconv"] = {"skipped": f"spconv failed: {error_text(e)}"}
    return res
