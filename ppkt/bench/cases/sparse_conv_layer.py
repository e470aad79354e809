"""``sparse_conv_layer``: one 3×3×3 submanifold conv, forward + backward, ppkt (``torch`` backend) vs the
same conv on the ``spconv`` backend, kernel maps cached and rebuilt."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from ppkt.bench.context import BenchContext, error_text, geomean, time_ratio
from ppkt.bench.inputs import surface_cloud
from ppkt.bench.timing import num_threads
from ppkt.sparse import SparseTensor, SubMConv3d, set_backend
from ppkt.sparse.spconv import import_spconv


def case_sparse_conv_layer(ctx: BenchContext) -> dict[str, Any]:
    """One 3×3×3 SubMConv3d (Cin = Cout), forward + backward, ppkt vs spconv, with kernel maps cached (the
    per-layer cost inside a network) and, separately, the cost of building them."""
    sp, why = import_spconv()
    configs = []
    for n in ctx.sizes.layer_voxels:
        coords_cpu = surface_cloud(n, seed=0)
        coords = coords_cpu.to(ctx.device)
        nvox = int(coords.shape[0])
        for ch in ctx.sizes.layer_channels:
            ctx.log(f"[bench] sparse_conv_layer: {nvox} voxels, {ch} channels")
            configs.append(_layer_config(ctx, why if sp is None else None, coords, ch))
    out: dict[str, Any] = {
        "note": "ratio_vs_spconv: geometric mean over configs of ppkt/spconv median time, kernel maps "
        "cached, both at 1 thread on the CPU; *_with_kmap: maps rebuilt every call",
        "configs": configs,
    }
    ratios = [c.get("ratio_vs_spconv") for c in configs]
    if any(r is not None for r in ratios):
        out["ratio_vs_spconv"] = geomean([r for r in ratios if r is not None])
        out["ratio_vs_spconv_with_kmap"] = geomean(
            [r for c in configs if (r := c.get("ratio_vs_spconv_with_kmap")) is not None]
        )
    else:
        out["skipped"] = why or next((c["spconv"]["skipped"] for c in configs if "spconv" in c), "")
    return out


class _ConvRun:
    """Forward + backward of ``conv`` on one input: :meth:`step` reuses the input's cached maps (or spconv
    pairs), :meth:`step_fresh` starts from a new input (rebuilt), :meth:`zero` clears the gradients."""

    def __init__(self, conv: SubMConv3d, feats: Tensor, coords: Tensor, grad_out: Tensor) -> None:
        self.conv, self.coords, self.grad_out = conv, coords, grad_out
        self.feats = feats.clone().requires_grad_(True)
        self.x = SparseTensor(self.feats, coords)

    def zero(self) -> None:
        self.feats.grad = None
        self.conv.weight.grad = None

    def step(self) -> None:
        self.conv(self.x).feats.backward(self.grad_out)

    def step_fresh(self) -> None:
        self.conv(SparseTensor(self.feats, self.coords)).feats.backward(self.grad_out)

    def result(self) -> tuple[Tensor, Tensor, Tensor]:
        """One step from zero gradients: the output, the input's and the weight's gradients."""
        self.zero()
        out = self.conv(self.x).feats
        out.backward(self.grad_out)
        assert self.feats.grad is not None and self.conv.weight.grad is not None
        return out.detach(), self.feats.grad.clone(), self.conv.weight.grad.clone()


def _layer_config(ctx: BenchContext, skip: str | None, coords: Tensor, ch: int) -> dict[str, Any]:
    """One config; ``skip``: why spconv is unavailable (``None``: compare with it)."""
    dev = ctx.device
    g = torch.Generator().manual_seed(ch)
    n = int(coords.shape[0])
    feats = torch.randn(n, ch, generator=g).to(dev)
    grad_out = torch.randn(n, ch, generator=g).to(dev)
    torch.manual_seed(ch)
    conv = SubMConv3d(ch, ch, 3).to(dev)
    run = _ConvRun(conv, feats, coords, grad_out)
    kmap = run.x.cache.submanifold(1, 3)
    res: dict[str, Any] = {"label": f"{n}vox_{ch}ch", "voxels": n, "channels": ch, "pairs": kmap.num_pairs}

    def build() -> None:
        SparseTensor(feats, coords).cache.submanifold(1, 3)

    one = 1 if not ctx.cuda else None
    suffix = "_1t" if not ctx.cuda else ""
    with num_threads(one):
        res["ppkt" + suffix] = ctx.time(run.step, run.zero)
        res["ppkt_kmap" + suffix] = ctx.time(build)
        res["ppkt_with_kmap" + suffix] = ctx.time(run.step_fresh, run.zero)
    if not ctx.cuda:
        if ctx.threads != 1:
            with num_threads(ctx.threads):
                res["ppkt"] = ctx.time(run.step, run.zero)
        else:
            res["ppkt"] = res["ppkt_1t"]
    ref_out, ref_gin, ref_gw = run.result()  # reference for the comparison

    if skip is not None:
        res["spconv"] = {"skipped": skip}
        return res
    try:
        with num_threads(one):
            # the same weights, run by spconv; its first step builds and caches spconv's pairs in srun.x
            srun = _ConvRun(set_backend(copy.deepcopy(conv), "spconv"), feats, coords, grad_out)
            out, gin, gw = srun.result()
            res["max_abs_diff"] = float((out - ref_out).abs().max())
            res["max_abs_diff_grad_input"] = float((gin - ref_gin).abs().max())
            res["max_rel_diff_grad_weight"] = float(
                (gw - ref_gw).abs().max() / ref_gw.abs().max().clamp_min(1e-30)
            )
            res["spconv" + suffix] = ctx.time(srun.step, srun.zero)
            res["spconv_with_kmap" + suffix] = ctx.time(srun.step_fresh, srun.zero)
        res["ratio_vs_spconv"] = time_ratio(res["ppkt" + suffix], res["spconv" + suffix])
        res["ratio_vs_spconv_with_kmap"] = time_ratio(
            res["ppkt_with_kmap" + suffix], res["spconv_with_kmap" + suffix]
        )
    except Exception as e:  # spconv's CPU path is fragile across versions: report, don't crash
        res["spconv"] = {"skipped": f"spconv failed: {error_text(e)}"}
    return res
