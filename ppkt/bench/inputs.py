"""Inputs of the ``ppkt bench`` cases: a synthetic surface-like voxel cloud, batches of the default
pretraining data through the training transform, and the memoised U-Net input of a run."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ppkt.bench.context import BenchContext


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


def default_pretrain_config() -> Any:
    """The default pretraining config (its data, model and optimizer settings)."""
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
    loader = make_loader(
        cfg.data, frames, batch_size, True, num_workers=0, feature_cache=feature_cache, seed=seed
    )
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


def unet_input(ctx: BenchContext) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """``(feats [M, 3], coords [M, 4])`` on the device, and a description, memoised per run."""
    if "unet_input" not in ctx.memo:
        s = ctx.sizes
        if s.unet_frames > 0:
            batch = load_pretrain_batches(default_pretrain_config(), s.unet_frames, 1)[0]
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
