"""Run the benchmark cases, write ``<out>/bench.json`` and print a table."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ppkt.bench.cases import CASES
from ppkt.bench.context import SIZES, BenchContext
from ppkt.bench.timing import num_threads
from ppkt.errors import ConfigError
from ppkt.sparse.spconv import spconv_version


def device_name(device: torch.device) -> str:
    """The CUDA device's name, or the CPU model (``/proc/cpuinfo``) with its logical core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} logical CPUs)"


def parse_cases(spec: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or a list -> case names in run order; ``None``/``"all"`` -> every case."""
    if spec is None or spec == "all":
        return list(CASES)
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    bad = [n for n in names if n not in CASES]
    if bad or not names:
        raise ConfigError(f"--cases: unknown case(s) {bad}; known: {list(CASES)}")
    return [n for n in CASES if n in names]


def run_bench(
    out: str | Path,
    *,
    quick: bool = False,
    threads: int | None = None,
    cases: str | Sequence[str] | None = None,
    device: str | None = None,
    sizes: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``cases`` (default: all) and write ``<out>/bench.json`` (rewritten after every case).

    ``threads``: torch intra-op threads for ppkt (default: the current ``torch.get_num_threads()``);
    ``device``: ``cpu`` or ``cuda`` (default: ``cuda`` when available); ``sizes``: a preset of
    :data:`~ppkt.bench.context.SIZES` (default ``quick`` with ``quick`` else ``full``). A case that raises
    is recorded as ``{"error": "..."}`` and the others still run.
    """
    names = parse_cases(cases)
    size_name = sizes or ("quick" if quick else "full")
    if size_name not in SIZES:
        raise ConfigError(f"--sizes: unknown preset {size_name!r}; known: {list(SIZES)}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    n_threads = threads or torch.get_num_threads()
    ctx = BenchContext(dev, n_threads, SIZES[size_name], quick=quick, log=log)
    with num_threads(n_threads):
        return _run(ctx, names, Path(out), size_name, log)


def _run(
    ctx: BenchContext, names: list[str], out_dir: Path, size_name: str, log: Callable[[str], None]
) -> dict[str, Any]:
    dev, n_threads, quick = ctx.device, ctx.threads, ctx.quick
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(dev),
        "torch": torch.__version__,
        "threads": n_threads,
        "quick": quick,
        "sizes": size_name,
        "torch_device": str(dev),
        "spconv": spconv_version(),
        "python": platform.python_version(),
        "cases": {},
    }
    path = out_dir / "bench.json"
    for name in names:
        t0 = time.perf_counter()
        try:
            figures = CASES[name](ctx)
        except Exception as e:
            figures = {"error": f"{type(e).__name__}: {e}"}
            log(f"[bench] {name}: error: {figures['error']}")
        figures["case_seconds"] = round(time.perf_counter() - t0, 2)
        result["cases"][name] = figures
        path.write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    log(format_table(result))
    log(f"[bench] wrote {path}")
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _fmt_time(t: dict[str, Any]) -> str:
    def ms(s: float) -> str:
        return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"

    return f"{ms(t['median_s'])} (IQR {ms(t['iqr_s'])}, n={t['n']}, {t['threads']}t)"


def _fmt(v: Any) -> str | None:
    if isinstance(v, dict):
        if "median_s" in v:
            return _fmt_time(v)
        if "skipped" in v:
            return f"skipped: {v['skipped']}"
        return None
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (int, str)):
        return str(v)
    if isinstance(v, list) and all(isinstance(u, (int, float, str)) for u in v):
        return "×".join(str(u) for u in v)
    return None


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table ``case | figure | value`` of a ``bench.json`` dict."""
    rows: list[tuple[str, str, str]] = []
    for case, figs in result["cases"].items():
        for key, val in figs.items():
            if key in ("note", "case_seconds"):
                continue
            if key == "configs" and isinstance(val, list):
                for cfg in val:
                    label = str(cfg.get("label", ""))
                    for k, v in cfg.items():
                        s = _fmt(v)
                        if k not in ("label", "voxels", "channels") and s is not None:
                            rows.append((case, f"{label}.{k}", s))
                continue
            s = _fmt(val)
            if s is not None:
                rows.append((case, key, s))
        rows.append((case, "case_seconds", str(figs.get("case_seconds"))))
    head = (
        f"ppkt bench — {result['date']} — {result['device']} — torch {result['torch']} — "
        f"{result['threads']} threads — sizes {result.get('sizes')}"
    )
    w0 = max([len("case")] + [len(r[0]) for r in rows])
    w1 = max([len("figure")] + [len(r[1]) for r in rows])
    lines = [head, f"{'case':<{w0}}  {'figure':<{w1}}  value", f"{'-' * w0}  {'-' * w1}  -----"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)
