"""Synthetic indoor RGB-D scenes rendered headlessly on CPU with pybullet's real textured assets.

:func:`synthesize` writes rooms (textured floor, walls, ceiling; tables, shelves and small objects with
random tints and textures) seen along smooth camera paths, with Kinect-like depth noise, per-pixel semantic
class and instance id, in the generic layout read by :class:`ppkt.data.readers.folder.RGBDFolder`.
"""

from ppkt.data.synth.assets import ASSETS, CLASS_NAMES, TEXTURES, AssetSpec
from ppkt.data.synth.render import Camera, DepthNoise, RenderedFrame, add_depth_noise, render_frame
from ppkt.data.synth.scene import Plane, RoomConfig, Scene, build_scene
from ppkt.data.synth.trajectory import camera_trajectory, look_at
from ppkt.data.synth.writer import (
    SYNTH_VERSION,
    dataset_matches,
    make_recipe,
    read_dataset_info,
    render_dataset,
    synthesize,
)

__all__ = [
    "ASSETS",
    "CLASS_NAMES",
    "SYNTH_VERSION",
    "TEXTURES",
    "AssetSpec",
    "Camera",
    "DepthNoise",
    "Plane",
    "RenderedFrame",
    "RoomConfig",
    "Scene",
    "add_depth_noise",
    "build_scene",
    "camera_trajectory",
    "dataset_matches",
    "look_at",
    "make_recipe",
    "read_dataset_info",
    "render_dataset",
    "render_frame",
    "synthesize",
]
