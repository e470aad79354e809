"""The embedded default dataset: synthetic scenes generated on first use into a cache, reused afterwards.

The cache folder is named by a hash of the synthesis recipe (:func:`~ppkt.data.synth.make_recipe`). The
synthesizer writes that recipe into ``dataset.json`` and moves a dataset into place only once it is complete,
so a folder whose recipe matches is reused and anything else (missing, interrupted, stale) is re-rendered.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ppkt.config.pretrain import SynthConfig


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$PPKT_CACHE_DIR``, else ``~/.cache/ppkt``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PPKT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ppkt"


def ensure_synthetic(cfg: SynthConfig, cache_dir: str | None = None, *, verbose: bool = True) -> Path:
    """Path of the synthetic dataset for ``cfg``, rendering it first if the cache lacks it."""
    from ppkt.data.synth import dataset_matches, make_recipe, synthesize

    recipe = make_recipe(cfg.scenes, cfg.frames_per_scene, cfg.seed, cfg.image_size)
    digest = hashlib.sha1(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = cache_root(cache_dir) / f"synth-{digest}"
    if dataset_matches(root, recipe):
        return root
    if verbose:
        print(f"[ppkt] rendering the embedded synthetic dataset into {root} (first use; cached afterwards)")
    return synthesize(
        root,
        scenes=cfg.scenes,
        frames_per_scene=cfg.frames_per_scene,
        seed=cfg.seed,
        image_size=cfg.image_size,
    )
