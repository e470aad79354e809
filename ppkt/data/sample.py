"""The samples and the one batch format of ppkt.

Two kinds of sample, one a refinement of the other:

* :class:`PointSample` — an image-free point cloud (a fused scene for segmentation):
  ``points [N, 3]`` float32 (after 3D augmentation), ``colors [N, 3]`` in ``[0, 1]`` (zeros for LiDAR),
  optional ``intensity [N]`` float32 (LiDAR reflectance in ``[0, 1]``, for the feature builder), optional
  ``labels [N]`` int64 (−1 = ignore), and after :class:`~ppkt.data.transforms.Voxelize`: ``coords [M, 3]``
  int32 voxel coordinates, ``inverse [N]`` point→voxel map, ``feats [M, C]`` input features per voxel.
* :class:`PairedSample` — a point cloud **plus any number of calibrated images plus the point→pixel
  pairing**, whatever the sensor: an RGB-D frame (one image, every point paired with the pixel it was
  back-projected from), a LiDAR sweep projected into V cameras, several fused RGB-D frames.

  - ``images [V, 3, H, W]`` float32 in ``[0, 1]``; ``intrinsics [V, 3, 3]`` float64 pinhole matrices of the
    images as they are now; ``poses [V, 4, 4]`` float64 camera-to-points maps: ``pixel ~ K · (pose⁻¹ · p)``
    for a point ``p`` of ``points``. 3D transforms compose onto ``poses`` and image transforms onto
    ``intrinsics``, so the pairing can always be recomputed from the geometry (the tests check it does).
    After a random scaling a pose is a similarity, not a rigid map.
  - the **pairing**: ``pair_point [P]`` (point index), ``pair_image [P]`` (image index) and ``pair_uv [P,
    2]`` float pixel coordinates ``(u, v)``, integer = pixel centre. Every transform that moves the images
    or the points updates the pairing in the same call.
  - after :class:`~ppkt.data.transforms.Voxelize`: ``pair_voxel [P']`` — the pairs reduced to at most **one
    per voxel** (a voxel is never its own negative in the contrastive loss).
  - image transforms act **per image** (each camera or frame gets its own random crop and flip, as in
    SLidR), so every image-space map is per image: ``intrinsics [V, 3, 3]`` and, with a teacher-feature
    cache, ``view [V, 3, 3]`` float64, the affine map from image ``v``'s current pixel coordinates ``(u, v,
    1)`` to its original ones, ``teacher_cache`` (the whole images' cached maps) and, after
    :class:`~ppkt.data.transforms.CropCachedFeatures`, ``teacher_feats`` — per teacher layer
    ``[V, C_i, ceil(H / s_i), ceil(W / s_i)]``.
  - after :class:`~ppkt.data.transforms.Superpixels`: ``pair_segment [P]`` int64, the superpixel of each
    pair's pixel.
  - ``sources``: the frames it was read from (:class:`~ppkt.data.types.FrameRef`, one per image — a LiDAR
    scan's for each of its cameras), when known.
  - ``cameras``: the name of each image's camera when the frame has several (a LiDAR scan's), else ``None``;
    the teacher cache's key is (``sources[v]``, ``cameras[v]``).

A batch concatenates the samples of a mini-batch (:func:`collate_points` → :class:`PointBatch`,
:func:`collate` → :class:`PairedBatch`). ``offset`` vectors hold **cumulative end counts** (Pointcept's
convention): sample ``b`` owns voxels ``offset[b-1]:offset[b]``; :func:`offset_to_batch` and
:func:`offset_starts` convert, so no caller does offset arithmetic by hand. ``coords`` gain a leading batch
column ``(b, x, y, z)``; collation shifts every index (inverse map, pairing voxel and image indices) so they
address the concatenated tensors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from ppkt.data.types import CachedFeatures, FrameRef
from ppkt.geometry.voxelize import first_by_priority


def offset_to_batch(offset: Tensor) -> Tensor:
    """``[B]`` cumulative counts → ``[offset[-1]]`` int64 sample index of every row."""
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(offset), device=offset.device), counts)


def batch_to_offset(batch: Tensor, batch_size: int | None = None) -> Tensor:
    """``[M]`` sample index of every row (sorted) → ``[B]`` cumulative counts."""
    n = int(batch.max()) + 1 if batch_size is None and batch.numel() else (batch_size or 0)
    return torch.cumsum(torch.bincount(batch, minlength=n), 0)


def offset_starts(offset: Tensor) -> Tensor:
    """``[B]`` cumulative end counts → ``[B]`` start of each sample's rows."""
    return torch.cat([offset.new_zeros(1), offset[:-1]])


