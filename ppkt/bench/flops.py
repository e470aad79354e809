"""Useful FLOPs of the sparse convolutions of a network run, read from the kernel maps they used.

A sparse conv with ``P`` (input, output) pairs does ``2 · P · Cin · Cout`` multiply-adds-as-two-FLOPs in
its forward pass (a submanifold centre and a 1×1×1 conv count ``n`` pairs: one per site). The backward
pass does the same work twice (gradient of the input and of the weight), hence the factor 3 for a
training step. Bias additions, batch norm and activations are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ppkt.sparse import SparseConv3d, SparseConvModule, SparseInverseConv3d, SparseTensor, SubMConv3d

#: forward + grad-input + grad-weight, each ``2 · P · Cin · Cout``
TRAIN_STEP_FACTOR = 3


def conv_pairs(module: nn.Module, x: SparseTensor) -> int:
    """Number of (input, output) pairs the sparse conv ``module`` uses on its input ``x`` (from the cache;
    the map must exist, i.e. the module has run on ``x`` with the ``torch`` backend)."""
    if isinstance(module, SparseConvModule) and module.backend != "torch":
        raise ValueError(f"conv_pairs reads the torch backend's kernel maps, not {module.backend}'s")
    if isinstance(module, SubMConv3d):
        if module.kernel_size == 1:
            return x.num_points
        return x.cache.submanifold(x.stride, module.kernel_size).num_pairs
    if isinstance(module, SparseConv3d):
        return x.cache.downsample(x.stride, module.kernel_size, module.stride, module.padding).num_pairs
    if isinstance(module, SparseInverseConv3d):
        kmap, _ = x.cache.upsample(x.stride, module.kernel_size, module.stride, module.padding)
        return kmap.num_pairs
    raise TypeError(f"not a sparse conv: {type(module).__name__}")


def count_conv_flops(model: nn.Module, run: Callable[[], Any]) -> dict[str, int]:
    """Call ``run()`` (which must run ``model`` forward) with hooks on every sparse conv of ``model``.

    Returns ``{"forward_flops", "pairs", "convs"}``: the sum over conv calls of ``2 · pairs · Cin · Cout``,
    the total pairs and the number of conv calls. Multiply by :data:`TRAIN_STEP_FACTOR` for a
    forward + backward step.
    """
    totals = {"forward_flops": 0, "pairs": 0, "convs": 0}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0]
        assert isinstance(x, SparseTensor)
        assert isinstance(module, (SubMConv3d, SparseConv3d, SparseInverseConv3d))
        pairs = conv_pairs(module, x)
        totals["pairs"] += pairs
        totals["forward_flops"] += 2 * pairs * module.in_channels * module.out_channels
        totals["convs"] += 1

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (SubMConv3d, SparseConv3d, SparseInverseConv3d))
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return totals
