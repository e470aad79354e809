"""Render synthetic RGB-D scenes to disk in the generic folder layout of :mod:`ppkt.data.readers.folder`.

Output (``out_dir``)::

    dataset.json                  classes, recipe (every argument + generator version), scene list
    scene_0000/intrinsics.txt
    scene_0000/scene.json         room planes, instances (id → class), lighting
    scene_0000/000000.color.png   uint8 RGB
    scene_0000/000000.depth.png   uint16 millimetres, 0 = invalid
    scene_0000/000000.pose.txt    4×4 camera-to-world (OpenCV camera frame)
    scene_0000/000000.label.png   uint16 class id (0 = unlabelled)
    scene_0000/000000.instance.png uint16 instance id (0 = none)

The output is a deterministic function of the recipe: the same arguments give byte-identical files.
:func:`render_dataset` fills a given folder (``dataset.json`` last); :func:`synthesize` renders into a
hidden sibling folder and moves it into place only when complete (:mod:`ppkt.cache`), so a folder with a
``dataset.json`` is always a finished dataset. The embedded dataset's cache
(:func:`ppkt.data.embedded.ensure_synthetic`) publishes :func:`render_dataset`'s folder once instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
import pybullet as p
from PIL import Image

from ppkt.cache import jsonable, replace_folder, staged
from ppkt.data.synth.assets import CLASS_NAMES
from ppkt.data.synth.render import Camera, DepthNoise, add_depth_noise, render_frame
from ppkt.data.synth.scene import RoomConfig, build_scene, room_recipe
from ppkt.errors import ConfigError, DataError

__all__ = [
    "DATASET_FORMAT",
    "SYNTH_VERSION",
    "dataset_matches",
    "make_recipe",
    "read_dataset_info",
    "render_dataset",
    "synthesize",
]

#: Bump whenever the rendered output for a given recipe changes.
SYNTH_VERSION = 1
DATASET_FORMAT = "ppkt-rgbd-folder"
DEPTH_SCALE = 1000.0  # raw depth units per metre (millimetres)


def make_recipe(
    scenes: int,
    frames_per_scene: int,
    seed: int,
    image_size: Sequence[int] = (240, 320),
    *,
    fov_deg: float = 55.0,
    depth_noise: DepthNoise | None = DepthNoise(),  # noqa: B008 - frozen dataclass, immutable default
    depth_range: tuple[float, float] = (0.3, 6.0),
    room: RoomConfig = RoomConfig(),  # noqa: B008 - frozen dataclass, immutable default
    first_scene: int = 0,
) -> dict[str, Any]:
    """The recipe dict that :func:`synthesize` stores in ``dataset.json`` for these arguments. The rooms are
    ``first_scene … first_scene + scenes − 1`` of the seed's stream (room ``i`` is drawn from ``(seed, i)``
    alone), so ``first_scene = n`` gives rooms that a dataset of ``n`` rooms of the same seed does not hold;
    the recipe names ``first_scene`` only when it is not 0 (a recipe of rooms from 0 is unchanged)."""
    if scenes < 1 or frames_per_scene < 1:
        raise ConfigError(
            f"synthesize: scenes and frames_per_scene must be >= 1, got {scenes}, {frames_per_scene}"
        )
    if len(image_size) != 2:
        raise ConfigError(f"synthesize: image_size must be (H, W), got {image_size}")
    H, W = int(image_size[0]), int(image_size[1])
    if H < 8 or W < 8:
        raise ConfigError(f"synthesize: image_size must be at least 8x8 (H, W), got {image_size}")
    if not 0 < depth_range[0] < depth_range[1]:
        raise ConfigError(f"synthesize: depth_range must be 0 < min < max, got {depth_range}")
    if first_scene < 0:
        raise ConfigError(f"synthesize: first_scene must be >= 0, got {first_scene}")
    recipe = {
        "version": SYNTH_VERSION,
        "scenes": int(scenes),
        "frames_per_scene": int(frames_per_scene),
        "seed": int(seed),
        "image_size": [H, W],
        "fov_deg": float(fov_deg),
        "depth_noise": None if depth_noise is None else asdict(depth_noise),
        "depth_range": [float(depth_range[0]), float(depth_range[1])],
        "room": room_recipe(room),
    }
    if first_scene:
        recipe["first_scene"] = int(first_scene)
    return dict(jsonable(recipe))


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _write_matrix(path: Path, m: np.ndarray) -> None:
    path.write_text("\n".join(" ".join(f"{x:.9e}" for x in row) for row in m) + "\n")


def _render_scene(out_root: Path, index: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """Build and render scene ``index`` of the recipe into ``out_root/scene_XXXX``; return its summary."""
    H, W = recipe["image_size"]
    camera = Camera(height=H, width=W, fov_deg=recipe["fov_deg"])
    noise = None if recipe["depth_noise"] is None else DepthNoise(**recipe["depth_noise"])
    room_args: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe["room"].items()}
    room = RoomConfig(**room_args)
    min_d, max_d = recipe["depth_range"]
    layout_rng = np.random.default_rng([recipe["seed"], index, 0])
    noise_rng = np.random.default_rng([recipe["seed"], index, 1])
    name = f"scene_{index:04d}"
    folder = out_root / name
    folder.mkdir(parents=True, exist_ok=True)
    cid = p.connect(p.DIRECT)
    try:
        scene = build_scene(cid, layout_rng, index, recipe["frames_per_scene"], room)
        class_lut, instance_lut = scene.lookup_tables()
        _write_matrix(folder / "intrinsics.txt", camera.K)
        classes_seen: set[int] = set()
        for k, pose in enumerate(scene.poses):
            fr = render_frame(cid, camera, pose, class_lut, instance_lut, scene.light)
            depth = fr.depth if noise is None else add_depth_noise(fr.depth, noise, noise_rng)
            depth = np.where((depth >= min_d) & (depth <= max_d), depth, 0.0)
            depth_mm = np.round(depth * DEPTH_SCALE).astype(np.uint16)
            stem = f"{k:06d}"
            _save_png(folder / f"{stem}.color.png", fr.color)
            _save_png(folder / f"{stem}.depth.png", depth_mm)
            _save_png(folder / f"{stem}.label.png", fr.label)
            _save_png(folder / f"{stem}.instance.png", fr.instance)
            _write_matrix(folder / f"{stem}.pose.txt", pose)
            classes_seen.update(int(c) for c in np.unique(fr.label))
        (folder / "scene.json").write_text(json.dumps(scene.to_json(), indent=1) + "\n")
    finally:
        p.disconnect(cid)
    return {"name": name, "frames": len(scene.poses), "classes": sorted(classes_seen)}


def read_dataset_info(root: str | Path, fmt: str = DATASET_FORMAT) -> dict[str, Any]:
    """The parsed ``dataset.json`` of a synthesized dataset of format ``fmt`` (RGB-D rooms by default; the
    LiDAR rig datasets pass theirs) — a :class:`DataError` if absent, corrupt or of another format."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: missing dataset description (not a finished {fmt} dataset)")
    try:
        info = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: corrupt dataset description ({e})") from e
    if not isinstance(info, dict) or info.get("format") != fmt or "recipe" not in info:
        raise DataError(f"{path}: not a {fmt} dataset description")
    return info