@dataclass(kw_only=True)
class PointSample:
    """An image-free point cloud; see the module docstring for every field's meaning and shape."""

    points: Tensor
    colors: Tensor
    labels: Tensor | None = None
    intensity: Tensor | None = None
    name: str = ""
    coords: Tensor | None = None
    inverse: Tensor | None = None
    feats: Tensor | None = None

    def copy(self) -> PointSample:
        """A shallow copy: transforms replace tensors, never modify them in place."""
        return copy.copy(self)

    def select_points(self, keep: Tensor) -> None:
        """Keep only the points selected by the bool mask ``keep [N]`` (labels and intensities follow)."""
        self.points, self.colors = self.points[keep], self.colors[keep]
        if self.labels is not None:
            self.labels = self.labels[keep]
        if self.intensity is not None:
            self.intensity = self.intensity[keep]

    def set_voxels(self, coords: Tensor, inverse: Tensor, feats: Tensor) -> None:
        """Record the voxelization: ``coords [M, 3]``, point→voxel map ``inverse [N]``, ``feats [M, C]``."""
        self.coords, self.inverse, self.feats = coords, inverse, feats

    def transform_points(self, matrix: Tensor) -> None:
        """Apply the linear map ``matrix [3, 3]`` to the points (``p ← matrix · p``)."""
        self.points = self.points @ matrix.to(self.points.dtype).T

    def scale_points(self, factor: float) -> None:
        """``p ← factor · p``."""
        self.points = self.points * factor


@dataclass(kw_only=True)
class PairedSample(PointSample):
    """A point cloud, its calibrated images and the point→pixel pairing (see the module docstring)."""

    images: Tensor
    intrinsics: Tensor
    poses: Tensor
    pair_point: Tensor
    pair_image: Tensor
    pair_uv: Tensor
    pair_voxel: Tensor | None = None
    view: Tensor | None = None
    teacher_cache: CachedFeatures | None = None
    teacher_feats: list[Tensor] | None = None
    pair_segment: Tensor | None = None
    sources: tuple[FrameRef, ...] = ()
    cameras: list[str] | None = None

    def copy(self) -> PairedSample:
        return copy.copy(self)

    def select_pairs(self, keep: Tensor) -> None:
        """Keep only the pairs selected by ``keep`` (a bool mask ``[P]`` or an index tensor)."""
        self.pair_point = self.pair_point[keep]
        self.pair_image = self.pair_image[keep]
        self.pair_uv = self.pair_uv[keep]
        if self.pair_segment is not None:
            self.pair_segment = self.pair_segment[keep]

    def select_points(self, keep: Tensor) -> None:
        """Keep the selected points; pairs of removed points are dropped, the others renumbered."""
        new_index = torch.cumsum(keep.long(), 0) - 1
        super().select_points(keep)
        self.select_pairs(keep[self.pair_point])
        self.pair_point = new_index[self.pair_point]

    def set_voxels(self, coords: Tensor, inverse: Tensor, feats: Tensor) -> None:
        """Record the voxelization and reduce the pairing to at most one (random) pair per voxel."""
        super().set_voxels(coords, inverse, feats)
        pv = inverse[self.pair_point]
        uniq, group = torch.unique(pv, return_inverse=True)
        chosen = first_by_priority(group, torch.rand(pv.shape[0], dtype=torch.float64), uniq.shape[0])
        self.select_pairs(chosen)
        self.pair_voxel = uniq

    def transform_points(self, matrix: Tensor) -> None:
        """``p ← matrix · p`` for the points, and the same map composed onto every camera pose."""
        super().transform_points(matrix)
        self._compose_poses(matrix.to(torch.float64))

    def scale_points(self, factor: float) -> None:
        """``p ← factor · p`` for the points, and the same scaling composed onto every camera pose."""
        super().scale_points(factor)
        self._compose_poses(factor * torch.eye(3, dtype=torch.float64))

    def _compose_poses(self, matrix: Tensor) -> None:
        m = torch.eye(4, dtype=torch.float64)
        m[:3, :3] = matrix
        self.poses = m @ self.poses

    def transform_pixels(self, new_from_old: Tensor, old_from_new: Tensor | None = None) -> None:
        """Record an image transform ``(u', v', 1) = new_from_old · (u, v, 1)`` (a ``[3, 3]`` affine for
        every image, or ``[V, 3, 3]``, one per image; its inverse ``old_from_new`` when known exactly) in the
        intrinsics and the cached-feature ``view`` (the transform itself moves ``pair_uv``)."""
        a = new_from_old.to(torch.float64)
        self.intrinsics = a @ self.intrinsics
        if self.view is not None:
            self.view = self.view @ (torch.linalg.inv(a) if old_from_new is None else old_from_new)


@dataclass
class PointBatch:
    """A mini-batch of ``B`` voxelized point samples (see the module docstring).

    Attributes:
        coords: ``[M, 4]`` int32 ``(b, x, y, z)``.
        feats: ``[M, C]`` float32 input features.
        offset: ``[B]`` int64 cumulative voxel counts.
        points: ``[N, 3]``; ``point_offset [B]`` cumulative point counts; ``inverse [N]`` global voxel index.
        labels: ``[N]`` int64 or ``None``.
    """

    coords: Tensor
    feats: Tensor
    offset: Tensor
    points: Tensor
    point_offset: Tensor
    inverse: Tensor
    labels: Tensor | None = None
    names: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.offset.shape[0])

    def to(self, device: torch.device | str) -> PointBatch:
        out = copy.copy(self)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                setattr(out, f.name, v.to(device, non_blocking=True))
            elif isinstance(v, list) and v and isinstance(v[0], Tensor):
                setattr(out, f.name, [t.to(device, non_blocking=True) for t in v])
        return out


