"""Collectives with gradients, for the losses and layers that see every process's rows under DDP.

Without an initialised ``torch.distributed`` process group, or with one process, each function is the
identity: code using them runs unchanged in a single process. Every other call is a collective — every
process must make it, in the same order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes of the default group; 1 when ``torch.distributed`` is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_true(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on every process."""
    if world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_over_processes(value: int, device: torch.device) -> int:
    """The sum of ``value`` over every process (``value`` itself in one process); no gradient."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


class _GatherRows(torch.autograd.Function):
    """all_gather forward; backward sums over processes the gradient of this process's rows (every
    process's loss may depend on them) — lightly's ``GatherLayer``, with rows counts that may differ."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int]) -> Tensor:
        rank = dist.get_rank()
        ctx.rows = (sum(sizes[:rank]), sizes[rank])
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        start, n = ctx.rows
        return grad[start : start + n], None


def gather_rows(x: Tensor) -> tuple[Tensor, int]:
    """Every process's ``x [n_r, ...]`` concatenated in rank order (``n_r`` may differ between processes)
    and the index of this process's first row in it. Differentiable: this process's rows receive the sum of
    the gradients every process sends them, so with DDP's gradient averaging the processes optimise the
    mean of their losses as one function of all the rows."""
    if world_size() == 1:
        return x, 0
    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    sizes = [int(c) for c in counts]
    return _GatherRows.apply(x.contiguous(), sizes), sum(sizes[: dist.get_rank()])