def dataset_matches(root: str | Path, recipe: dict[str, Any], fmt: str = DATASET_FORMAT) -> bool:
    """Whether ``root`` holds a finished dataset of format ``fmt`` rendered from exactly ``recipe``."""
    try:
        return bool(read_dataset_info(root, fmt)["recipe"] == jsonable(recipe))
    except DataError:
        return False


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; refusing to overwrite it")
    if any(out.iterdir()) and not (out / "dataset.json").is_file():
        raise DataError(
            f"{out}: folder is not empty and holds no synthetic dataset; refusing to overwrite it"
        )


def render_dataset(
    out: Path,
    recipe: dict[str, Any],
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Render the dataset of ``recipe`` (:func:`make_recipe`) into the existing empty folder ``out``,
    ``dataset.json`` last. ``workers`` and ``progress`` as in :func:`synthesize`."""
    scenes = int(recipe["scenes"])
    first = int(recipe.get("first_scene", 0))
    summaries: list[dict[str, Any]] = []
    if workers <= 1 or scenes == 1:
        for i in range(scenes):
            summaries.append(_render_scene(out, first + i, recipe))
            if progress is not None:
                progress(i + 1, scenes)
    else:
        # fork: workers need no ``if __name__ == "__main__"`` guard in the caller's script; they only use
        # numpy, PIL and their own pybullet connection (the parent holds none)
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(min(workers, scenes), mp_context=get_context(method)) as pool:
            futures = [pool.submit(_render_scene, out, first + i, recipe) for i in range(scenes)]
            for i, fut in enumerate(futures):
                summaries.append(fut.result())
                if progress is not None:
                    progress(i + 1, scenes)
    info = {
        "format": DATASET_FORMAT,
        "layout": "generic",
        "depth_scale": DEPTH_SCALE,
        "classes": list(CLASS_NAMES),
        "recipe": recipe,
        "scenes": summaries,
        "num_frames": sum(s["frames"] for s in summaries),
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")


def synthesize(
    out_dir: str | Path,
    scenes: int,
    frames_per_scene: int,
    seed: int,
    image_size: Sequence[int] = (240, 320),
    *,
    fov_deg: float = 55.0,
    depth_noise: DepthNoise | None = DepthNoise(),  # noqa: B008 - frozen dataclass, immutable default
    depth_range: tuple[float, float] = (0.3, 6.0),
    room: RoomConfig = RoomConfig(),  # noqa: B008 - frozen dataclass, immutable default
    first_scene: int = 0,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``scenes`` random indoor rooms × ``frames_per_scene`` RGB-D frames into ``out_dir``.

    Args:
        out_dir: output folder; replaced if it holds a previous synthetic dataset (or is empty).
        scenes, frames_per_scene, seed: dataset size and random seed (same seed → byte-identical files).
        image_size: ``(H, W)``.
        fov_deg: vertical field of view.
        depth_noise: the Kinect-like noise model, or ``None`` for exact depth (only mm quantisation).
        depth_range: depth outside ``[min, max]`` metres is written as invalid (0).
        room: ranges of the random room layout.
        first_scene: index of the first room (rooms ``first_scene …`` of the seed; each room's files are
            those of the same room in a dataset rendered from 0).
        workers: processes rendering scenes in parallel (does not change the output).
        progress: called as ``progress(scenes_done, scenes)`` after each scene.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    recipe = make_recipe(
        scenes,
        frames_per_scene,
        seed,
        image_size,
        fov_deg=fov_deg,
        depth_noise=depth_noise,
        depth_range=depth_range,
        room=room,
        first_scene=first_scene,
    )
    out = Path(out_dir)
    _check_replaceable(out)
    with staged(out, folder=True) as partial:
        render_dataset(partial, recipe, workers=workers, progress=progress)
        _check_replaceable(out)
        replace_folder(partial, out)
    return out
