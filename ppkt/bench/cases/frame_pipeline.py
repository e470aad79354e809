"""``frame_pipeline``: one RGB-D frame to world points to voxels (ppkt vs Open3D when importable)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ppkt.bench.context import BenchContext, error_text, time_ratio
from ppkt.bench.timing import num_threads


def _shared_7scenes() -> Path | None:
    env = os.environ.get("PPKT_BENCH_7SCENES")
    candidates = [Path(env)] if env else []
    candidates += [
        Path.cwd().parent / "shared" / "data" / "7scenes-redkitchen",
        Path(__file__).resolve().parents[4] / "shared" / "data" / "7scenes-redkitchen",
    ]
    for c in candidates:
        if (c / "camera-intrinsics.txt").is_file():
            return c
    return None


def _synthetic_frame(h: int, w: int) -> Any:
    """A 640×480-style frame of a box room seen from inside (analytic depth, random colours)."""
    from ppkt.data.types import Frame

    f = 585.0 * w / 640
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u)], axis=-1)
    # distance to the walls of a box [-2, 2] x [-1.2, 1.3] x [0, 4] from the origin, along each ray
    t = np.full((h, w), np.inf)
    for axis, lo, hi in ((0, -2.0, 2.0), (1, -1.2, 1.3), (2, 0.0, 4.0)):
        d = rays[..., axis]
        with np.errstate(divide="ignore"):
            for plane in (lo, hi):
                tp = plane / d
                t = np.where((tp > 0) & (tp < t), tp, t)
    depth = t.astype(np.float32)  # z-depth along the optical axis equals t (rays have z = 1)
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pose = np.eye(4)
    return Frame("synthetic", "frame-000000", color, depth, K, pose)


def case_frame_pipeline(ctx: BenchContext) -> dict[str, Any]:
    """One RGB-D frame (in memory) → world points with their pixel → 2.5 cm voxels with the inverse map."""
    from ppkt.data.pairing import frame_to_sample
    from ppkt.geometry import voxelize

    root = _shared_7scenes()
    if root is not None and ctx.sizes.frame_hw == (480, 640):
        from ppkt.data.readers import open_scenes

        scene = open_scenes(root, "7scenes")[0]
        frame = scene.read(0)
        source = f"7scenes {root.name}/{frame.name}"
    else:
        frame = _synthetic_frame(*ctx.sizes.frame_hw)
        source = "synthetic box room"
    voxel, min_depth, max_depth = 0.025, 0.1, 6.0

    def ppkt_run() -> tuple[Any, Any]:
        s = frame_to_sample(frame, min_depth=min_depth, max_depth=max_depth)
        return s, voxelize(s.points, voxel)

    with num_threads(ctx.threads):
        sample, vox = ppkt_run()
        timing = ctx.time(ppkt_run)
    res: dict[str, Any] = {
        "source": source,
        "image": list(frame.shape),
        "voxel_size": voxel,
        "points": int(sample.points.shape[0]),
        "voxels": int(vox.coords.shape[0]),
        "ppkt": timing,
        "note": "always on the CPU (frame_to_sample works on the frame's numpy arrays); reading and "
        "decoding the files excluded",
    }
    try:
        import open3d as o3d
    except Exception as e:
        res["open3d"] = {"skipped": f"open3d not importable: {error_text(e)}"}
        return res
    try:
        h, w = frame.shape
        K = frame.K
        intr = o3d.camera.PinholeCameraIntrinsic(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        extrinsic = np.linalg.inv(frame.pose)  # world-to-camera
        depth = np.where((frame.depth > min_depth) & (frame.depth <= max_depth), frame.depth, 0)
        depth = np.ascontiguousarray(depth.astype(np.float32))
        color = np.ascontiguousarray(frame.color)

        def o3d_run() -> Any:
            rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
                o3d.geometry.Image(color),
                o3d.geometry.Image(depth),
                depth_scale=1.0,
                depth_trunc=max_depth,
                convert_rgb_to_intensity=False,
            )
            pcd = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, intr, extrinsic)
            return pcd.voxel_down_sample_and_trace(voxel, pcd.get_min_bound(), pcd.get_max_bound(), False)

        o3d_run()
        res["open3d"] = ctx.time(o3d_run)
        res["ratio_vs_open3d"] = time_ratio(timing, res["open3d"])
    except Exception as e:
        res["open3d"] = {"skipped": f"open3d failed: {error_text(e)}"}
    return res
