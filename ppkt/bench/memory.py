"""``python -m ppkt.bench.memory``: peak resident memory of one pretraining step, in this (fresh) process.

Builds the default pretraining module and optimizer and loads one batch of ``--frames`` frames, records the
resident set (``VmRSS``), resets the kernel's peak counter (``/proc/self/clear_refs`` ← ``5``), runs one
step (module forward + backward + AdamW step, live teacher) and prints one JSON line:
``peak_rss_mib`` (``VmHWM`` over the step, the whole process: libraries, model, data and the step's
temporaries), ``baseline_rss_mib`` (before the step), ``step_rss_mib`` (their difference), the batch's
``voxels`` / ``points`` and ``peak_method``. Where the peak cannot be reset (not Linux, or
``clear_refs`` refused), ``peak_rss_mib`` is the process's lifetime peak (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ppkt.bench.inputs import default_pretrain_config, load_pretrain_batches


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, kB on Linux


def measure(frames: int, device: str, threads: int | None) -> dict[str, Any]:
    from ppkt.training.data import num_input_features
    from ppkt.training.optim import build_optimizer, trainable
    from ppkt.training.pretrain_module import PPKTPretrainModule

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    cfg = default_pretrain_config()
    torch.manual_seed(0)
    module = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features)).to(dev).train()
    o = cfg.optim
    params = trainable([module.student, module.head, module.upl])
    opt = build_optimizer(o.name, params, o.lr, o.weight_decay, o.momentum)
    batch = load_pretrain_batches(cfg, frames, 1)[0].to(dev)

    baseline = _status_mib("VmRSS")
    reset = _reset_peak()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    opt.zero_grad(set_to_none=True)
    module(batch)["loss"].backward()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    hwm = _status_mib("VmHWM")
    if reset and hwm is not None:
        peak, method = hwm, "VmHWM after clear_refs=5 (the step's own peak)"
    else:
        peak, method = _maxrss_mib(), "ru_maxrss (process lifetime peak; could not reset)"
    out: dict[str, Any] = {
        "peak_rss_mib": peak,
        "baseline_rss_mib": baseline,
        "step_rss_mib": None if baseline is None else peak - baseline,
        "process_maxrss_mib": _maxrss_mib(),
        "peak_method": method,
        "frames": frames,
        "voxels": int(batch.coords.shape[0]),
        "points": int(batch.points.shape[0]),
        "threads": torch.get_num_threads(),
        "device": str(dev),
    }
    if dev.type == "cuda":
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ppkt.bench.memory", description=__doc__)
    p.add_argument("--frames", type=int, default=8, help="frames in the batch (default config's 8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.frames, args.device, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
