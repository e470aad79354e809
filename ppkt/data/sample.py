"""The one sample object and the one batch format of ppkt.

A :class:`Sample` is one RGB-D frame (or one fused scene) on its way to the networks:

* ``points [N, 3]`` float32 (world frame, after 3D augmentation) and ``colors [N, 3]`` in ``[0, 1]``;
* ``images [V, 3, H, W]`` float32 in ``[0, 1]`` — the V camera images the points were seen from (1 for RGB-D);
* the **point→pixel pairing**: ``pair_point [P]`` (point index), ``pair_image [P]`` (camera index) and
  ``pair_uv [P, 2]`` float pixel coordinates ``(u, v)`` in the (augmented) image, integer = pixel centre.
  Every transform that moves the image or the points updates the pairing in the same call.
* after :class:`~ppkt.data.transforms.Voxelize`: ``coords [M, 3]`` int32 voxel coordinates, ``inverse [N]``
  point→voxel map, ``feats [M, C]`` input features per voxel, and ``pair_voxel [P']`` — the pairs reduced
  to at most **one per voxel** (so a voxel is never its own negative in the contrastive loss);
* optional ``labels [N]`` int64 (−1 = ignore) for downstream tasks;
* with a teacher-feature cache: ``view [3, 3]`` float64, the affine map from the (augmented) image's pixel
  coordinates ``(u, v, 1)`` to the original frame's (the image transforms compose onto it, like the
  pairing), ``teacher_cache`` (the whole frame's cached maps) and, after
  :class:`~ppkt.data.transforms.CropCachedFeatures`, ``teacher_feats`` — per teacher layer ``[V, C_i,
  ceil(H / s_i), ceil(W / s_i)]``, the maps of the augmented image as the teacher would give them.
* after :class:`~ppkt.data.transforms.Superpixels`: ``pair_segment [P]`` int64, the superpixel of each
  pair's pixel (numbered per image, computed on the original frame, so image transforms keep it valid).

A :class:`Batch` concatenates the samples of a mini-batch. ``offset`` vectors hold **cumulative end counts**
(Pointcept convention): sample ``b`` owns voxels ``offset[b-1]:offset[b]``. ``coords`` gain a leading batch
column ``(b, x, y, z)``; :func:`collate` shifts every index (inverse map, pairing voxel and image indices) so
they address the concatenated tensors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ppkt.data.types import CachedFeatures


@dataclass
class Sample:
    """One frame or scene; see the module docstring for every field's meaning and shape."""

    points: Tensor
    colors: Tensor
    images: Tensor
    pair_point: Tensor
    pair_image: Tensor
    pair_uv: Tensor
    labels: Tensor | None = None
    coords: Tensor | None = None
    inverse: Tensor | None = None
    feats: Tensor | None = None
    pair_voxel: Tensor | None = None
    name: str = ""
    view: Tensor | None = None
    teacher_cache: CachedFeatures | None = None
    teacher_feats: list[Tensor] | None = None
    pair_segment: Tensor | None = None

    def copy(self) -> Sample:
        """A shallow copy: transforms replace tensors, never modify them in place."""
        return copy.copy(self)

    def select_pairs(self, keep: Tensor) -> None:
        """Keep only the pairs selected by ``keep`` (a bool mask ``[P]`` or an index tensor)."""
        self.pair_point = self.pair_point[keep]
        self.pair_image = self.pair_image[keep]
        self.pair_uv = self.pair_uv[keep]
        if self.pair_segment is not None:
            self.pair_segment = self.pair_segment[keep]


