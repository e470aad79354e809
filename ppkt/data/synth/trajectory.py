"""Smooth camera paths inside a room: an elliptic walk at 1.2–1.8 m height looking at the room centre.

Poses are camera-to-world 4×4 matrices in the OpenCV camera frame (x right, y down, z forward), world z up.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["camera_trajectory", "look_at"]


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world 4×4 pose (OpenCV camera: x right, y down, z forward) from ``eye`` to ``target``."""
    f = target - eye
    f = f / np.linalg.norm(f)
    r = np.cross(f, np.array([0.0, 0.0, 1.0]))
    r = r / np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f], axis=1)
    c, s = math.cos(roll), math.sin(roll)
    R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = eye
    return T


def _smooth(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth random signal on ``t ∈ [0, 1]``: two slow sinusoids, total amplitude ≤ ``amplitude``."""
    out = np.zeros_like(t)
    for _ in range(2):
        freq = rng.uniform(0.3, 1.2)
        phase = rng.uniform(0.0, 2 * math.pi)
        out += 0.5 * amplitude * np.sin(2 * math.pi * freq * t + phase)
    return out


def camera_trajectory(
    rng: np.random.Generator,
    half_size: tuple[float, float],
    frames: int,
    camera_height: tuple[float, float],
    camera_margin: float,
) -> list[np.ndarray]:
    """Camera-to-world poses along a smooth elliptic walk inside the room, looking at the centre.

    The walk keeps ``camera_margin`` metres from the walls at a height within ``camera_height``.
    """
    a = max(half_size[0] - camera_margin, 0.3)
    b = max(half_size[1] - camera_margin, 0.3)
    t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    theta0 = rng.uniform(0.0, 2 * math.pi)
    sweep = rng.uniform(0.5, 1.0) * math.pi * rng.choice([-1.0, 1.0])
    theta = theta0 + sweep * t
    radial = 1.0 + _smooth(rng, t, 0.12)
    lo, hi = camera_height
    mid, amp = 0.5 * (lo + hi), 0.5 * (hi - lo)
    h0 = rng.uniform(mid - 0.5 * amp, mid + 0.5 * amp)
    height = np.clip(h0 + _smooth(rng, t, 0.5 * amp), lo, hi)
    tx, ty = _smooth(rng, t, 0.5), _smooth(rng, t, 0.5)
    tz = rng.uniform(0.45, 0.8) + _smooth(rng, t, 0.2)
    roll = np.radians(_smooth(rng, t, 3.0))
    poses = []
    for k in range(len(t)):
        eye = np.array([a * radial[k] * math.cos(theta[k]), b * radial[k] * math.sin(theta[k]), height[k]])
        target = np.array([tx[k], ty[k], tz[k]])
        poses.append(look_at(eye, target, float(roll[k])))
    return poses
