"""Render synthetic LiDAR + camera scenes to disk in the generic **rig layout** (``data.layout=rig``).

Each scene is a random room of :func:`~ppkt.data.synth.scene.build_scene` (textured surfaces, furniture and
objects with per-instance random tints and textures) in which a rig — a spinning LiDAR
(:class:`~ppkt.data.synth.lidar.LidarModel`) with cameras around it (:class:`~ppkt.data.synth.rig.CameraRig`)
— moves along a smooth path. Per frame: one sweep (points in the LiDAR frame, intensity, the class of every
return) and one image per camera (pybullet's CPU renderer). Output (``out_dir``)::

    dataset.json                        format, layout, classes, recipe, scene list
    rig.json                            {"cameras": {"cam_0": {"K", "lidar_to_camera", "image_size"}, …},
                                         "points": {"columns": ["x", "y", "z", "intensity"]}}
    scene_0000/points/000000.bin        float32 [N, 4]: x, y, z (metres, LiDAR frame), intensity in [0, 1]
    scene_0000/images/cam_0/000000.png  uint8 RGB
    scene_0000/labels/000000.npy        int32 [N] class id per point (0 = unlabelled)
    scene_0000/poses.txt                line i: frame i's LiDAR-to-world, 16 numbers (row-major 4×4)
    scene_0000/scene.json               room, instances (id → class, reflectivity)

The output is a deterministic function of the recipe (:func:`make_lidar_recipe`): the same arguments give
byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pybullet as p
from PIL import Image

from ppkt.cache import jsonable, replace_folder, staged
from ppkt.data.synth.assets import CLASS_NAMES
from ppkt.data.synth.lidar import LidarModel, cast_sweep
from ppkt.data.synth.lidar_scene import prepare_lidar_scene
from ppkt.data.synth.render import render_frame
from ppkt.data.synth.rig import CameraRig, lidar_pose_from_camera
from ppkt.data.synth.scene import RoomConfig, build_scene, room_recipe
from ppkt.data.synth.writer import dataset_matches, read_dataset_info
from ppkt.errors import ConfigError, DataError

__all__ = [
    "LIDAR_DATASET_FORMAT",
    "LIDAR_ROOM",
    "LIDAR_SYNTH_VERSION",
    "lidar_dataset_matches",
    "make_lidar_recipe",
    "read_lidar_dataset_info",
    "render_lidar_dataset",
    "rig_description",
    "synthesize_lidar",
]

#: Bump whenever the rendered output for a given recipe changes.
LIDAR_SYNTH_VERSION = 1
LIDAR_DATASET_FORMAT = "ppkt-rig"
#: rooms for a LiDAR: the sensor at 0.9–1.3 m (low enough for its downward beams to see the furniture)
LIDAR_ROOM = replace(RoomConfig(), camera_height=(0.9, 1.3))


def make_lidar_recipe(
    scenes: int,
    frames_per_scene: int,
    seed: int,
    image_size: tuple[int, int] | list[int] = (120, 160),
    *,
    lidar: LidarModel = LidarModel(),  # noqa: B008 - frozen dataclass, immutable default
    cameras: int = 4,
    room: RoomConfig = LIDAR_ROOM,
) -> dict[str, Any]:
    """The recipe that :func:`synthesize_lidar` stores in ``dataset.json`` for these arguments."""
    if scenes < 1 or frames_per_scene < 1:
        raise ConfigError(
            f"synthesize: scenes and frames_per_scene must be >= 1, got {scenes}, {frames_per_scene}"
        )
    if len(image_size) != 2:
        raise ConfigError(f"synthesize: image_size must be (H, W), got {image_size}")
    rig = CameraRig(cameras=cameras, height=int(image_size[0]), width=int(image_size[1]))
    try:
        lidar.check()
        rig.check()
    except ValueError as e:
        raise ConfigError(f"synthesize: {e}") from None
    recipe = {
        "version": LIDAR_SYNTH_VERSION,
        "scenes": int(scenes),
        "frames_per_scene": int(frames_per_scene),
        "seed": int(seed),
        "lidar": asdict(lidar),
        "rig": asdict(rig),
        "room": room_recipe(room),
    }
    return dict(jsonable(recipe))


def _rig(recipe: dict[str, Any]) -> CameraRig:
    return CameraRig(**recipe["rig"])


def rig_description(rig: CameraRig) -> dict[str, Any]:
    """The ``rig.json`` of a rig: every camera's ``K``, ``lidar_to_camera`` and ``image_size``."""
    K = rig.camera.K
    cameras = {
        name: {
            "K": K.tolist(),
            "lidar_to_camera": rig.lidar_to_camera(i).tolist(),
            "image_size": [rig.height, rig.width],
        }
        for i, name in enumerate(rig.names)
    }
    return {"cameras": cameras, "points": {"columns": ["x", "y", "z", "intensity"]}}