@dataclass
class Batch:
    """A mini-batch of ``B`` voxelized samples (see the module docstring).

    Attributes:
        coords: ``[M, 4]`` int32 ``(b, x, y, z)``.
        feats: ``[M, C]`` float32 input features.
        offset: ``[B]`` int64 cumulative voxel counts.
        points: ``[N, 3]``; ``point_offset [B]`` cumulative point counts; ``inverse [N]`` global voxel index.
        images: ``[V, 3, H, W]``; ``image_offset [B]`` cumulative image counts.
        pair_voxel, pair_image: ``[P]`` global voxel / image index of each pair; ``pair_uv [P, 2]`` pixels.
        labels: ``[N]`` int64 or ``None``.
        teacher_feats: per teacher layer ``[V, C_i, h_i, w_i]`` cached teacher maps of ``images``, or
            ``None`` (the teacher runs on ``images``).
        pair_segment: ``[P]`` superpixel of each pair within its image, or ``None``.
    """

    coords: Tensor
    feats: Tensor
    offset: Tensor
    points: Tensor
    point_offset: Tensor
    inverse: Tensor
    images: Tensor
    image_offset: Tensor
    pair_voxel: Tensor
    pair_image: Tensor
    pair_uv: Tensor
    labels: Tensor | None = None
    names: list[str] = field(default_factory=list)
    teacher_feats: list[Tensor] | None = None
    pair_segment: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.offset.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def to(self, device: torch.device | str) -> Batch:
        out = copy.copy(self)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                setattr(out, f.name, v.to(device, non_blocking=True))
        if self.teacher_feats is not None:
            out.teacher_feats = [t.to(device, non_blocking=True) for t in self.teacher_feats]
        return out


def _cumsum(counts: list[int]) -> Tensor:
    return torch.cumsum(torch.tensor(counts, dtype=torch.long), 0)


def _starts(counts: list[int]) -> list[int]:
    out, s = [], 0
    for c in counts:
        out.append(s)
        s += c
    return out


def _required(sample: Sample, name: str) -> Tensor:
    value = getattr(sample, name)
    if value is None:
        raise ValueError(f"collate: sample {sample.name!r} has no {name} (apply Voxelize first)")
    return value


def collate(samples: list[Sample]) -> Batch:
    """Concatenate voxelized samples into a :class:`Batch`, shifting all indices."""
    if not samples:
        raise ValueError("collate: empty list of samples")
    coords = [_required(s, "coords") for s in samples]
    feats = [_required(s, "feats") for s in samples]
    inverse = [_required(s, "inverse") for s in samples]
    pair_voxel = [_required(s, "pair_voxel") for s in samples]
    if len({tuple(s.images.shape[1:]) for s in samples}) != 1:
        raise ValueError("collate: all images in a batch must have the same size; use a Resize transform")
    n_vox = [int(c.shape[0]) for c in coords]
    n_img = [int(s.images.shape[0]) for s in samples]
    vox0, img0 = _starts(n_vox), _starts(n_img)
    labels = [s.labels for s in samples if s.labels is not None]
    teacher = [s.teacher_feats for s in samples if s.teacher_feats is not None]
    if teacher and len(teacher) != len(samples):
        raise ValueError("collate: some samples have cached teacher features and some do not")
    segments = [s.pair_segment for s in samples if s.pair_segment is not None]
    if segments and len(segments) != len(samples):
        raise ValueError("collate: some samples have superpixels and some do not")
    return Batch(
        coords=torch.cat(
            [
                torch.cat([torch.full((len(c), 1), b, dtype=torch.int32), c.int()], 1)
                for b, c in enumerate(coords)
            ]
        ),
        feats=torch.cat(feats),
        offset=_cumsum(n_vox),
        points=torch.cat([s.points for s in samples]),
        point_offset=_cumsum([int(s.points.shape[0]) for s in samples]),
        inverse=torch.cat([inv + v for inv, v in zip(inverse, vox0)]),
        images=torch.cat([s.images for s in samples]),
        image_offset=_cumsum(n_img),
        pair_voxel=torch.cat([pv + v for pv, v in zip(pair_voxel, vox0)]),
        pair_image=torch.cat([s.pair_image + i for s, i in zip(samples, img0)]),
        pair_uv=torch.cat([s.pair_uv for s in samples]),
        labels=torch.cat(labels) if len(labels) == len(samples) else None,
        names=[s.name for s in samples],
        teacher_feats=[torch.cat(level) for level in zip(*teacher)] if teacher else None,
        pair_segment=torch.cat(segments) if segments else None,
    )
