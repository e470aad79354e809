"""Colour-to-depth registration for RGB-D cameras whose colour and depth images differ (ScanNet):
depth pixel (u, v) takes the colour at K_c · K_d⁻¹ · [u, v, 1]ᵀ (co-located cameras), bilinear or nearest."""

from __future__ import annotations

from typing import Literal

import numpy as np


def _registration_grid(
    K_depth: np.ndarray, K_color: np.ndarray, depth_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Colour-image coordinates ``(x, y)`` (each ``[H, W]`` float64) of every depth pixel centre."""
    H, W = depth_hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    M = K_color @ np.linalg.inv(K_depth)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1) @ M.T
    return pix[..., 0] / pix[..., 2], pix[..., 1] / pix[..., 2]


#: ``(flat colour-pixel indices [k, H·W] int32, weights [k, H·W, 1] float32 or None)``, k = 4 or 1
SamplingTable = tuple[np.ndarray, np.ndarray | None]


def sampling_table(
    K_color: np.ndarray,
    K_depth: np.ndarray,
    depth_hw: tuple[int, int],
    color_hw: tuple[int, int],
    interpolation: Literal["bilinear", "nearest"] = "bilinear",
) -> SamplingTable:
    """Which colour pixels (and weights) every depth pixel samples: see :func:`register_color`."""
    x, y = _registration_grid(K_depth, K_color, depth_hw)
    Hc, Wc = color_hw
    if interpolation == "nearest":
        xi = np.clip(np.floor(x + 0.5), 0, Wc - 1).astype(np.int64)
        yi = np.clip(np.floor(y + 0.5), 0, Hc - 1).astype(np.int64)
        return (yi * Wc + xi).reshape(1, -1).astype(np.int32), None
    x = np.clip(x, 0.0, Wc - 1.0).ravel()
    y = np.clip(y, 0.0, Hc - 1.0).ravel()
    x0 = np.clip(np.floor(x).astype(np.int64), 0, max(Wc - 2, 0))
    y0 = np.clip(np.floor(y).astype(np.int64), 0, max(Hc - 2, 0))
    x1, y1 = np.minimum(x0 + 1, Wc - 1), np.minimum(y0 + 1, Hc - 1)
    wx, wy = x - x0, y - y0
    idx = np.stack([y0 * Wc + x0, y0 * Wc + x1, y1 * Wc + x0, y1 * Wc + x1]).astype(np.int32)
    w = np.stack([(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy]).astype(np.float32)
    return idx, w[..., None]


def apply_sampling(color: np.ndarray, table: SamplingTable, depth_hw: tuple[int, int]) -> np.ndarray:
    """Resample ``color [Hc, Wc, 3]`` uint8 with a :func:`sampling_table` to ``[H, W, 3]`` uint8."""
    idx, w = table
    flat = color.reshape(-1, color.shape[-1])
    if w is None:
        out = flat[idx[0]]
    else:
        acc = flat[idx[0]].astype(np.float32) * w[0]
        for k in range(1, idx.shape[0]):
            acc += flat[idx[k]].astype(np.float32) * w[k]
        out = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    return out.reshape(depth_hw[0], depth_hw[1], color.shape[-1])


def register_color(
    color: np.ndarray,
    K_color: np.ndarray,
    K_depth: np.ndarray,
    depth_hw: tuple[int, int],
    interpolation: Literal["bilinear", "nearest"] = "bilinear",
) -> np.ndarray:
    """Resample ``color`` ``[Hc, Wc, 3]`` into the depth image's pixel grid (co-located cameras).

    Depth pixel ``(u, v)`` takes the colour at ``K_color · K_depth⁻¹ · [u, v, 1]ᵀ`` (integer coordinates are
    pixel centres), sampled bilinearly or at the nearest pixel; outside positions clamp to the border.
    """
    table = sampling_table(K_color, K_depth, depth_hw, (color.shape[0], color.shape[1]), interpolation)
    return apply_sampling(color, table, depth_hw)
