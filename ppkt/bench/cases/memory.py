"""``memory``: peak RSS of one pretraining step, measured by :mod:`ppkt.bench.memory` in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from ppkt.bench.context import BenchContext


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
