"""Joint 2D/3D transforms, PyG-style: each a small class with a ``__repr__`` that copies its input sample.

Transforms that move the images (flip, crop/resize: :mod:`.image`) or the points (rotation, scaling, crop:
:mod:`.points`) update the point→pixel pairing, the intrinsics and the camera poses in the same call, so the
pairing is never stale. Point transforms take a :class:`~ppkt.data.sample.PointSample` or a
:class:`~ppkt.data.sample.PairedSample`; image and teacher transforms (:mod:`.teacher`) a paired sample.
Randomness comes from torch's global generator (seeded per worker by Lightning's
``seed_everything(workers=True)``).
"""

from ppkt.data.transforms.base import Compose, Transform
from ppkt.data.transforms.image import RandomHorizontalFlip, RandomResizedCrop, Superpixels
from ppkt.data.transforms.points import (
    ColorJitter,
    LimitPoints,
    RandomColorDrop,
    RandomCrop,
    RandomRotate,
    RandomScale,
    RangeCrop,
)
from ppkt.data.transforms.teacher import AttachCachedFeatures, CropCachedFeatures
from ppkt.data.transforms.voxelize import FEATURES, GRIDS, Voxelize

__all__ = [
    "FEATURES",
    "GRIDS",
    "AttachCachedFeatures",
    "ColorJitter",
    "Compose",
    "CropCachedFeatures",
    "LimitPoints",
    "RandomColorDrop",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotate",
    "RandomScale",
    "RangeCrop",
    "Superpixels",
    "Transform",
    "Voxelize",
]
