"""The benchmark cases of ``ppkt bench``; each takes a :class:`BenchContext` and returns a dict of figures.

A comparison whose reference library cannot be imported (or fails) is reported as
``"skipped": "<reason>"`` inside that comparison's entry; ppkt's own figures are always measured. Timings
are :func:`~ppkt.bench.timing.time_fn` dicts (``median_s``, ``iqr_s``, ``min_s``, ``max_s``, ``n``,
``threads``, ``device``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ppkt.bench.flops import TRAIN_STEP_FACTOR, count_conv_flops
from ppkt.bench.timing import num_threads, time_fn
from ppkt.models.student import SparseUNet, build_student
from ppkt.sparse import SparseTensor, SubMConv3d, set_backend
from ppkt.sparse.spconv import import_spconv


@dataclass(frozen=True)
class Sizes:
    """Problem sizes and repeat counts of one bench run (presets: :data:`SIZES`)."""

    layer_voxels: tuple[int, ...] = (50_000, 200_000)
    layer_channels: tuple[int, ...] = (32, 64)
    #: unet_step / gemm_efficiency input: ``unet_frames`` frames of the default pretraining data through
    #: the default training transform, or (``unet_frames == 0``) a synthetic surface cloud of
    #: ``unet_voxels`` voxels with random colours (no dataset needed)
    unet_frames: int = 8
    unet_voxels: int = 0
    matmul_n: int = 2048
    #: pretraining batches pre-loaded (steps cycle over them); ``None``: the config's batch size
    pretrain_batches: int = 3
    pretrain_batch_size: int | None = None
    memory_frames: int = 8
    frame_hw: tuple[int, int] = (480, 640)
    repeats: int = 5
    warmup: int = 1
    #: a timing stops repeating once its timed calls used this many seconds
    max_seconds: float = 20.0


SIZES: dict[str, Sizes] = {
    "full": Sizes(),
    "quick": Sizes(
        layer_voxels=(10_000, 40_000),
        unet_frames=2,
        matmul_n=1024,
        pretrain_batches=2,
        pretrain_batch_size=2,
        memory_frames=2,
        repeats=3,
        max_seconds=4.0,
    ),
    # for tests: seconds in all, no dataset needed by sparse_conv_layer / unet_step / gemm_efficiency
    "tiny": Sizes(
        layer_voxels=(2_000,),
        layer_channels=(8,),
        unet_frames=0,
        unet_voxels=3_000,
        matmul_n=128,
        pretrain_batches=1,
        pretrain_batch_size=1,
        memory_frames=1,
        frame_hw=(60, 80),
        repeats=2,
        max_seconds=1.0,
    ),
}


@dataclass
class BenchContext:
    """What every case needs: the device, the configured thread count, the sizes, and a memo shared by the
    cases of one run (so a batch or a timing measured by one case is reused by the next)."""

    device: torch.device
    threads: int
    sizes: Sizes
    quick: bool = False
    memo: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def time(self, fn: Callable[[], Any], setup: Callable[[], Any] | None = None) -> dict[str, Any]:
        s = self.sizes
        return time_fn(
            fn, repeats=s.repeats, warmup=s.warmup, device=self.device, setup=setup, max_seconds=s.max_seconds
        )


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or "median_s" not in a or "median_s" not in b or b["median_s"] <= 0:
        return None
    return float(a["median_s"] / b["median_s"])


def _geomean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    return float(math.exp(sum(math.log(v) for v in vals) / len(vals))) if vals else None


# ---------------------------------------------------------------------------------------------- inputs
def _rect(origin: Tensor, u: Tensor, v: Tensor, spacing: float) -> Tensor:
    nu = max(2, math.ceil(float(u.norm()) / spacing) + 1)
    nv = max(2, math.ceil(float(v.norm()) / spacing) + 1)
    s = torch.linspace(0, 1, nu, dtype=torch.float64)
    t = torch.linspace(0, 1, nv, dtype=torch.float64)
    ss, tt = torch.meshgrid(s, t, indexing="ij")
    return origin + ss.reshape(-1, 1) * u + tt.reshape(-1, 1) * v


def _surface_points(scale: float, seed: int) -> Tensor:
    """Points (voxel units) on a room's floor and walls, random boxes' faces and tilted planes, for a room
    of ``scale`` voxels; the layout depends only on ``seed`` (the count of voxels grows as ``scale²``)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    L, H = scale, 0.5 * scale
    e = torch.eye(3, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    sp = 0.5
    parts = [
        _rect(zero, L * e[0], L * e[1], sp),  # floor
        _rect(zero, L * e[0], H * e[2], sp),  # walls
        _rect(L * e[1], L * e[0], H * e[2], sp),
        _rect(zero, L * e[1], H * e[2], sp),
        _rect(L * e[0], L * e[1], H * e[2], sp),
    ]
    for _ in range(6):  # furniture-like boxes standing on the floor
        size = (0.08 + 0.17 * rand(3)) * torch.tensor([L, L, H], dtype=torch.float64)
        lo = torch.cat([rand(2) * (L - size[:2]), torch.zeros(1, dtype=torch.float64)])
        for a in range(3):
            b, c = (a + 1) % 3, (a + 2) % 3
            for side in (0.0, 1.0):
                o = lo + side * size[a] * e[a]
                parts.append(_rect(o, size[b] * e[b], size[c] * e[c], sp))
    for _ in range(2):  # tilted planes
        o = rand(3) * torch.tensor([L, L, H], dtype=torch.float64) * 0.5
        u = torch.nn.functional.normalize(rand(3) - 0.5, dim=0) * 0.4 * L
        w = torch.nn.functional.normalize(torch.linalg.cross(u, rand(3) - 0.5), dim=0) * 0.3 * L
        parts.append(_rect(o, u, w, sp))
    return torch.cat(parts)


def surface_cloud(voxels: int, seed: int = 0) -> Tensor:
    """A surface-like sparse voxel set of about ``voxels`` voxels: int32 ``[N, 4]`` ``(0, x, y, z)``,
    non-negative, unique, sorted (a room with boxes and tilted planes, voxelized at 1 voxel unit)."""

    def build(scale: float) -> Tensor:
        grid = torch.floor(_surface_points(scale, seed)).long()
        grid = grid - grid.amin(dim=0)
        uniq = torch.unique(grid, dim=0)
        return torch.cat([torch.zeros(len(uniq), 1, dtype=torch.long), uniq], dim=1).to(torch.int32)

    base = 64.0
    n0 = build(base).shape[0]
    return build(base * math.sqrt(max(voxels, 1) / n0))


def _default_pretrain_config() -> Any:
    from ppkt.config import PretrainConfig

    return PretrainConfig()


def load_pretrain_batches(
    cfg: Any, batch_size: int, n_batches: int, feature_cache: Any = None, seed: int = 0
) -> list[Any]:
    """``n_batches`` batches of ``batch_size`` training frames of ``cfg.data`` (evenly spread over the
    training split, deterministic for ``seed``) through the training transform, held in memory."""
    from ppkt.training.data import make_loader

    frames = pretrain_frames(cfg, batch_size * n_batches)
    torch.manual_seed(seed)
    loader = make_loader(cfg.data, frames, batch_size, True, num_workers=0, feature_cache=feature_cache)
    out = []
    for b in loader:
        if b is not None:
            out.append(b)
        if len(out) == n_batches:
            break
    if not out:
        raise RuntimeError("no pretraining batch could be loaded")
    return out


def pretrain_frames(cfg: Any, n: int) -> list[Any]:
    from ppkt.training.data import frame_splits

    train = frame_splits(cfg.data, verbose=False).train
    step = max(1, len(train) // max(n, 1))
    return train[::step][:n]


def _unet_input(ctx: BenchContext) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """``(feats [M, 3], coords [M, 4])`` on the device, and a description, memoised per run."""
    if "unet_input" not in ctx.memo:
        s = ctx.sizes
        if s.unet_frames > 0:
            batch = load_pretrain_batches(_default_pretrain_config(), s.unet_frames, 1)[0]
            coords, feats = batch.coords, batch.feats
            desc: dict[str, Any] = {
                "source": f"{s.unet_frames} frames of the default pretraining data (training transform)"
            }
        else:
            coords = surface_cloud(s.unet_voxels, seed=1)
            feats = torch.rand(coords.shape[0], 3, generator=torch.Generator().manual_seed(0)) - 0.5
            desc = {"source": "synthetic surface cloud, random colours"}
        desc["voxels"] = int(coords.shape[0])
        ctx.memo["unet_input"] = (feats.to(ctx.device), coords.to(ctx.device), desc)
    feats, coords, desc = ctx.memo["unet_input"]
    return feats, coords, dict(desc)


def _student(ctx: BenchContext, in_channels: int) -> SparseUNet:

    torch.manual_seed(0)
    return build_student("unet_small", in_channels).to(ctx.device).train()


def _unet_step_fn(net: torch.nn.Module, feats: Tensor, coords: Tensor) -> Callable[[], None]:
    def step() -> None:
        net.zero_grad(set_to_none=True)
        out = net(SparseTensor(feats, coords))  # a fresh kernel-map cache every step, as in training
        out.sum().backward()

    return step


def _ppkt_unet_timing(ctx: BenchContext) -> dict[str, Any]:
    """ppkt's unet_small forward + backward at the configured threads (memoised per run)."""
    if "unet_ppkt" not in ctx.memo:
        feats, coords, _ = _unet_input(ctx)
        net = _student(ctx, feats.shape[1])
        with num_threads(ctx.threads):
            ctx.memo["unet_ppkt"] = ctx.time(_unet_step_fn(net, feats, coords))
    return dict(ctx.memo["unet_ppkt"])


# ---------------------------------------------------------------------------------- sparse_conv_layer
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
            configs.append(_layer_config(ctx, sp, why, coords, ch))
    out: dict[str, Any] = {
        "note": "ratio_vs_spconv: geometric mean over configs of ppkt/spconv median time, kernel maps "
        "cached, both at 1 thread on the CPU; *_with_kmap: maps rebuilt every call",
        "configs": configs,
    }
    ratios = [c.get("ratio_vs_spconv") for c in configs]
    if any(r is not None for r in ratios):
        out["ratio_vs_spconv"] = _geomean([r for r in ratios if r is not None])
        out["ratio_vs_spconv_with_kmap"] = _geomean(
            [r for c in configs if (r := c.get("ratio_vs_spconv_with_kmap")) is not None]
        )
    else:
        out["skipped"] = why or next((c["spconv"]["skipped"] for c in configs if "spconv" in c), "")
    return out


def _layer_config(ctx: BenchContext, sp: Any, why: str | None, coords: Tensor, ch: int) -> dict[str, Any]:
    dev = ctx.device
    g = torch.Generator().manual_seed(ch)
    n = int(coords.shape[0])
    feats = torch.randn(n, ch, generator=g).to(dev)
    grad_out = torch.randn(n, ch, generator=g).to(dev)
    torch.manual_seed(ch)
    conv = SubMConv3d(ch, ch, 3).to(dev)
    feats_leaf = feats.clone().requires_grad_(True)
    x = SparseTensor(feats_leaf, coords)
    kmap = x.cache.submanifold(1, 3)
    res: dict[str, Any] = {"label": f"{n}vox_{ch}ch", "voxels": n, "channels": ch, "pairs": kmap.num_pairs}

    def zero() -> None:
        feats_leaf.grad = None
        conv.weight.grad = None

    def step() -> None:
        conv(x).feats.backward(grad_out)

    def step_fresh() -> None:
        conv(SparseTensor(feats_leaf, coords)).feats.backward(grad_out)

    def build() -> None:
        SparseTensor(feats, coords).cache.submanifold(1, 3)

    one = 1 if not ctx.cuda else None
    suffix = "_1t" if not ctx.cuda else ""
    with num_threads(one):
        res["ppkt" + suffix] = ctx.time(step, zero)
        res["ppkt_kmap" + suffix] = ctx.time(build)
        res["ppkt_with_kmap" + suffix] = ctx.time(step_fresh, zero)
    if not ctx.cuda:
        if ctx.threads != 1:
            with num_threads(ctx.threads):
                res["ppkt"] = ctx.time(step, zero)
        else:
            res["ppkt"] = res["ppkt_1t"]
    # reference output for the comparison
    zero()
    ref_out = conv(x).feats
    ref_out.backward(grad_out)
    assert feats_leaf.grad is not None and conv.weight.grad is not None
    ref_gin, ref_gw = feats_leaf.grad.clone(), conv.weight.grad.clone()

    if sp is None:
        res["spconv"] = {"skipped": why}
        return res
    try:
        with num_threads(one):
            sconv = set_backend(copy.deepcopy(conv), "spconv")  # the same weights, run by spconv
            sfeats = feats.clone().requires_grad_(True)
            xs = SparseTensor(sfeats, coords)
            sconv.weight.grad = None
            y = sconv(xs).feats  # builds and caches spconv's pairs in xs's cache
            y.backward(grad_out)
            assert sfeats.grad is not None and sconv.weight.grad is not None
            res["max_abs_diff"] = float((y.detach() - ref_out.detach()).abs().max())
            res["max_abs_diff_grad_input"] = float((sfeats.grad - ref_gin).abs().max())
            res["max_rel_diff_grad_weight"] = float(
                (sconv.weight.grad - ref_gw).abs().max() / ref_gw.abs().max().clamp_min(1e-30)
            )

            def szero() -> None:
                sfeats.grad = None
                sconv.weight.grad = None

            def sstep() -> None:
                sconv(xs).feats.backward(grad_out)

            def sstep_fresh() -> None:
                sconv(SparseTensor(sfeats, coords)).feats.backward(grad_out)

            res["spconv" + suffix] = ctx.time(sstep, szero)
            res["spconv_with_kmap" + suffix] = ctx.time(sstep_fresh, szero)
        res["ratio_vs_spconv"] = _ratio(res["ppkt" + suffix], res["spconv" + suffix])
        res["ratio_vs_spconv_with_kmap"] = _ratio(
            res["ppkt_with_kmap" + suffix], res["spconv_with_kmap" + suffix]
        )
    except Exception as e:  # spconv's CPU path is fragile across versions: report, don't crash
        res["spconv"] = {"skipped": f"spconv failed: {_err(e)}"}
    return res


# ---------------------------------------------------------------------------------------- unet_step
def case_unet_step(ctx: BenchContext) -> dict[str, Any]:
    """The default student (``unet_small``) forward + backward (loss = sum of outputs), a fresh kernel-map
    cache every step (maps included, as in training); the map building is also timed alone."""
    feats, coords, desc = _unet_input(ctx)
    ctx.log(f"[bench] unet_step: {desc['voxels']} voxels")
    res: dict[str, Any] = dict(desc)
    res["ppkt"] = _ppkt_unet_timing(ctx)
    net = _student(ctx, feats.shape[1])
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
        res["ratio_vs_spconv"] = _ratio(res["ppkt" + suffix], res["spconv" + suffix])
    except Exception as e:
        res["spconv"] = {"skipped": f"spconv failed: {_err(e)}"}
    return res


# ----------------------------------------------------------------------------------- gemm_efficiency
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
    feats, coords, desc = _unet_input(ctx)
    net = _student(ctx, feats.shape[1])
    with torch.no_grad():
        counts = count_conv_flops(net, lambda: net(SparseTensor(feats, coords)))
    step_flops = TRAIN_STEP_FACTOR * counts["forward_flops"]
    timing = _ppkt_unet_timing(ctx)
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


# ------------------------------------------------------------------------------------ frame_pipeline
def _shared_7scenes() -> Path | None:
    env = os.environ.get("PPKT_BENCH_7SCENES")
    candidates = [Path(env)] if env else []
    candidates += [
        Path.cwd().parent / "shared" / "data" / "7scenes-redkitchen",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "7scenes-redkitchen",
    ]
    for c in candidates:
        if (c / "camera-intrinsics.txt").is_file():
            return c
    return None


def _synthetic_frame(h: int, w: int) -> Any:
    """A 640×480-style frame of a box room seen from inside (analytic depth, random colours)."""
    from ppkt.data.rgbd_folder import Frame

    f = 585.0 * w / 640
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u)], axis=-1)
    # distance to the walls of a box [-2, 2] x [-1.2, 1.3] x [0, 4] from the origin, along each ray
    t = np.full((h, w), np.inf)
    for axis, lo, hi in ((0, -2.0, 2.0), (1, -1.2, 1.3), (2, 0.0, 4.0)):
        d = rays[..., axis]
        with np.errstate(divide="ignore"):
            for plane in (lo, hi):
                tp = plane / d
                t = np.where((tp > 0) & (tp < t), tp, t)
    depth = t.astype(np.float32)  # z-depth along the optical axis equals t (rays have z = 1)
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pose = np.eye(4)
    return Frame("synthetic", "frame-000000", color, depth, K, pose)


