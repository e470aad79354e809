"""``gemm_efficiency``: useful conv FLOP/s of the ``unet_step`` step as a fraction of a dense matmul's."""

from __future__ import annotations

from typing import Any

import torch

from ppkt.bench.cases.unet_step import bench_student, ppkt_unet_timing
from ppkt.bench.context import BenchContext
from ppkt.bench.flops import TRAIN_STEP_FACTOR, count_conv_flops
from ppkt.bench.inputs import unet_input
from ppkt.bench.timing import num_threads
from ppkt.sparse import SparseTensor


def matmul_gflops(ctx: BenchContext, n: int) -> tuple[float, dict[str, Any]]:
    """Dense fp32 ``n×n @ n×n`` GFLOP/s on the context's device and threads."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(ctx.device)
    b = torch.randn(n, n, generator=g).to(ctx.device)
    with num_threads(ctx.threads):
        t = ctx.time(lambda: torch.mm(a, b))
    return 2 * n**3 / t["median_s"] / 1e9, t


def case_gemm_efficiency(ctx: BenchContext) -> dict[str, Any]:
    """Useful conv FLOPs of the unet_step step (``3 · Σ 2 · pairs · Cin · Cout``) per second, as a fraction
    of a large dense fp32 matmul's FLOP/s at the same threads."""
    feats, coords, desc = unet_input(ctx)
    net = bench_student(ctx, feats.shape[1])
    with torch.no_grad():
        counts = count_conv_flops(net, lambda: net(SparseTensor(feats, coords)))
    step_flops = TRAIN_STEP_FACTOR * counts["forward_flops"]
    timing = ppkt_unet_timing(ctx)
    gflops, mm_timing = matmul_gflops(ctx, ctx.sizes.matmul_n)
    achieved = step_flops / timing["median_s"] / 1e9
    return {
        **desc,
        "conv_calls": counts["convs"],
        "pairs": counts["pairs"],
        "flops_per_step": step_flops,
        "step": timing,
        "achieved_gflops": achieved,
        "matmul_n": ctx.sizes.matmul_n,
        "matmul": mm_timing,
        "matmul_gflops": gflops,
        "efficiency": achieved / gflops,
    }
