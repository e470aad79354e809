"""Headless CPU rendering with pybullet's TinyRenderer, and a Kinect-like depth noise model.

Camera convention (verified numerically by back-projecting rendered depth onto known planes, for even and
odd image sizes): pybullet's image with vertical field of view ``fov`` is the pinhole camera

    ``fx = fy = H / (2·tan(fov/2))``,  ``cx = W/2``,  ``cy = H/2 − 1``

on integer pixel coordinates (pixel ``(u, v)`` = column, row; row 0 at the top), and the z-buffer value
``b`` converts to metric depth along the optical axis as ``z = far·near / (far − (far − near)·b)``.
Color, depth and segmentation come from the same rasterisation, so they are pixel-aligned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybullet as p

__all__ = ["Camera", "DepthNoise", "RenderedFrame", "add_depth_noise", "render_frame", "view_matrix"]

# OpenCV camera (x right, y down, z forward) → OpenGL camera (x right, y up, z backward)
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Camera:
    """A pybullet pinhole camera: image size, vertical field of view (degrees) and clip planes (metres)."""

    height: int = 240
    width: int = 320
    fov_deg: float = 55.0
    near: float = 0.05
    far: float = 12.0

    @property
    def K(self) -> np.ndarray:
        """The 3×3 intrinsics of pybullet's rendered image (see the module docstring)."""
        f = self.height / (2.0 * math.tan(math.radians(self.fov_deg) / 2.0))
        return np.array([[f, 0.0, self.width / 2.0], [0.0, f, self.height / 2.0 - 1.0], [0.0, 0.0, 1.0]])

    def projection_matrix(self) -> list[float]:
        """pybullet's OpenGL projection matrix (column-major, 16 floats)."""
        return list(p.computeProjectionMatrixFOV(self.fov_deg, self.width / self.height, self.near, self.far))

    def metric_depth(self, zbuffer: np.ndarray) -> np.ndarray:
        """Metric depth (metres along the optical axis) from pybullet's ``[0, 1]`` z-buffer."""
        b = zbuffer.astype(np.float64)
        return self.far * self.near / (self.far - (self.far - self.near) * b)


def view_matrix(pose: np.ndarray) -> list[float]:
    """pybullet's column-major view matrix for a camera-to-world pose in the OpenCV camera frame."""
    world_to_gl = _CV_TO_GL @ np.linalg.inv(pose)
    return [float(x) for x in world_to_gl.flatten(order="F")]


@dataclass
class RenderedFrame:
    """One rendered view: uint8 RGB, float64 depth in metres (0 where nothing was hit), class and instance."""

    color: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    instance: np.ndarray


def render_frame(
    cid: int,
    camera: Camera,
    pose: np.ndarray,
    class_lut: np.ndarray,
    instance_lut: np.ndarray,
    light: dict[str, Any] | None = None,
) -> RenderedFrame:
    """Render the scene of client ``cid`` from ``pose`` (camera-to-world, OpenCV frame).

    ``class_lut`` / ``instance_lut`` map ``segmentation + 1`` (pybullet body id + 1; background −1 → 0) to
    the class and instance ids.
    """
    H, W = camera.height, camera.width
    _, _, rgba, zbuf, seg = p.getCameraImage(
        W,
        H,
        viewMatrix=view_matrix(pose),
        projectionMatrix=camera.projection_matrix(),
        renderer=p.ER_TINY_RENDERER,
        shadow=0,
        physicsClientId=cid,
        **(light or {}),
    )
    color = np.asarray(rgba, dtype=np.uint8).reshape(H, W, 4)[..., :3].copy()
    seg = np.asarray(seg, dtype=np.int64).reshape(H, W)
    zbuf = np.asarray(zbuf, dtype=np.float64).reshape(H, W)
    depth = camera.metric_depth(zbuf)
    hit = seg >= 0
    depth[~hit] = 0.0
    idx = np.clip(seg + 1, 0, len(class_lut) - 1)
    label = np.where(hit, class_lut[idx], 0).astype(np.uint16)
    instance = np.where(hit, instance_lut[idx], 0).astype(np.uint16)
    return RenderedFrame(color, depth, label, instance)


@dataclass(frozen=True)
class DepthNoise:
    """Kinect-like structured-light depth errors.

    * axial Gaussian noise ``σ(z) = sigma_base + sigma_quad·(z − sigma_z0)²`` metres (Nguyen et al. 2012);
    * independent pixel dropout with probability ``dropout``;
    * dropout near depth discontinuities: a pixel whose 4-neighbour depth jump exceeds
      ``edge_jump + edge_jump_rel·z`` (or that borders an invalid pixel) is dropped with probability
      ``edge_dropout``, the band widened by ``edge_width − 1`` pixels.
    """

    sigma_base: float = 0.0012
    sigma_quad: float = 0.0019
    sigma_z0: float = 0.4
    dropout: float = 0.01
    edge_jump: float = 0.05
    edge_jump_rel: float = 0.02
    edge_dropout: float = 0.6
    edge_width: int = 1

    def sigma(self, z: np.ndarray) -> np.ndarray:
        """Axial standard deviation (metres) at depth ``z``."""
        return self.sigma_base + self.sigma_quad * (z - self.sigma_z0) ** 2


def _discontinuities(depth: np.ndarray, noise: DepthNoise) -> np.ndarray:
    """Pixels next to a depth jump (or to an invalid pixel), as a bool mask."""
    z = depth
    pad = np.pad(z, 1, mode="edge")
    H, W = z.shape
    thresh = noise.edge_jump + noise.edge_jump_rel * z
    edge = np.zeros(z.shape, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[dy : dy + H, dx : dx + W]
        edge |= (np.abs(nb - z) > thresh) | (nb <= 0)
    for _ in range(max(noise.edge_width, 1) - 1):
        grown = np.pad(edge, 1)
        edge = edge | grown[:-2, 1:-1] | grown[2:, 1:-1] | grown[1:-1, :-2] | grown[1:-1, 2:]
    return edge & (z > 0)


def add_depth_noise(depth: np.ndarray, noise: DepthNoise, rng: np.random.Generator) -> np.ndarray:
    """A noisy copy of clean metric ``depth`` (0 = invalid stays invalid; dropped pixels become 0)."""
    z = depth.astype(np.float64)
    valid = z > 0
    edge = _discontinuities(z, noise)
    drop_edge = edge & (rng.random(z.shape) < noise.edge_dropout)
    drop = rng.random(z.shape) < noise.dropout
    noisy = z + rng.standard_normal(z.shape) * noise.sigma(z)
    keep = valid & ~drop & ~drop_edge & (noisy > 0)
    return np.where(keep, noisy, 0.0)
