"""Camera geometry: back-projection, projection with visibility, voxelization (pure PyTorch, batched)."""

from ppkt.geometry.backproject import BackProjection, backproject_depth, float32_shift, transform_points
from ppkt.geometry.projection import Projection, project_points
from ppkt.geometry.rigid import check_rigid, rotation_about_axis
from ppkt.geometry.voxelize import Voxelization, pack_keys, voxelize

__all__ = [
    "BackProjection",
    "Projection",
    "Voxelization",
    "backproject_depth",
    "check_rigid",
    "float32_shift",
    "pack_keys",
    "project_points",
    "rotation_about_axis",
    "transform_points",
    "voxelize",
]
