"""Random indoor rooms in pybullet: textured floor, walls and ceiling, furniture and objects, a camera path.

A room is an axis-aligned box centred on the world origin with the floor at ``z = 0`` (z up). Its floor,
four walls and ceiling are single textured quads facing inwards, so each is an exact plane (kept in
:attr:`Scene.planes` for tests). Tables and shelves stand on the floor (shelves backed against a wall),
small objects stand on the floor or on a table top. The camera moves smoothly along an ellipse inside the
room at 1.2–1.8 m height looking at the room centre with jitter; objects keep a clearance from the path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pybullet as p

from ppkt.data.synth.assets import ASSETS, CLASS_NAMES, TEXTURES, AssetSpec, class_id, data_path, random_tint
from ppkt.data.synth.trajectory import camera_trajectory

__all__ = ["Appearance", "Plane", "RoomConfig", "Scene", "SceneObject", "build_scene", "room_recipe"]

SMALL_CLASSES: tuple[str, ...] = ("tray", "teddy", "duck", "mug", "ball", "box", "toy_block")

#: How surfaces and objects look (:attr:`RoomConfig.appearance`).
Appearance = Literal["random", "natural"]

#: ``appearance: natural``: floors draw from these textures of the shared pool (wood, tiles)
FLOOR_TEXTURES: tuple[str, ...] = ("table/table.png", "checker_grid.jpg", "checker_blue.png")
#: ``appearance: natural``: the ceiling's plain paint
CEILING_PAINT: tuple[float, float, float, float] = (0.93, 0.93, 0.9, 1.0)


@dataclass(frozen=True)
class RoomConfig:
    """Ranges of the random room layout (metres, counts are inclusive ranges)."""

    size: tuple[float, float] = (3.6, 5.6)
    height: tuple[float, float] = (2.5, 2.9)
    tables: tuple[int, int] = (1, 2)
    shelves: tuple[int, int] = (0, 2)
    floor_objects: tuple[int, int] = (3, 6)
    table_objects: tuple[int, int] = (2, 4)
    camera_height: tuple[float, float] = (1.2, 1.8)
    camera_margin: float = 0.9
    clearance: float = 0.35
    texture_scale: tuple[float, float] = (0.6, 2.0)
    #: ``random``: every floor, wall, ceiling and object gets a random tint and a texture from one pool
    #: shared by all classes (objects half the time), so appearance does not tell the class. ``natural``:
    #: objects keep their asset's own colours and textures, floors a tinted wood or tile texture, walls a
    #: plain tint, the ceiling plain off-white — appearance follows the class, as in real rooms. Both draw
    #: the same random numbers, so a seed gives the same rooms, objects, cameras and labels in both.
    appearance: Appearance = "random"


def room_recipe(room: RoomConfig) -> dict[str, Any]:
    """``room`` as a recipe entry; the default ``appearance: random`` is left out, so datasets rendered
    before the option existed keep their recipe (and their cache folder)."""
    entry = asdict(room)
    if entry["appearance"] == "random":
        del entry["appearance"]
    return entry


@dataclass
class Plane:
    """A room surface ``normal · x + offset = 0`` (normal pointing into the room)."""

    cls: int
    instance: int
    normal: tuple[float, float, float]
    offset: float


@dataclass
class SceneObject:
    """A body of the scene with its class and instance id."""

    body: int
    cls: int
    instance: int
    asset: str


@dataclass
class Scene:
    """A built room: its bodies, their labels, the room planes, the lighting and the camera poses."""

    index: int
    half_size: tuple[float, float]
    height: float
    objects: list[SceneObject] = field(default_factory=list)
    planes: list[Plane] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    light: dict[str, Any] = field(default_factory=dict)

    def lookup_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``(class_lut, instance_lut)`` indexed by ``segmentation + 1`` (so background −1 → 0)."""
        n = max((o.body for o in self.objects), default=0) + 2
        cls_lut = np.zeros(n, dtype=np.uint16)
        inst_lut = np.zeros(n, dtype=np.uint16)
        for o in self.objects:
            cls_lut[o.body + 1] = o.cls
            inst_lut[o.body + 1] = o.instance
        return cls_lut, inst_lut

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable description (written as ``scene.json``)."""
        return {
            "index": self.index,
            "room": {"half_size": list(self.half_size), "height": self.height, "floor_z": 0.0},
            "instances": [
                {"instance": o.instance, "class": o.cls, "class_name": CLASS_NAMES[o.cls], "asset": o.asset}
                for o in self.objects
            ],
            "planes": [asdict(pl) for pl in self.planes],
            "light": self.light,
        }


def _quad(cid: int, corners: np.ndarray, uv_repeat: tuple[float, float]) -> int:
    """A static single-sided textured quad body (corners counter-clockwise seen from the visible side)."""
    n = np.cross(corners[1] - corners[0], corners[2] - corners[0])
    n = n / np.linalg.norm(n)
    uvs = [[0.0, 0.0], [uv_repeat[0], 0.0], [uv_repeat[0], uv_repeat[1]], [0.0, uv_repeat[1]]]
    vis = p.createVisualShape(
        p.GEOM_MESH,
        vertices=corners.tolist(),
        indices=[0, 1, 2, 0, 2, 3],
        uvs=uvs,
        normals=[n.tolist()] * 4,
        physicsClientId=cid,
    )
    return int(p.createMultiBody(baseMass=0, baseVisualShapeIndex=vis, physicsClientId=cid))


def _aabb(cid: int, body: int) -> tuple[np.ndarray, np.ndarray]:
    """Union of the axis-aligned bounding boxes of all links of ``body``."""
    boxes = [
        p.getAABB(body, link, physicsClientId=cid)
        for link in range(-1, p.getNumJoints(body, physicsClientId=cid))
    ]
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return lo, hi


class _Builder:
    """Stateful helper that adds bodies to one pybullet client and records their labels."""

    def __init__(self, cid: int, rng: np.random.Generator, cfg: RoomConfig, scene: Scene) -> None:
        self.cid, self.rng, self.cfg, self.scene = cid, rng, cfg, scene
        self._textures: dict[str, int] = {}
        self.cams = np.array([T[:2, 3] for T in scene.poses])

    def register(self, body: int, cls: str, asset: str) -> SceneObject:
        obj = SceneObject(body, class_id(cls), len(self.scene.objects) + 1, asset)
        self.scene.objects.append(obj)
        return obj

    def texture(self, name: str) -> int:
        """pybullet id of texture ``name`` (relative to ``pybullet_data``), loaded on first use."""
        if name not in self._textures:
            self._textures[name] = int(p.loadTexture(str(data_path() / name), physicsClientId=self.cid))
        return self._textures[name]

    def paint(self, body: int, texture_prob: float, surface: str | None = None) -> None:
        """Random tint, and with probability ``texture_prob`` a random texture from the shared pool
        (``appearance: random``); ``surface`` names the room surface's class (``None`` for an object).

        With ``appearance: natural`` the same random numbers are drawn (so the rest of the room is the
        same) but applied by class: an object keeps its own look, a floor takes the tint with a floor
        texture, a wall the tint alone, the ceiling plain paint."""
        rng = self.rng
        tint = random_tint(rng, (0.0, 0.5), (0.55, 1.0)) if surface else random_tint(rng)
        textured = rng.random() < texture_prob
        k = int(rng.integers(len(TEXTURES))) if textured else -1
        kwargs: dict[str, Any] = {"rgbaColor": tint}
        if self.cfg.appearance == "random":
            if textured:
                kwargs["textureUniqueId"] = self.texture(TEXTURES[k])
        elif surface is None:
            return  # the asset's own look
        elif surface == "floor":
            kwargs["textureUniqueId"] = self.texture(FLOOR_TEXTURES[k % len(FLOOR_TEXTURES)])
        elif surface == "ceiling":
            kwargs["rgbaColor"] = CEILING_PAINT
        for link in range(-1, p.getNumJoints(body, physicsClientId=self.cid)):
            p.changeVisualShape(body, link, physicsClientId=self.cid, **kwargs)

    def room(self) -> None:
        sx, sy = self.scene.half_size
        h = self.scene.height
        lo_uv, hi_uv = self.cfg.texture_scale

        def surface(cls: str, name: str, corners: list[list[float]], size: tuple[float, float]) -> None:
            c = np.array(corners, dtype=np.float64)
            tile = self.rng.uniform(lo_uv, hi_uv)
            body = _quad(self.cid, c, (size[0] / tile, size[1] / tile))
            self.paint(body, texture_prob=1.0, surface=cls)
            obj = self.register(body, cls, name)
            n = np.cross(c[1] - c[0], c[2] - c[0])
            n = n / np.linalg.norm(n)
            normal = (float(n[0]), float(n[1]), float(n[2]))
            self.scene.planes.append(Plane(obj.cls, obj.instance, normal, float(-n @ c[0])))

        surface("floor", "floor", [[-sx, -sy, 0], [sx, -sy, 0], [sx, sy, 0], [-sx, sy, 0]], (2 * sx, 2 * sy))
        surface("wall", "wall+x", [[sx, sy, 0], [sx, -sy, 0], [sx, -sy, h], [sx, sy, h]], (2 * sy, h))
        surface("wall", "wall-x", [[-sx, -sy, 0], [-sx, sy, 0], [-sx, sy, h], [-sx, -sy, h]], (2 * sy, h))
        surface("wall", "wall+y", [[-sx, sy, 0], [sx, sy, 0], [sx, sy, h], [-sx, sy, h]], (2 * sx, h))
        surface("wall", "wall-y", [[sx, -sy, 0], [-sx, -sy, 0], [-sx, -sy, h], [sx, -sy, h]], (2 * sx, h))
        surface(
            "ceiling", "ceiling", [[-sx, -sy, h], [-sx, sy, h], [sx, sy, h], [sx, -sy, h]], (2 * sx, 2 * sy)
        )

    def load(self, spec: AssetSpec, yaw: float, scale: float) -> int:
        """Load ``spec`` at the origin with the given yaw (plus a random resting pose for tumbling shapes)."""
        cid = self.cid
        roll, pitch, base_yaw = spec.base_rpy
        if not spec.yaw_only:  # rest on a random face: upright, or tipped about x or y
            k = int(self.rng.integers(3))
            roll += math.pi / 2 if k == 1 else 0.0
            pitch += math.pi / 2 if k == 2 else 0.0
        q_base = p.getQuaternionFromEuler([roll, pitch, base_yaw])
        q_yaw = p.getQuaternionFromEuler([0.0, 0.0, yaw])
        _, orn = p.multiplyTransforms([0, 0, 0], q_yaw, [0, 0, 0], q_base)
        path = str(data_path() / spec.file)
        if spec.is_sdf:
            body = int(p.loadSDF(path, globalScaling=scale, physicsClientId=cid)[0])
            p.resetBasePositionAndOrientation(body, [0, 0, 0], orn, physicsClientId=cid)
        else:
            body = int(
                p.loadURDF(path, [0, 0, 0], orn, useFixedBase=True, globalScaling=scale, physicsClientId=cid)
            )
        return body

    def clear_of_camera(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        """Whether the xy-rectangle ``[lo, hi]`` keeps the configured clearance from every camera position."""
        dx = np.maximum(np.maximum(lo[0] - self.cams[:, 0], self.cams[:, 0] - hi[0]), 0.0)
        dy = np.maximum(np.maximum(lo[1] - self.cams[:, 1], self.cams[:, 1] - hi[1]), 0.0)
        return bool(np.all(np.hypot(dx, dy) >= self.cfg.clearance))

    def place(
        self,
        spec: AssetSpec,
        region: tuple[float, float, float, float],
        z: float,
        occupied: list[tuple[np.ndarray, np.ndarray]],
        yaw: float | None = None,
        against: int | None = None,
        on_table: bool = False,
        tries: int = 25,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Place ``spec`` standing at height ``z`` inside ``region`` (x0, y0, x1, y1) without overlaps.

        ``against`` = 0, 1, 2, 3 puts the object flush against the +x, −x, +y or −y side of ``region``.
        Returns the placed world AABB, or ``None`` (and nothing is added) when no free spot was found.
        """
        rng = self.rng
        scale = float(rng.uniform(*spec.scale_range(on_table=on_table)))
        body = self.load(spec, float(rng.uniform(0, 2 * math.pi)) if yaw is None else yaw, scale)
        lo, hi = _aabb(self.cid, body)
        if spec.origin_at_bottom:  # the base origin (at 0) is the floor contact
            hi[2] = max(hi[2], 0.0)
            lo[2] = 0.0
        half = 0.5 * (hi[:2] - lo[:2])
        x0, y0, x1, y1 = region
        if against == 0:
            x0 = x1 - 2 * half[0]
        elif against == 1:
            x1 = x0 + 2 * half[0]
        elif against == 2:
            y0 = y1 - 2 * half[1]
        elif against == 3:
            y1 = y0 + 2 * half[1]
        for _ in range(tries):
            if x1 - x0 < 2 * half[0] - 1e-9 or y1 - y0 < 2 * half[1] - 1e-9:
                break
            cx = _uniform(rng, x0 + half[0], x1 - half[0])
            cy = _uniform(rng, y0 + half[1], y1 - half[1])
            new_lo = np.array([cx - half[0], cy - half[1], z])
            new_hi = np.array([cx + half[0], cy + half[1], z + hi[2] - lo[2]])
            gap = 0.03
            overlaps = any(
                new_lo[0] < o_hi[0] + gap
                and o_lo[0] < new_hi[0] + gap
                and new_lo[1] < o_hi[1] + gap
                and o_lo[1] < new_hi[1] + gap
                for o_lo, o_hi in occupied
            )
            if overlaps or not self.clear_of_camera(new_lo, new_hi):
                continue
            shift = np.array([cx - 0.5 * (lo[0] + hi[0]), cy - 0.5 * (lo[1] + hi[1]), z - lo[2]])
            pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=self.cid)
            p.resetBasePositionAndOrientation(
                body, (np.asarray(pos) + shift).tolist(), orn, physicsClientId=self.cid
            )
            self.register(body, spec.cls, spec.name)
            occupied.append((new_lo, new_hi))
            return new_lo, new_hi
        p.removeBody(body, physicsClientId=self.cid)
        return None


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """``rng.uniform(lo, hi)``, or ``lo`` when the interval is empty up to rounding."""
    return float(lo) if hi <= lo else float(rng.uniform(lo, hi))


