"""The embedded default datasets: synthetic scenes generated on first use into a cache, reused afterwards —
RGB-D rooms (:func:`ensure_synthetic`) and LiDAR + camera rooms in the rig layout
(:func:`ensure_synthetic_lidar`).

The cache folder ``<cache root>/synth-<hash>`` is named by a hash of the synthesis recipe
(:func:`~ppkt.data.synth.make_recipe`), which the renderer stores in ``dataset.json``. It is a
:class:`~ppkt.cache.CacheFolder` artefact: rendered into a private folder and published once, complete, so a
folder whose recipe matches is reused, and processes sharing an empty cache render it once (the others wait
for it) and never replace a dataset another process is reading. A folder that exists but holds no dataset
of its recipe is an error naming it (it is never deleted for you).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ppkt.cache import CacheFolder
from ppkt.data.synth import RoomConfig, dataset_matches, make_recipe, render_dataset
from ppkt.data.synth.lidar_writer import (
    LIDAR_ROOM,
    lidar_dataset_matches,
    make_lidar_recipe,
    render_lidar_dataset,
)
from ppkt.data.synth.scene import Appearance


def _ensure(
    kind: str,
    what: str,
    recipe: dict[str, Any],
    matches: Callable[[Path, dict[str, Any]], bool],
    render: Callable[[Path, dict[str, Any]], Any],
    cache_dir: str | None,
    verbose: bool,
) -> Path:
    """The cache folder ``<kind>-<hash of recipe>``, rendered first by ``render`` if the cache lacks it."""
    folder = CacheFolder(kind, recipe, cache_dir)

    def say(text: str) -> None:
        if verbose:
            print(f"[ppkt] {text}", flush=True)

    return folder.ensure(
        lambda root: matches(root, recipe),
        lambda tmp: render(tmp, recipe),
        what=what,
        on_build=lambda: say(
            f"rendering the embedded {what} into {folder.root} (first use; cached afterwards)"
        ),
        on_wait=lambda: say(f"waiting for another process rendering {folder.root}"),
    )


def ensure_synthetic(
    *,
    scenes: int,
    frames_per_scene: int,
    seed: int,
    image_size: tuple[int, int],
    appearance: Appearance = "random",
    first_scene: int = 0,
    cache_dir: str | None = None,
    verbose: bool = True,
) -> Path:
    """Path of the synthetic dataset of this recipe, rendering it first if the cache lacks it
    (``first_scene``: the index of its first room, :func:`~ppkt.data.synth.make_recipe`)."""
    room = replace(RoomConfig(), appearance=appearance)
    recipe = make_recipe(scenes, frames_per_scene, seed, image_size, room=room, first_scene=first_scene)

    def render(out: Path, recipe: dict[str, Any]) -> None:  # a process per core: the same files
        render_dataset(out, recipe, workers=os.cpu_count() or 1)

    return _ensure("synth", "synthetic dataset", recipe, dataset_matches, render, cache_dir, verbose)


def ensure_synthetic_lidar(
    *,
    scenes: int,
    frames_per_scene: int,
    seed: int,
    image_size: tuple[int, int],
    appearance: Appearance = "random",
    cache_dir: str | None = None,
    verbose: bool = True,
) -> Path:
    """Path of the synthetic LiDAR dataset (rig layout: a 32-beam LiDAR and 4 cameras of ``image_size``
    per frame) of this recipe, rendering it first if the cache lacks it."""
    room = replace(LIDAR_ROOM, appearance=appearance)
    recipe = make_lidar_recipe(scenes, frames_per_scene, seed, image_size, room=room)
    return _ensure(
        "synth-lidar",
        "synthetic LiDAR dataset",
        recipe,
        lidar_dataset_matches,
        render_lidar_dataset,
        cache_dir,
        verbose,
    )
