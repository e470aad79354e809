"""Downstream segmentation data over fused scenes: splits, limited labels, voxel labels, the dataset.

* :func:`split_scenes` assigns whole scenes to train/val/test (no scene leaks between splits);
* :func:`labelled_subset` picks the ``ceil(f · n)`` labelled training scenes of ``label_mode="scenes"``;
* :func:`point_label_mask` picks the ``round(f · L)`` of a scene's ``L`` labelled points that keep their
  label in ``label_mode="points"``, or (``count=k``) the ``k`` points of ``label_mode="points_per_scene"``:
  the *limited annotations* of the ScanNet data-efficient benchmark (20, 50, 100 or 200 labelled points per
  training scene; ``"scenes"`` is its *limited reconstructions*).

All three depend only on the seed and the scene **names** (never on the order they are given in, nor on
anything else of the run: scratch and pretrained runs of one seed get the same labels), and the
limited-label choices are nested: for one seed, the subset for a smaller fraction or count is contained in
the subset for a larger one (all are prefixes of the same seeded permutation).

* :class:`SceneSegmentationDataset` turns :class:`~ppkt.data.types.FusedScene` objects into
  :class:`~ppkt.data.sample.PointSample` objects: ``points [N, 3]`` = xyz, ``colors [N, 3]`` = rgb,
  ``labels [N]`` = class − 1 (class 0 and withheld labels → ``ignore_index``), no images
  (``images [0, 3, 1, 1]``) and empty pairings, so :class:`~ppkt.data.transforms.Voxelize` and
  :func:`~ppkt.data.sample.collate` apply as is;
* :func:`voxel_labels` is the per-voxel majority vote ``[M]`` of point labels ``[N]`` used to train on
  voxels; evaluation maps voxel predictions back to points through ``inverse``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ppkt.data.io.files import natural_key
from ppkt.data.sample import PointSample
from ppkt.errors import ConfigError

if TYPE_CHECKING:
    from ppkt.data.types import FusedScene

__all__ = [
    "LABEL_MODES",
    "SceneSegmentationDataset",
    "labelled_subset",
    "point_label_mask",
    "voxel_labels",
]

LABEL_MODES = ("scenes", "points", "points_per_scene")


def _check_names(names: Sequence[str]) -> list[str]:
    ordered = sorted(names, key=natural_key)
    if len(set(ordered)) != len(ordered):
        dup = sorted({n for n in ordered if ordered.count(n) > 1})
        raise ConfigError(f"scene names must be unique, got duplicates {dup}")
    return ordered


def _permutation(names: Sequence[str], seed: int, salt: int) -> list[str]:
    """``names`` (naturally sorted first) in a seeded random order."""
    ordered = _check_names(names)
    perm = np.random.default_rng([seed, salt]).permutation(len(ordered))
    return [ordered[i] for i in perm]


def _check_fraction(fraction: float, what: str) -> None:
    if not 0 < fraction <= 1:
        raise ConfigError(f"{what} must be in (0, 1], got {fraction}")


def labelled_subset(names: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """The ``ceil(fraction · n)`` (at least 1) scenes that keep labels, in the order of ``names``."""
    _check_fraction(fraction, "label_fraction")
    if not names:
        raise ConfigError("labelled_subset: no scenes to choose from")
    k = max(1, math.ceil(fraction * len(names) - 1e-9))
    chosen = set(_permutation(names, seed, 1)[:k])
    return [n for n in names if n in chosen]


def point_label_mask(
    labelled: np.ndarray, fraction: float = 1.0, seed: int = 0, name: str = "", count: int | None = None
) -> np.ndarray:
    """Which points keep their label: ``round(fraction · L)`` (at least 1) of the ``L`` labelled ones, or
    ``min(count, L)`` of them when ``count`` is given (then ``fraction`` is not used).

    Args:
        labelled: ``[N]`` bool, the points that have a label.
        fraction: in ``(0, 1]``.
        seed, name: the choice is a function of ``(seed, name)`` only (``name`` = the scene name).
        count: ``>= 1`` labelled points to keep (limited annotations).

    Returns:
        ``[N]`` bool mask, a subset of ``labelled``.
    """
    if count is None:
        _check_fraction(fraction, "label_fraction")
    elif count < 1:
        raise ConfigError(f"label count must be >= 1, got {count}")
    idx = np.flatnonzero(np.asarray(labelled, dtype=bool))
    keep = np.zeros(len(labelled), dtype=bool)
    if idx.size == 0:
        return keep
    k = max(1, round(fraction * idx.size)) if count is None else min(count, idx.size)
    perm = np.random.default_rng([seed, 2, zlib.crc32(name.encode())]).permutation(idx.size)
    keep[idx[perm[:k]]] = True
    return keep


def voxel_labels(
    inverse: Tensor, labels: Tensor, num_voxels: int, num_classes: int, ignore_index: int = -1
) -> Tensor:
    """Majority vote of point labels per voxel.

    Args:
        inverse: ``[N]`` int64 voxel of each point (``PointSample.inverse`` / ``PointBatch.inverse``).
        labels: ``[N]`` int64 in ``[0, num_classes)`` or ``ignore_index`` (never votes).
        num_voxels: ``M``.

    Returns:
        ``[M]`` int64: each voxel's most frequent label (ties → the smaller label), ``ignore_index`` for a
        voxel none of whose points is labelled.
    """
    keep = labels != ignore_index
    lab, vox = labels[keep].long(), inverse[keep].long()
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
        raise ValueError(f"voxel_labels: labels must be in [0, {num_classes}) or {ignore_index}")
    hist = torch.bincount(vox * num_classes + lab, minlength=num_voxels * num_classes)
    hist = hist.view(num_voxels, num_classes)
    out = hist.argmax(dim=1)  # the first maximum: ties go to the smaller label
    out[hist.sum(dim=1) == 0] = ignore_index
    return out


class SceneSegmentationDataset(Dataset[PointSample]):
    """Fused scenes → transformed segmentation samples (one sample per scene).

    Each sample holds ``points = xyz``, ``colors = rgb``, ``labels = class − 1`` (class 0 and withheld
    labels → ``ignore_index``), no images (``images [0, 3, 1, 1]``) and empty pairings. Use point
    transforms only (rotate, scale, :class:`~ppkt.data.transforms.Voxelize`), not the image ones.

    Args:
        scenes: the fused scenes of this split.
        transform: applied to every sample (e.g. augmentations + ``Voxelize``).
        ignore_index: label of unlabelled points.
        label_mode: ``"scenes"`` keeps only the :func:`labelled_subset` of
            ``ceil(label_fraction · #scenes)`` scenes; ``"points"`` keeps every scene but only
            :func:`point_label_mask`'s ``label_fraction`` of each scene's labelled points;
            ``"points_per_scene"`` keeps every scene with ``label_fraction`` (a whole number: a count)
            labelled points each.
        label_fraction: in ``(0, 1]``; 1 = every label. A count ``>= 1`` for ``"points_per_scene"``.
        seed: seeds the limited-label choice (deterministic, independent of the order of ``scenes``).
    """

    def __init__(
        self,
        scenes: Sequence[FusedScene],
        transform: Callable[[PointSample], PointSample] | None = None,
        *,
        ignore_index: int = -1,
        label_mode: str = "scenes",
        label_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        if label_mode not in LABEL_MODES:
            raise ConfigError(f"label_mode: {label_mode!r} is not one of {list(LABEL_MODES)}")
        count = None
        if label_mode == "points_per_scene":
            if not (label_fraction >= 1 and float(label_fraction).is_integer()):
                raise ConfigError(f"labels per scene must be a whole number >= 1, got {label_fraction}")
            count = int(label_fraction)
        if not scenes:
            raise ConfigError("SceneSegmentationDataset: no scenes")
        if ignore_index >= 0 and ignore_index < max(s.num_classes for s in scenes) - 1:
            raise ConfigError(f"ignore_index={ignore_index} collides with a class label")
        self._num_classes = max(s.num_classes for s in scenes) - 1  # over every scene, chosen or not
        chosen = list(scenes)
        if label_mode == "scenes":
            keep = set(labelled_subset([s.name for s in scenes], label_fraction, seed))
            chosen = [s for s in scenes if s.name in keep]
        self.scenes = chosen
        self.transform = transform
        self.ignore_index = ignore_index
        self.label_mode, self.label_fraction, self.seed = label_mode, label_fraction, seed
        self._count = count
        #: the kept labels of each scene (``[N]`` int64, class − 1 or ``ignore_index``), computed on access
        #: (a LiDAR split of thousands of scans is read scan by scan, never held in memory at once)
        self.labels: Sequence[Tensor] = _KeptLabels(self)

    def kept_labels(self, name: str, label: np.ndarray) -> Tensor:
        """Scene ``name``'s labels ``[N]`` int64 (class − 1), the withheld ones set to ``ignore_index``."""
        lab = torch.from_numpy(label.astype(np.int64)) - 1
        keep_mask = label > 0
        if self.label_mode == "points":
            keep_mask = point_label_mask(keep_mask, self.label_fraction, self.seed, name)
        elif self._count is not None:
            keep_mask = point_label_mask(keep_mask, seed=self.seed, name=name, count=self._count)
        lab[~torch.from_numpy(keep_mask)] = self.ignore_index
        return lab

    @property
    def num_classes(self) -> int:
        """Segmentation classes (labels ``0 … num_classes − 1`` = class ids ``1 …``) over all given scenes."""
        return self._num_classes

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Names of the segmentation labels (class names without ``unlabelled``), when known."""
        names = self.scenes[0].class_names
        return None if names is None else names[1:]

    def num_labelled_points(self) -> int:
        return sum(int((lab != self.ignore_index).sum()) for lab in self.labels)

    def class_counts(self, num_classes: int | None = None) -> Tensor:
        """``[num_classes]`` int64: labelled points per class over the kept labels (what training sees).
        ``num_classes`` (at least the dataset's own) sizes the vector for classes that only other splits
        hold."""
        n = self.num_classes if num_classes is None else num_classes
        if n < self.num_classes:
            raise ValueError(f"num_classes={n} is below the dataset's {self.num_classes} classes")
        counts = torch.zeros(n, dtype=torch.long)
        for lab in self.labels:
            counts += torch.bincount(lab[lab != self.ignore_index], minlength=n)
        return counts

    def __len__(self) -> int:
        return len(self.scenes)

    def sample(self, i: int) -> PointSample:
        """Scene ``i`` as an untransformed :class:`PointSample` (with ``intensity`` for a LiDAR scan)."""
        s = self.scenes[i]
        xyz, rgb, label, intensity = scene_arrays(s)
        return PointSample(
            points=torch.from_numpy(xyz),
            colors=torch.from_numpy(rgb),
            labels=self.kept_labels(s.name, label),
            intensity=None if intensity is None else torch.from_numpy(intensity),
            name=s.name,
        )

    def __getitem__(self, i: int) -> PointSample:
        sample = self.sample(i)
        return sample if self.transform is None else self.transform(sample)


def scene_arrays(scene: FusedScene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(xyz, rgb, label, intensity)`` of a segmentation scene, read once: a fused scene's arrays, or a
    :class:`~ppkt.data.scan_segmentation.LabelledScan`'s (read from its files, with intensities)."""
    read = getattr(scene, "arrays", None)
    if read is not None:
        arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] = read()
        return arrays
    return scene.xyz, scene.rgb, scene.label, None


class _KeptLabels(Sequence[Tensor]):
    """The kept labels of every scene of a dataset, computed on access."""

    def __init__(self, ds: SceneSegmentationDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds.scenes)

    def __getitem__(self, i: int) -> Tensor:  # type: ignore[override]
        s = self.ds.scenes[i]
        return self.ds.kept_labels(s.name, s.label)