def _render_scene(out_root: Path, index: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """Build and render scene ``index`` of the recipe into ``out_root/scene_XXXX``; return its summary."""
    rig = _rig(recipe)
    lidar = LidarModel(**recipe["lidar"])
    room_args: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe["room"].items()}
    room = RoomConfig(**room_args)
    layout_rng = np.random.default_rng([recipe["seed"], index, 0])
    sensor_rng = np.random.default_rng([recipe["seed"], index, 1])
    name = f"scene_{index:04d}"
    folder = out_root / name
    (folder / "points").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir()
    for cam in rig.names:
        (folder / "images" / cam).mkdir(parents=True)
    camera = rig.camera
    cid = p.connect(p.DIRECT)
    try:
        scene = build_scene(cid, layout_rng, index, recipe["frames_per_scene"], room)
        tables = prepare_lidar_scene(cid, scene, layout_rng)
        mounts = [rig.camera_to_lidar(i) for i in range(rig.cameras)]
        poses = [lidar_pose_from_camera(T) for T in scene.poses]
        classes_seen: set[int] = set()
        points_total = 0
        for k, lidar_pose in enumerate(poses):
            stem = f"{k:06d}"
            sweep = cast_sweep(cid, lidar, lidar_pose, tables.reflectivity, sensor_rng)
            label = tables.class_lut[sweep.body + 1].astype(np.int32)
            data = np.concatenate([sweep.points, sweep.intensity[:, None]], axis=1).astype(np.float32)
            data.tofile(folder / "points" / f"{stem}.bin")
            np.save(folder / "labels" / f"{stem}.npy", label)
            for cam, mount in zip(rig.names, mounts, strict=True):
                pose = lidar_pose @ mount
                fr = render_frame(cid, camera, pose, tables.class_lut, tables.instance_lut, scene.light)
                Image.fromarray(fr.color).save(folder / "images" / cam / f"{stem}.png", compress_level=1)
            classes_seen.update(int(c) for c in np.unique(label))
            points_total += len(label)
        (folder / "poses.txt").write_text(
            "".join(" ".join(f"{x:.9e}" for x in T.reshape(-1)) + "\n" for T in poses)
        )
        info = scene.to_json()
        info["reflectivity"] = {str(o.instance): float(tables.reflectivity[o.body]) for o in scene.objects}
        (folder / "scene.json").write_text(json.dumps(info, indent=1) + "\n")
    finally:
        p.disconnect(cid)
    return {"name": name, "frames": len(poses), "points": points_total, "classes": sorted(classes_seen)}


def read_lidar_dataset_info(root: str | Path) -> dict[str, Any]:
    """The parsed ``dataset.json`` of a synthesized LiDAR dataset (a :class:`DataError` if absent/other)."""
    return read_dataset_info(root, LIDAR_DATASET_FORMAT)


def lidar_dataset_matches(root: str | Path, recipe: dict[str, Any]) -> bool:
    """Whether ``root`` holds a finished LiDAR dataset rendered from exactly ``recipe``."""
    return dataset_matches(root, recipe, LIDAR_DATASET_FORMAT)


def render_lidar_dataset(
    out: Path, recipe: dict[str, Any], *, progress: Callable[[int, int], None] | None = None
) -> None:
    """Render the dataset of ``recipe`` (:func:`make_lidar_recipe`) into the existing empty folder ``out``,
    ``dataset.json`` last; ``progress(scenes_done, scenes)`` after each scene."""
    scenes = int(recipe["scenes"])
    summaries = []
    for i in range(scenes):
        summaries.append(_render_scene(out, i, recipe))
        if progress is not None:
            progress(i + 1, scenes)
    (out / "rig.json").write_text(json.dumps(rig_description(_rig(recipe)), indent=1) + "\n")
    info = {
        "format": LIDAR_DATASET_FORMAT,
        "layout": "rig",
        "classes": list(CLASS_NAMES),
        "recipe": recipe,
        "scenes": summaries,
        "num_frames": sum(s["frames"] for s in summaries),
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")


def synthesize_lidar(
    out_dir: str | Path,
    scenes: int,
    frames_per_scene: int,
    seed: int,
    image_size: tuple[int, int] | list[int] = (120, 160),
    *,
    lidar: LidarModel = LidarModel(),  # noqa: B008 - frozen dataclass, immutable default
    cameras: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``scenes`` rooms × ``frames_per_scene`` LiDAR sweeps with ``cameras`` images each into
    ``out_dir`` (rig layout; replaced if it holds a previous dataset or is empty). Same arguments →
    byte-identical files."""
    recipe = make_lidar_recipe(scenes, frames_per_scene, seed, image_size, lidar=lidar, cameras=cameras)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "dataset.json").is_file())):
        raise DataError(f"{out}: exists and holds no synthetic dataset; refusing to overwrite it")
    with staged(out, folder=True) as partial:
        render_lidar_dataset(partial, recipe, progress=progress)
        replace_folder(partial, out)
    return out
