"""Wall-clock timing: warm-up runs, then repeated timed runs summarised by median and spread.

Every figure records the thread count it ran at (``torch.get_num_threads()``) and the device; on CUDA the
device is synchronised before and after each timed run, so the time covers the queued kernels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the queued work of a CUDA ``device`` (no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(n)`` (unchanged when ``n`` is ``None``), then restore."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def summarize(times: list[float]) -> dict[str, Any]:
    """``{median_s, iqr_s, min_s, max_s, n}`` of a list of durations in seconds (IQR: 75th − 25th
    percentile, linear interpolation; 0 for fewer than two values)."""
    if not times:
        raise ValueError("summarize: no timings")
    ts = sorted(times)
    if len(ts) >= 2:
        q = statistics.quantiles(ts, n=4, method="inclusive")
        iqr = q[2] - q[0]
    else:
        iqr = 0.0
    return {
        "median_s": statistics.median(ts),
        "iqr_s": iqr,
        "min_s": ts[0],
        "max_s": ts[-1],
        "n": len(ts),
    }


def time_fn(
    fn: Callable[[], Any],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str | None = None,
    setup: Callable[[], Any] | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls.

    ``setup()`` (untimed) runs before every call. With ``max_seconds``, timing stops early once the timed
    calls have used that much time (at least one timed call is always made). Returns :func:`summarize`'s
    dict plus ``threads`` and ``device``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"time_fn: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    synchronize(device)
    times: list[float] = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and sum(times) >= max_seconds:
            break
    out = summarize(times)
    out["threads"] = torch.get_num_threads()
    out["device"] = str(torch.device(device)) if device is not None else "cpu"
    return out
