"""The embedded default dataset: synthetic scenes generated on first use into a cache, reused afterwards.

The cache folder is named by a hash of the synthesis recipe and holds the ``dataset.json`` written by the
synthesizer; a folder whose recipe does not match (or an interrupted generation) is regenerated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ppkt.config.pretrain import SynthConfig

DONE = ".complete"


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$PPKT_CACHE_DIR``, else ``~/.cache/ppkt``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PPKT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ppkt"


def synth_recipe(cfg: SynthConfig) -> dict[str, Any]:
    from ppkt.data.synth import SYNTH_VERSION

    return {
        "scenes": cfg.scenes,
        "frames_per_scene": cfg.frames_per_scene,
        "seed": cfg.seed,
        "image_size": list(cfg.image_size),
        "version": SYNTH_VERSION,
    }


def ensure_synthetic(cfg: SynthConfig, cache_dir: str | None = None, *, verbose: bool = True) -> Path:
    """Path of the synthetic dataset for ``cfg``, rendering it first if the cache lacks it."""
    from ppkt.data.synth import synthesize

    recipe = synth_recipe(cfg)
    digest = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    root = cache_root(cache_dir) / f"synth-{digest}"
    marker = root / DONE
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return root
    if root.exists():
        shutil.rmtree(root)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    if verbose:
        print(f"[ppkt] rendering the embedded synthetic dataset into {root} (first use; cached afterwards)")
    synthesize(
        tmp,
        scenes=cfg.scenes,
        frames_per_scene=cfg.frames_per_scene,
        seed=cfg.seed,
        image_size=tuple(cfg.image_size),
    )
    (tmp / DONE).write_text(json.dumps(recipe))
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root