@dataclass
class PairedBatch(PointBatch):
    """A mini-batch of paired samples: a :class:`PointBatch` plus

    Attributes:
        images: ``[V, 3, H, W]``; ``image_offset [B]`` cumulative image counts; ``intrinsics [V, 3, 3]``,
            ``poses [V, 4, 4]``.
        pair_voxel, pair_image: ``[P]`` global voxel / image index of each pair; ``pair_uv [P, 2]`` pixels.
        teacher_feats: per teacher layer ``[V, C_i, h_i, w_i]`` cached teacher maps of ``images``, or
            ``None`` (the teacher runs on ``images``).
        pair_segment: ``[P]`` superpixel of each pair within its image, or ``None``.
    """

    images: Tensor = field(default_factory=lambda: torch.zeros(0, 3, 1, 1))
    image_offset: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    intrinsics: Tensor = field(default_factory=lambda: torch.zeros(0, 3, 3, dtype=torch.float64))
    poses: Tensor = field(default_factory=lambda: torch.zeros(0, 4, 4, dtype=torch.float64))
    pair_voxel: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    pair_image: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    pair_uv: Tensor = field(default_factory=lambda: torch.zeros(0, 2))
    teacher_feats: list[Tensor] | None = None
    pair_segment: Tensor | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def to(self, device: torch.device | str) -> PairedBatch:
        out = super().to(device)
        assert isinstance(out, PairedBatch)
        return out


def _cumsum(counts: list[int]) -> Tensor:
    return torch.cumsum(torch.tensor(counts, dtype=torch.long), 0)


def _required(sample: PointSample, name: str) -> Tensor:
    value = getattr(sample, name)
    if value is None:
        raise ValueError(f"collate: sample {sample.name!r} has no {name} (apply Voxelize first)")
    return value


def _point_fields(samples: list[PointSample]) -> tuple[dict[str, object], Tensor]:
    """The :class:`PointBatch` fields of ``samples`` and each sample's first global voxel index."""
    if not samples:
        raise ValueError("collate: empty list of samples")
    coords = [_required(s, "coords") for s in samples]
    inverse = [_required(s, "inverse") for s in samples]
    offset = _cumsum([int(c.shape[0]) for c in coords])
    vox0 = offset_starts(offset)
    labels = [s.labels for s in samples if s.labels is not None]
    return {
        "coords": torch.cat(
            [
                torch.cat([torch.full((len(c), 1), b, dtype=torch.int32), c.int()], 1)
                for b, c in enumerate(coords)
            ]
        ),
        "feats": torch.cat([_required(s, "feats") for s in samples]),
        "offset": offset,
        "points": torch.cat([s.points for s in samples]),
        "point_offset": _cumsum([int(s.points.shape[0]) for s in samples]),
        "inverse": torch.cat([inv + int(v) for inv, v in zip(inverse, vox0)]),
        "labels": torch.cat(labels) if len(labels) == len(samples) else None,
        "names": [s.name for s in samples],
    }, vox0


def collate_points(samples: list[PointSample]) -> PointBatch:
    """Concatenate voxelized point samples into a :class:`PointBatch`, shifting all indices."""
    return PointBatch(**_point_fields(samples)[0])  # type: ignore[arg-type]


def collate(samples: list[PairedSample]) -> PairedBatch:
    """Concatenate voxelized paired samples into a :class:`PairedBatch`, shifting all indices."""
    base, vox0 = _point_fields(list(samples))
    pair_voxel = [_required(s, "pair_voxel") for s in samples]
    if len({tuple(s.images.shape[1:]) for s in samples}) != 1:
        raise ValueError("collate: all images in a batch must have the same size; use a Resize transform")
    image_offset = _cumsum([int(s.images.shape[0]) for s in samples])
    img0 = offset_starts(image_offset)
    teacher = [s.teacher_feats for s in samples if s.teacher_feats is not None]
    if teacher and len(teacher) != len(samples):
        raise ValueError("collate: some samples have cached teacher features and some do not")
    segments = [s.pair_segment for s in samples if s.pair_segment is not None]
    if segments and len(segments) != len(samples):
        raise ValueError("collate: some samples have superpixels and some do not")
    return PairedBatch(
        **base,  # type: ignore[arg-type]
        images=torch.cat([s.images for s in samples]),
        image_offset=image_offset,
        intrinsics=torch.cat([s.intrinsics for s in samples]),
        poses=torch.cat([s.poses for s in samples]),
        pair_voxel=torch.cat([pv + int(v) for pv, v in zip(pair_voxel, vox0)]),
        pair_image=torch.cat([s.pair_image + int(i) for s, i in zip(samples, img0)]),
        pair_uv=torch.cat([s.pair_uv for s in samples]),
        teacher_feats=[torch.cat(level) for level in zip(*teacher)] if teacher else None,
        pair_segment=torch.cat(segments) if segments else None,
    )
