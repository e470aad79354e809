"""The semantic classes, object assets and surface textures of the synthetic indoor scenes.

Every object is a real textured asset shipped with ``pybullet_data``; the class of a pixel is the class of
the asset that covers it. By default appearance is randomised per instance (tint and/or a texture drawn from
one pool shared by every class, floors and walls included), so colour alone does not tell the class;
``RoomConfig.appearance = "natural"`` keeps each asset's own look instead (:mod:`ppkt.data.synth.scene`).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet_data

__all__ = [
    "ASSETS",
    "CLASS_NAMES",
    "TEXTURES",
    "AssetSpec",
    "class_id",
    "data_path",
    "random_tint",
]

#: Semantic classes; index = class id written to ``<frame>.label.png`` (0 = unlabelled / background).
CLASS_NAMES: tuple[str, ...] = (
    "unlabelled",
    "floor",
    "wall",
    "ceiling",
    "table",
    "shelf",
    "tray",
    "teddy",
    "duck",
    "mug",
    "ball",
    "box",
    "toy_block",
)


def class_id(name: str) -> int:
    """The id of class ``name`` in :data:`CLASS_NAMES`."""
    return CLASS_NAMES.index(name)


@dataclass(frozen=True)
class AssetSpec:
    """One loadable object: file relative to ``pybullet_data``, class, scale range and where it may stand.

    ``support`` is ``"floor"``, ``"table"`` (floor or table top) or ``"wall"`` (on the floor, backed
    against a wall); ``yaw_only`` objects keep their upright orientation, others may also lie on a side.
    """

    name: str
    cls: str
    file: str
    scale: tuple[float, float]
    support: str = "floor"
    yaw_only: bool = True
    #: extra rotation (roll, pitch, yaw) applied before the random yaw, to stand the asset upright
    base_rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: the asset's origin is its floor contact (its collision shapes do not reach the floor, e.g. table legs)
    origin_at_bottom: bool = False
    #: scale multiplier when the object stands on the floor rather than on a table
    floor_boost: float = 1.0

    def scale_range(self, on_table: bool) -> tuple[float, float]:
        """Scale range: the lower half on a table top, the upper half × ``floor_boost`` on the floor."""
        lo, hi = self.scale
        mid = 0.5 * (lo + hi)
        if self.support != "table":
            return (lo, hi)
        return (lo, mid) if on_table else (mid * self.floor_boost, hi * self.floor_boost)

    @property
    def is_sdf(self) -> bool:
        """Whether the asset is an SDF world file (loaded with ``loadSDF``)."""
        return self.file.endswith(".sdf")


#: Object assets. Scales turn the raw assets into plausible indoor sizes (metres).
ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("table", "table", "table/table.urdf", (0.75, 1.05), origin_at_bottom=True),
    AssetSpec("table_square", "table", "table_square/table_square.urdf", (1.0, 1.35), origin_at_bottom=True),
    AssetSpec("kiva_shelf", "shelf", "kiva_shelf/model.sdf", (0.55, 0.75), support="wall"),
    AssetSpec("traybox", "tray", "tray/traybox.urdf", (0.45, 0.8), support="table"),
    AssetSpec("tray_textured", "tray", "tray/tray_textured2.urdf", (0.45, 0.8), support="table"),
    AssetSpec(
        "teddy", "teddy", "teddy_vhacd.urdf", (2.5, 4.5), "table", base_rpy=(1.5708, 0, 0), floor_boost=1.8
    ),
    AssetSpec(
        "duck", "duck", "duck_vhacd.urdf", (1.5, 3.0), "table", base_rpy=(1.5708, 0, 0), floor_boost=1.8
    ),
    AssetSpec("mug", "mug", "objects/mug.urdf", (1.0, 1.6), support="table", floor_boost=1.5),
    AssetSpec("soccerball", "ball", "soccerball.urdf", (0.12, 0.3), support="table", floor_boost=1.3),
    AssetSpec("sphere", "ball", "sphere2.urdf", (0.1, 0.3), support="table", floor_boost=1.3),
    AssetSpec("cube", "box", "cube.urdf", (0.15, 0.45), support="table", yaw_only=False),
    AssetSpec("lego", "toy_block", "lego/lego.urdf", (2.5, 5.0), "table", yaw_only=False, floor_boost=2.0),
    AssetSpec("jenga", "toy_block", "jenga/jenga.urdf", (1.2, 2.2), "table", yaw_only=False, floor_boost=2.0),
)

#: Texture pool (relative to ``pybullet_data``), shared by floors, walls and every object class.
TEXTURES: tuple[str, ...] = (
    "checker_blue.png",
    "checker_grid.jpg",
    "tex256.png",
    "table/table.png",
    "tray/tray.jpg",
    "jenga/jenga.png",
    "colors16.png",
    "cube.png",
    "duckCM.png",
    "heightmaps/Maze.png",
    "heightmaps/wm_height_out.png",
    "roboschool/models_outdoor/stadium/stadium_grass.jpg",
    "domino/domino.jpg",
)


def data_path() -> Path:
    """The ``pybullet_data`` folder."""
    return Path(pybullet_data.getDataPath())


def random_tint(
    rng: np.random.Generator, sat: tuple[float, float] = (0.0, 0.8), val: tuple[float, float] = (0.45, 1.0)
) -> tuple[float, float, float, float]:
    """A random opaque RGBA tint (uniform hue, bounded saturation and value)."""
    h = float(rng.uniform(0.0, 1.0))
    s = float(rng.uniform(*sat))
    v = float(rng.uniform(*val))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (r, g, b, 1.0)
