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

from pathlib import Path

from ppkt.cache import CacheFolder
from ppkt.data.synth import dataset_matches, make_recipe, render_dataset
from ppkt.data.synth.lidar_writer import lidar_dataset_matches, make_lidar_recipe, render_lidar_dataset


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
    folder = CacheFolder("synth", recipe, cache_dir)

    def say(text: str) -> None:
        if verbose:
            print(f"[ppkt] {text}", flush=True)

    return folder.ensure(
        lambda root: dataset_matches(root, recipe),
        lambda tmp: render_dataset(tmp, recipe),
        what="synthetic dataset",
        on_build=lambda: say(
            f"rendering the embedded synthetic dataset into {folder.root} (first use; cached afterwards)"
        ),
        on_wait=lambda: say(f"waiting for another process rendering {folder.root}"),
    )


def ensure_synthetic_lidar(
    *,
    scenes: int,
    frames_per_scene: int,
    seed: int,
    image_size: tuple[int, int],
    cache_dir: str | None = None,
    verbose: bool = True,
) -> Path:
    """Path of the synthetic LiDAR dataset (rig layout: a 32-beam LiDAR and 4 cameras of ``image_size``
    per frame) of this recipe, rendering it first if the cache lacks it."""
    recipe = make_lidar_recipe(scenes, frames_per_scene, seed, image_size)
    folder = CacheFolder("synth-lidar", recipe, cache_dir)

    def say(text: str) -> None:
        if verbose:
            print(f"[ppkt] {text}", flush=True)

    return folder.ensure(
        lambda root: lidar_dataset_matches(root, recipe),
        lambda tmp: render_lidar_dataset(tmp, recipe),
        what="synthetic LiDAR dataset",
        on_build=lambda: say(
            f"rendering the embedded synthetic LiDAR dataset into {folder.root} "
            "(first use; cached afterwards)"
        ),
        on_wait=lambda: say(f"waiting for another process rendering {folder.root}"),
    )
