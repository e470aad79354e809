"""What every ``ppkt bench`` case shares: the problem sizes (:data:`SIZES`), the :class:`BenchContext` and
small helpers for the figures (error text, time ratios, geometric means)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ppkt.bench.timing import time_fn


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


def error_text(e: BaseException) -> str:
    """``"Type: message"`` of an exception, for a ``skipped`` or ``error`` entry."""
    return f"{type(e).__name__}: {e}".strip()


def time_ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """Ratio of the median times of two timings, ``None`` when either is missing."""
    if not a or not b or "median_s" not in a or "median_s" not in b or b["median_s"] <= 0:
        return None
    return float(a["median_s"] / b["median_s"])


def geomean(values: list[float]) -> float | None:
    """Geometric mean of the positive values, ``None`` when there are none."""
    vals = [v for v in values if v is not None and v > 0]
    return float(math.exp(sum(math.log(v) for v in vals) / len(vals))) if vals else None
