"""Voxelization: points → integer voxel coordinates, the point→voxel map and a representative per voxel.

Voxel ``i`` of a point ``p`` is ``floor(p / voxel_size)``. Voxels are returned sorted by their packed key
(batch, x, y, z), so the result is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Representative = Literal["first", "random", "centre"]


@dataclass
class Voxelization:
    """Result of :func:`voxelize` for ``N`` points falling into ``M`` voxels.

    Attributes:
        coords: ``[M, 3]`` int32 voxel coordinates, or ``[M, 4]`` (batch, x, y, z) when a batch is given.
        inverse: ``[N]`` int64 voxel of each point (``coords[inverse]`` are the points' voxels).
        representative: ``[M]`` int64 index of one point per voxel.
        counts: ``[M]`` int64 number of points per voxel.
    """

    coords: Tensor
    inverse: Tensor
    representative: Tensor
    counts: Tensor


def pack_keys(coords: Tensor) -> Tensor:
    """Pack ``[N, D]`` integer coordinates into unique, order-preserving int64 keys (lexicographic)."""
    c = coords.long()
    lo = c.min(dim=0).values
    c = c - lo
    extent = c.max(dim=0).values + 1
    total = 1
    for e in extent.tolist():
        total *= int(e)
    if total >= 2**62:
        raise ValueError(f"voxel grid too large to pack into int64 keys (extent {extent.tolist()})")
    key = torch.zeros(c.shape[0], dtype=torch.long, device=c.device)
    for d in range(c.shape[1]):
        key = key * extent[d] + c[:, d]
    return key


def first_by_priority(groups: Tensor, priority: Tensor, num_groups: int) -> Tensor:
    """Index of the lowest-``priority`` element of each group (``groups`` in ``[0, num_groups)``; ties: the
    lowest index). Two scatter-minima, O(N): the group's lowest priority, then the lowest index holding it
    (8–10× faster than sorting 77k points); the result equals the stable sort's, which remains the path for
    a group without a finite minimum (an empty group, a NaN priority)."""
    N = groups.shape[0]
    p = priority.to(torch.float64)
    best = torch.full((num_groups,), math.inf, dtype=torch.float64, device=p.device)
    best.scatter_reduce_(0, groups, p, "amin")
    index = torch.arange(N, device=groups.device)
    candidate = torch.where(p == best[groups], index, N)
    first = torch.full((num_groups,), N, dtype=torch.long, device=groups.device)
    first.scatter_reduce_(0, groups, candidate, "amin")
    if N > 0 and bool((first < N).all()):
        return first
    return _first_by_sorting(groups, priority, num_groups)


def _first_by_sorting(groups: Tensor, priority: Tensor, num_groups: int) -> Tensor:
    order = torch.argsort(priority, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    counts = torch.bincount(groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    return order[starts]


def voxelize(
    points: Tensor,
    voxel_size: float,
    batch: Tensor | None = None,
    *,
    representative: Representative = "first",
    generator: torch.Generator | None = None,
) -> Voxelization:
    """Voxelize ``[N, 3]`` points with cubic voxels of ``voxel_size`` metres.

    Args:
        points: ``[N, 3]`` float points.
        voxel_size: edge length in metres (> 0).
        batch: optional ``[N]`` sample index; voxels never merge across samples.
        representative: which point stands for each voxel: ``"first"`` (lowest index), ``"random"``
            (uniform, using ``generator``) or ``"centre"`` (closest to the voxel centre).
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points: expected [N, 3], got {tuple(points.shape)}")
    if representative not in ("first", "random", "centre"):
        raise ValueError(f"representative must be one of first/random/centre, got {representative!r}")
    N = points.shape[0]
    grid = torch.floor(points / voxel_size).long()
    full = grid if batch is None else torch.cat([batch.long().view(-1, 1), grid], dim=1)
    if N == 0:
        empty = torch.zeros(0, dtype=torch.long, device=points.device)
        return Voxelization(full.int(), empty, empty, empty)
    keys = pack_keys(full)
    uniq, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    M = uniq.shape[0]
    if representative == "first":
        priority = torch.arange(N, device=points.device, dtype=torch.float64)
    elif representative == "random":
        priority = torch.rand(N, generator=generator, dtype=torch.float64).to(points.device)
    else:
        centre = (grid.to(points.dtype) + 0.5) * voxel_size
        priority = (points - centre).square().sum(dim=1)
    rep = first_by_priority(inverse, priority, M)
    return Voxelization(full[rep].int(), inverse, rep, counts)
