"""The benchmark cases of ``ppkt bench``, one module each; each case takes a
:class:`~ppkt.bench.context.BenchContext` and returns a dict of figures.

A comparison whose reference library cannot be imported (or fails) is reported as
``"skipped": "<reason>"`` inside that comparison's entry; ppkt's own figures are always measured. Timings
are :func:`~ppkt.bench.timing.time_fn` dicts (``median_s``, ``iqr_s``, ``min_s``, ``max_s``, ``n``,
``threads``, ``device``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ppkt.bench.cases.contention import case_contention
from ppkt.bench.cases.frame_pipeline import case_frame_pipeline
from ppkt.bench.cases.gemm_efficiency import case_gemm_efficiency
from ppkt.bench.cases.memory import case_memory
from ppkt.bench.cases.pretrain_throughput import case_pretrain_throughput
from ppkt.bench.cases.sparse_conv_layer import case_sparse_conv_layer
from ppkt.bench.cases.step_profile import case_step_profile
from ppkt.bench.cases.unet_step import case_unet_step
from ppkt.bench.context import BenchContext

#: a case: the run's context -> its figures
Case = Callable[[BenchContext], dict[str, Any]]

#: name -> case function, in run order
CASES: dict[str, Case] = {
    "sparse_conv_layer": case_sparse_conv_layer,
    "unet_step": case_unet_step,
    "gemm_efficiency": case_gemm_efficiency,
    "frame_pipeline": case_frame_pipeline,
    "pretrain_throughput": case_pretrain_throughput,
    "memory": case_memory,
    "contention": case_contention,
    "step_profile": case_step_profile,
}

__all__ = ["CASES", "Case"]
