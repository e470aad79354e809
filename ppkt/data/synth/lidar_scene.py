"""Make a synthetic room (:func:`~ppkt.data.synth.scene.build_scene`) ready for a LiDAR.

Rays hit collision shapes, and the room's floor, walls and ceiling are visual-only quads, so each gets a
collision box just behind it (inner face 2 mm outside the surface, hidden from the cameras by the quad),
labelled like the quad. Every instance (the
boxes share their quad's) gets a reflectivity drawn uniformly in ``[0.1, 1]``, independently of its class,
so the LiDAR intensity is a cue to the surface, not to the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

from ppkt.data.synth.scene import Scene

__all__ = ["LidarScene", "prepare_lidar_scene"]

#: half thickness (metres) of the collision boxes behind the room surfaces, and their gap to the surface
_HALF_T = 0.05
_GAP = 0.002


@dataclass
class LidarScene:
    """Per pybullet body id (+1, so that "no body" −1 → 0): ``class_lut``, ``instance_lut``; and per body
    id: ``reflectivity``."""

    class_lut: np.ndarray
    instance_lut: np.ndarray
    reflectivity: np.ndarray


def _surface_boxes(scene: Scene) -> dict[str, tuple[list[float], list[float]]]:
    """``name → (half extents, centre)`` of the collision box behind each room surface."""
    sx, sy = scene.half_size
    h = scene.height
    t, g = _HALF_T, _GAP
    sx, sy = sx + g, sy + g
    return {
        "floor": ([sx + t, sy + t, t], [0.0, 0.0, -t - g]),
        "ceiling": ([sx + t, sy + t, t], [0.0, 0.0, h + t + g]),
        "wall+x": ([t, sy + t, h / 2 + t], [sx + t, 0.0, h / 2]),
        "wall-x": ([t, sy + t, h / 2 + t], [-sx - t, 0.0, h / 2]),
        "wall+y": ([sx + t, t, h / 2 + t], [0.0, sy + t, h / 2]),
        "wall-y": ([sx + t, t, h / 2 + t], [0.0, -sy - t, h / 2]),
    }


def prepare_lidar_scene(cid: int, scene: Scene, rng: np.random.Generator) -> LidarScene:
    """Add the room surfaces' collision boxes to client ``cid`` and return the label and reflectivity
    tables of every body. ``rng`` draws the reflectivities (one per instance, in instance order)."""
    boxes = _surface_boxes(scene)
    reflect_of_instance = {o.instance: float(rng.uniform(0.1, 1.0)) for o in scene.objects}
    extra: list[tuple[int, int, int]] = []  # (body, class, instance)
    for o in scene.objects:
        if o.asset in boxes:
            half, centre = boxes[o.asset]
            shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=cid)
            body = p.createMultiBody(
                baseMass=0, baseCollisionShapeIndex=shape, basePosition=centre, physicsClientId=cid
            )
            extra.append((int(body), o.cls, o.instance))
    bodies = [(o.body, o.cls, o.instance) for o in scene.objects] + extra
    n = max(b for b, _, _ in bodies) + 1
    class_lut = np.zeros(n + 1, dtype=np.int64)
    instance_lut = np.zeros(n + 1, dtype=np.int64)
    reflectivity = np.full(n, 0.5)
    for body, cls, inst in bodies:
        class_lut[body + 1], instance_lut[body + 1] = cls, inst
        reflectivity[body] = reflect_of_instance[inst]
    return LidarScene(class_lut, instance_lut, reflectivity)