def case_frame_pipeline(ctx: BenchContext) -> dict[str, Any]:
    """One RGB-D frame (in memory) → world points with their pixel → 2.5 cm voxels with the inverse map."""
    from ppkt.data.frames import frame_to_sample
    from ppkt.geometry import voxelize

    root = _shared_7scenes()
    if root is not None and ctx.sizes.frame_hw == (480, 640):
        from ppkt.data.sources import open_scenes

        scene = open_scenes(root, "7scenes")[0]
        frame = scene.read(0)
        source = f"7scenes {root.name}/{frame.name}"
    else:
        frame = _synthetic_frame(*ctx.sizes.frame_hw)
        source = "synthetic box room"
    voxel, min_depth, max_depth = 0.025, 0.1, 6.0

    def ppkt_run() -> tuple[Any, Any]:
        s = frame_to_sample(frame, min_depth=min_depth, max_depth=max_depth)
        return s, voxelize(s.points, voxel)

    with num_threads(ctx.threads):
        sample, vox = ppkt_run()
        timing = ctx.time(ppkt_run)
    res: dict[str, Any] = {
        "source": source,
        "image": list(frame.shape),
        "voxel_size": voxel,
        "points": int(sample.points.shape[0]),
        "voxels": int(vox.coords.shape[0]),
        "ppkt": timing,
        "note": "always on the CPU (frame_to_sample works on the frame's numpy arrays); reading and "
        "decoding the files excluded",
    }
    try:
        import open3d as o3d
    except Exception as e:
        res["open3d"] = {"skipped": f"open3d not importable: {_err(e)}"}
        return res
    try:
        h, w = frame.shape
        K = frame.K
        intr = o3d.camera.PinholeCameraIntrinsic(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        extrinsic = np.linalg.inv(frame.pose)  # world-to-camera
        depth = np.where((frame.depth > min_depth) & (frame.depth <= max_depth), frame.depth, 0)
        depth = np.ascontiguousarray(depth.astype(np.float32))
        color = np.ascontiguousarray(frame.color)

        def o3d_run() -> Any:
            rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
                o3d.geometry.Image(color),
                o3d.geometry.Image(depth),
                depth_scale=1.0,
                depth_trunc=max_depth,
                convert_rgb_to_intensity=False,
            )
            pcd = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, intr, extrinsic)
            return pcd.voxel_down_sample_and_trace(voxel, pcd.get_min_bound(), pcd.get_max_bound(), False)

        o3d_run()
        res["open3d"] = ctx.time(o3d_run)
        res["ratio_vs_open3d"] = _ratio(timing, res["open3d"])
    except Exception as e:
        res["open3d"] = {"skipped": f"open3d failed: {_err(e)}"}
    return res


