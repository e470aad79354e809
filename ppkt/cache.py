"""Where ppkt keeps derived data (rendered datasets, fused scenes, teacher features)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$PPKT_CACHE_DIR``, else ``~/.cache/ppkt``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PPKT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ppkt"
