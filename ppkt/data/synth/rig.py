"""A sensor rig: cameras mounted around a LiDAR, looking outwards, with their intrinsics and extrinsics.

Frames: the LiDAR's is x forward, y left, z up; a camera's is OpenCV's (x right, y down, z forward). Camera
``i`` of ``n`` looks at the azimuth ``360°·i/n`` (counter-clockwise from the LiDAR's x), pitched down by
``pitch_deg``, its centre ``offset`` metres out from the LiDAR axis along that azimuth and ``drop`` metres
below the LiDAR. With the default vertical field of view (75°) and a 4:3 image, four cameras see all
around with a little overlap between neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ppkt.data.synth.render import Camera
from ppkt.data.synth.trajectory import look_at

__all__ = ["CameraRig", "lidar_pose_from_camera"]


@dataclass(frozen=True)
class CameraRig:
    """``cameras`` pinhole cameras of ``height × width`` pixels and vertical field of view ``fov_deg``
    around a LiDAR (see the module docstring)."""

    cameras: int = 4
    height: int = 120
    width: int = 160
    fov_deg: float = 75.0
    pitch_deg: float = 10.0
    offset: float = 0.08
    drop: float = 0.06

    def check(self) -> None:
        if self.cameras < 1 or min(self.height, self.width) < 8:
            raise ValueError(f"a rig needs >= 1 camera of >= 8x8 pixels, got {self}")
        if not 0 < self.fov_deg < 170:
            raise ValueError(f"camera fov_deg must be in (0, 170), got {self.fov_deg}")

    @property
    def names(self) -> list[str]:
        return [f"cam_{i}" for i in range(self.cameras)]

    @property
    def camera(self) -> Camera:
        """The renderer's camera (same for every rig camera)."""
        return Camera(height=self.height, width=self.width, fov_deg=self.fov_deg)

    def camera_to_lidar(self, i: int) -> np.ndarray:
        """4×4 pose of camera ``i`` in the LiDAR frame (``x_lidar = T @ x_cam``)."""
        yaw = 2 * math.pi * i / self.cameras
        pitch = math.radians(self.pitch_deg)
        heading = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        eye = self.offset * heading + np.array([0.0, 0.0, -self.drop])
        forward = math.cos(pitch) * heading + np.array([0.0, 0.0, -math.sin(pitch)])
        return look_at(eye, eye + forward)

    def lidar_to_camera(self, i: int) -> np.ndarray:
        """4×4 ``x_cam = T @ x_lidar`` of camera ``i`` (the rig layout's ``lidar_to_camera``)."""
        return np.linalg.inv(self.camera_to_lidar(i))


def lidar_pose_from_camera(camera_to_world: np.ndarray) -> np.ndarray:
    """A level LiDAR-to-world pose at a camera's position, heading where the camera looks (its yaw)."""
    f = camera_to_world[:3, 2]
    yaw = math.atan2(float(f[1]), float(f[0]))
    T = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    T[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = camera_to_world[:3, 3]
    return T