# ------------------------------------------------------------------------------- pretrain_throughput
def case_pretrain_throughput(ctx: BenchContext) -> dict[str, Any]:
    """Frames/s of the full pretraining step (module forward + backward + AdamW step) on the default
    config's data, live teacher vs teacher-feature cache; batches pre-loaded (data loading excluded)."""
    from ppkt.training.data import num_input_features
    from ppkt.training.feature_cache import fill_feature_cache
    from ppkt.training.optim import build_optimizer, trainable
    from ppkt.training.pretrain_module import PPKTPretrainModule

    cfg = _default_pretrain_config()
    bs = ctx.sizes.pretrain_batch_size or cfg.trainer.batch_size
    nb = ctx.sizes.pretrain_batches
    torch.manual_seed(0)
    module = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features)).to(ctx.device)
    module.train()
    o = cfg.optim
    opt = build_optimizer(
        o.name, trainable([module.student, module.head, module.upl]), o.lr, o.weight_decay, o.momentum
    )
    ctx.log(f"[bench] pretrain_throughput: {nb} batches of {bs} frames")
    live = [b.to(ctx.device) for b in load_pretrain_batches(cfg, bs, nb)]
    # the fill runs the teacher on CPU images: reuse the module's teacher only when it is on the CPU
    cache, stats = fill_feature_cache(
        cfg, pretrain_frames(cfg, bs * nb), teacher=None if ctx.cuda else module.teacher, verbose=False
    )
    cached = [b.to(ctx.device) for b in load_pretrain_batches(cfg, bs, nb, feature_cache=cache)]

    def cycle(batches: list[Any]) -> Iterator[Any]:
        i = 0
        while True:
            yield batches[i % len(batches)]
            i += 1

    def measure(batches: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        it = cycle(batches)

        def step() -> None:
            batch = next(it)
            opt.zero_grad(set_to_none=True)
            module(batch)["loss"].backward()
            opt.step()

        it_t = cycle(batches)

        def teacher() -> None:
            module.teacher_features(next(it_t))

        with num_threads(ctx.threads):
            return ctx.time(step), ctx.time(teacher)

    step_live, teacher_live = measure(live)
    step_cached, teacher_cached = measure(cached)
    return {
        "batch_size": bs,
        "batches": nb,
        "voxels_per_batch": float(np.mean([int(b.coords.shape[0]) for b in live])),
        "image_size": list(cfg.data.image_size),
        "teacher": cfg.teacher.name,
        "note": "data loading excluded (batches pre-loaded in memory; with the cache, the crop/resize of "
        "the cached maps happens in the data loader and is excluded too)",
        "step": step_live,
        "step_cached": step_cached,
        "teacher_time": teacher_live,
        "teacher_time_cached": teacher_cached,
        "fps": bs / step_live["median_s"],
        "fps_cached": bs / step_cached["median_s"],
        "teacher_share": teacher_live["median_s"] / step_live["median_s"],
        "teacher_share_cached": teacher_cached["median_s"] / step_cached["median_s"],
        "cache_fill": {k: stats[k] for k in ("frames", "computed", "reused", "seconds")},
    }


# ------------------------------------------------------------------------------------------ memory
def case_memory(ctx: BenchContext) -> dict[str, Any]:
    """Peak RSS of one pretraining step (``memory_frames`` frames, default config) in a fresh process."""
    cmd = [
        sys.executable, "-m", "ppkt.bench.memory",
        "--frames", str(ctx.sizes.memory_frames),
        "--device", str(ctx.device),
        "--threads", str(ctx.threads),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(ctx.threads))
    ctx.log(f"[bench] memory: {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"memory subprocess failed (exit {proc.returncode}): {' | '.join(tail)}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


#: name -> case function, in run order
CASES: dict[str, Callable[[BenchContext], dict[str, Any]]] = {
    "sparse_conv_layer": case_sparse_conv_layer,
    "unet_step": case_unet_step,
    "gemm_efficiency": case_gemm_efficiency,
    "frame_pipeline": case_frame_pipeline,
    "pretrain_throughput": case_pretrain_throughput,
    "memory": case_memory,
}
