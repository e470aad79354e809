"""``ppkt bench``: speed and memory of ppkt's sparse convolutions, student, data pipeline and pretraining
step, against spconv (and Open3D) when those are importable. See ``BENCHMARKS.md``.

* :mod:`ppkt.bench.timing` — warm-up + repeated timed runs → median, IQR, min, max, n, threads;
* :mod:`ppkt.bench.flops` — useful conv FLOPs read from the kernel maps;
* :mod:`ppkt.sparse.spconv` — spconv import work-arounds and the spconv backend of ppkt's convs;
* :mod:`ppkt.bench.context` — problem sizes and the context shared by the cases of a run;
  :mod:`ppkt.bench.inputs` — their inputs (synthetic cloud, pretraining batches);
* :mod:`ppkt.bench.cases` — one module per case, and ``CASES``; :mod:`ppkt.bench.runner` — runs them,
  writes ``bench.json``, prints a table; :mod:`ppkt.bench.memory` — the peak-RSS subprocess.
"""

from ppkt.bench.flops import TRAIN_STEP_FACTOR, conv_pairs, count_conv_flops
from ppkt.bench.runner import format_table, run_bench
from ppkt.bench.timing import num_threads, summarize, time_fn

__all__ = [
    "TRAIN_STEP_FACTOR",
    "conv_pairs",
    "count_conv_flops",
    "format_table",
    "num_threads",
    "run_bench",
    "summarize",
    "time_fn",
]
