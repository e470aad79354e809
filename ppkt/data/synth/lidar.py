"""A spinning multi-beam LiDAR simulated by ray casting (pybullet ``rayTestBatch``).

The sensor frame is x forward, y left, z up. Beam ``i`` of ``beams`` has the elevation
``fov_down + i·(fov_up − fov_down)/(beams − 1)`` and azimuth step ``k`` the angle ``2πk / azimuths``
counter-clockwise from x: one sweep casts ``beams × azimuths`` rays from the sensor origin, up to
``max_range`` metres, against the scene's **collision** shapes. A return is the hit point along the ray
(range noise ``range_noise`` metres), its intensity is physical-ish — the hit surface's reflectivity (a
property of the object instance, drawn independently of its class) times the cosine of the incidence angle,
plus noise, in ``[0, 1]`` — and its label is the class of the hit body. Rays that hit nothing, and a random
``dropout`` fraction of the others, return nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pybullet as p

__all__ = ["LidarModel", "LidarSweep", "cast_sweep"]

#: rays per ``rayTestBatch`` call (below pybullet's limit: a batch of 16384 returns only 16383 results)
RAY_BATCH = 8192


@dataclass(frozen=True)
class LidarModel:
    """A spinning LiDAR: ``beams`` lasers between ``fov_down`` and ``fov_up`` degrees of elevation,
    ``azimuths`` firings per turn, returns up to ``max_range`` metres."""

    beams: int = 32
    azimuths: int = 1024
    fov_up: float = 5.0
    fov_down: float = -40.0
    max_range: float = 30.0
    range_noise: float = 0.01
    intensity_noise: float = 0.02
    dropout: float = 0.02

    def check(self) -> None:
        if self.beams < 1 or self.azimuths < 1:
            raise ValueError(f"LiDAR beams and azimuths must be >= 1, got {self.beams}, {self.azimuths}")
        if not -90 <= self.fov_down <= self.fov_up <= 90:
            raise ValueError(
                f"LiDAR needs -90 <= fov_down <= fov_up <= 90, got {self.fov_down}, {self.fov_up}"
            )
        if not self.max_range > 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"LiDAR needs max_range > 0 and dropout in [0, 1), got {self}")

    def directions(self) -> np.ndarray:
        """``[beams · azimuths, 3]`` unit ray directions in the sensor frame (beam-major)."""
        if self.beams > 1:
            elevation = np.radians(np.linspace(self.fov_down, self.fov_up, self.beams))
        else:
            elevation = np.radians(np.array([0.5 * (self.fov_down + self.fov_up)]))
        azimuth = 2 * math.pi * np.arange(self.azimuths) / self.azimuths
        el, az = np.meshgrid(elevation, azimuth, indexing="ij")
        return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)


@dataclass
class LidarSweep:
    """One sweep's returns: ``points [N, 3]`` float32 in the sensor frame, ``intensity [N]`` float32 in
    ``[0, 1]``, ``body [N]`` int64 pybullet body hit by each return."""

    points: np.ndarray
    intensity: np.ndarray
    body: np.ndarray


def cast_sweep(
    cid: int,
    lidar: LidarModel,
    lidar_to_world: np.ndarray,
    reflectivity: np.ndarray,
    rng: np.random.Generator,
) -> LidarSweep:
    """Cast one sweep from the sensor pose ``lidar_to_world`` (4×4) in the scene of client ``cid``.

    ``reflectivity[body]`` is the reflectivity in ``[0, 1]`` of every body id (an id beyond the table
    reflects 0.5). ``rng`` draws the range noise, the dropout and the intensity noise.
    """
    d_lidar = lidar.directions()
    R, t = lidar_to_world[:3, :3], lidar_to_world[:3, 3]
    d_world = d_lidar @ R.T
    origin = np.broadcast_to(t, d_world.shape)
    ends = origin + lidar.max_range * d_world
    hits: list[tuple[int, float, tuple[float, float, float]]] = []
    for i in range(0, len(d_world), RAY_BATCH):
        batch = slice(i, i + RAY_BATCH)
        res = p.rayTestBatch(origin[batch].tolist(), ends[batch].tolist(), physicsClientId=cid)
        if len(res) != len(origin[batch]):
            raise RuntimeError(f"pybullet returned {len(res)} ray results for {len(origin[batch])} rays")
        hits.extend((int(r[0]), float(r[2]), r[4]) for r in res)
    body = np.fromiter((h[0] for h in hits), dtype=np.int64, count=len(hits))
    frac = np.fromiter((h[1] for h in hits), dtype=np.float64, count=len(hits))
    normal = np.array([h[2] for h in hits], dtype=np.float64).reshape(-1, 3)
    n = len(hits)
    noise_r = rng.standard_normal(n) * lidar.range_noise
    noise_i = rng.standard_normal(n) * lidar.intensity_noise
    keep = (body >= 0) & (rng.random(n) >= lidar.dropout)
    rng_range = frac * lidar.max_range + noise_r
    keep &= rng_range > 0
    cos_incidence = np.abs(np.sum(normal * d_world, axis=1))
    table = np.full(max(int(body.max(initial=-1)) + 1, len(reflectivity)), 0.5)
    table[: len(reflectivity)] = reflectivity
    refl = table[np.clip(body, 0, None)]
    intensity = np.clip(refl * cos_incidence + noise_i, 0.0, 1.0)
    points = d_lidar[keep] * rng_range[keep, None]
    return LidarSweep(points.astype(np.float32), intensity[keep].astype(np.float32), body[keep])