def _pick(rng: np.random.Generator, cls: str) -> AssetSpec:
    options = [a for a in ASSETS if a.cls == cls]
    return options[int(rng.integers(len(options)))]


def build_scene(cid: int, rng: np.random.Generator, index: int, frames: int, cfg: RoomConfig) -> Scene:
    """Reset the pybullet client ``cid`` and build one random room with its camera trajectory."""
    p.resetSimulation(physicsClientId=cid)
    half = (float(rng.uniform(*cfg.size)) / 2, float(rng.uniform(*cfg.size)) / 2)
    scene = Scene(index=index, half_size=half, height=float(rng.uniform(*cfg.height)))
    scene.poses = camera_trajectory(rng, half, frames, cfg.camera_height, cfg.camera_margin)
    b = _Builder(cid, rng, cfg, scene)
    b.room()
    sx, sy = half
    floor: list[tuple[np.ndarray, np.ndarray]] = []
    # shelves, backed against a random wall
    wall_region = (-sx + 0.02, -sy + 0.02, sx - 0.02, sy - 0.02)
    for _ in range(int(rng.integers(cfg.shelves[0], cfg.shelves[1] + 1))):
        wall = int(rng.integers(4))
        yaw = [0.5 * math.pi, -0.5 * math.pi, math.pi, 0.0][wall]
        b.place(_pick(rng, "shelf"), wall_region, 0.0, floor, yaw=yaw, against=wall)
    # tables in the inner part of the room, axis-aligned so that their AABB is their top
    tables: list[tuple[np.ndarray, np.ndarray]] = []
    inner = (-0.75 * sx, -0.75 * sy, 0.75 * sx, 0.75 * sy)
    for _ in range(int(rng.integers(cfg.tables[0], cfg.tables[1] + 1))):
        spec = _pick(rng, "table")
        placed = b.place(spec, inner, 0.0, floor, yaw=0.5 * math.pi * int(rng.integers(4)))
        if placed is not None:
            tables.append(placed)
    # small objects, cycling through a shuffled class list so every room shows most classes
    order = [SMALL_CLASSES[i] for i in rng.permutation(len(SMALL_CLASSES))]
    k = 0
    room_region = (-sx + 0.05, -sy + 0.05, sx - 0.05, sy - 0.05)
    for _ in range(int(rng.integers(cfg.floor_objects[0], cfg.floor_objects[1] + 1))):
        b.place(_pick(rng, order[k % len(order)]), room_region, 0.0, floor)
        k += 1
    for t_lo, t_hi in tables:
        items_on_table: list[tuple[np.ndarray, np.ndarray]] = []
        top = (t_lo[0] + 0.03, t_lo[1] + 0.03, t_hi[0] - 0.03, t_hi[1] - 0.03)
        for _ in range(int(rng.integers(cfg.table_objects[0], cfg.table_objects[1] + 1))):
            spec = _pick(rng, order[k % len(order)])
            b.place(spec, top, float(t_hi[2]), items_on_table, on_table=True)
            k += 1
    # objects get a random tint and, half the time, a random texture from the shared pool (appearance)
    for obj in scene.objects:
        if CLASS_NAMES[obj.cls] not in ("floor", "wall", "ceiling"):
            b.paint(obj.body, texture_prob=0.5)
    scene.light = {
        "lightDirection": [float(x) for x in (*rng.uniform(-1, 1, 2), rng.uniform(0.8, 2.0))],
        "lightColor": [float(x) for x in rng.uniform(0.85, 1.0, 3)],
        "lightAmbientCoeff": float(rng.uniform(0.45, 0.7)),
        "lightDiffuseCoeff": float(rng.uniform(0.3, 0.55)),
        "lightSpecularCoeff": float(rng.uniform(0.0, 0.15)),
    }
    return scene
