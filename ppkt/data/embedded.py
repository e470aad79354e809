"""The embedded default dataset: synthetic scenes generated on first use into a cache, reused afterwards.

The cache folder is named by a hash of the synthesis recipe (:func:`~ppkt.data.synth.make_recipe`). The
synthesizer writes that recipe into ``dataset.json`` and moves a dataset into place only once it is complete,
so a folder whose recipe matches is reused and anything else (missing, interrupted, stale) is re-rendered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ppkt.cache import cache_root
from ppkt.data.synth import dataset_matches, make_recipe, synthesize


def ensure_synthetic(
    *,
    scenes: int,
    frames_per_scene: int,
    seed: int,
    image_size: tuple[int, int],
    cache_dir: str | None = None,
    verbose: bool = True,
) -> Path:
    """Path of the synthetic dataset of this recipe, rendering it first if the cache lacks it."""
    recipe = make_recipe(scenes, frames_per_scene, seed, image_size)
    digest = hashlib.sha1(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = cache_root(cache_dir) / f"synth-{digest}"
    if dataset_matches(root, recipe):
        return root
    if verbose:
        print(f"[ppkt] rendering the embedded synthetic dataset into {root} (first use; cached afterwards)")
    return synthesize(
        root, scenes=scenes, frames_per_scene=frames_per_scene, seed=seed, image_size=image_size
    )
