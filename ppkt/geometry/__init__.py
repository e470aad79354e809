"""Camera geometry: back-projection, projection with visibility, voxelization (pure PyTorch, batched)."""

from ppkt.geometry.backproject import BackProjection, backproject_depth, float32_shift, transform_points
from ppkt.geometry.projection import Projection, project_points
from ppkt.geometry.rigid import check_rigid, quaternion_to_matrix, rotation_about_axis
from ppkt.geometry.visibility import pinhole_project, pixel_of, visible_points, zbuffer
from ppkt.geometry.voxelize import Voxelization, pack_keys, voxelize

__all__ = [
    "BackProjection",
    "Projection",
    "Voxelization",
    "backproject_depth",
    "check_rigid",
    "float32_shift",
    "pack_keys",
    "pinhole_project",
    "pixel_of",
    "project_points",
    "quaternion_to_matrix",
    "rotation_about_axis",
    "transform_points",
    "visible_points",
    "voxelize",
    "zbuffer",
]
