"""LiDAR segmentation samples as the driving benchmarks use them: **one labelled scan = one sample**.

A :class:`LabelledScan` is one scan of a :class:`~ppkt.data.types.ScanSource` seen through the interface of
a :class:`~ppkt.data.types.FusedScene` (``name``, ``xyz``, ``rgb``, ``label``, ``num_classes``,
``class_names``) plus ``intensity``: points in the LiDAR frame, no colour (zeros), the reader's labels
(already mapped to the benchmark's classes, 0 = unlabelled). It is read from its files when used
(:meth:`LabelledScan.arrays`), so a split of thousands of scans costs no memory until a loader reads it.

The classes of a layout (:func:`layout_classes`): SemanticKITTI's 19 and nuScenes-lidarseg's 16
(:mod:`ppkt.data.protocols`), or for a rig folder the ``classes`` of its ``dataset.json`` (else ids up to
the largest label found).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ppkt.data.protocols import nuscenes, semantickitti
from ppkt.data.types import ScanSource
from ppkt.errors import ConfigError, DataError

__all__ = [
    "LabelledScan",
    "labelled_scans",
    "layout_classes",
    "official_split",
    "one_percent_scans",
    "scan_name",
]

#: layouts whose classes are fixed by a benchmark protocol (names of ids 0 … C, 0 = unlabelled)
PROTOCOL_CLASSES: dict[str, tuple[str, ...]] = {
    "semantickitti": semantickitti.CLASS_NAMES,
    "nuscenes": nuscenes.CLASS_NAMES,
}


def scan_name(source: ScanSource, index: int) -> str:
    """``<scene>/<frame>``: a scan's name, unique over a dataset (splits and limited labels use it)."""
    return f"{source.scene}/{source.frames[index]}"


class LabelledScan:
    """One scan of ``source`` as a segmentation scene (module docstring)."""

    def __init__(
        self, source: ScanSource, index: int, num_classes: int, class_names: tuple[str, ...] | None
    ) -> None:
        self.source, self.index = source, index
        self.name = scan_name(source, index)
        self.sequence = source.scene
        self.num_classes = num_classes
        self.class_names = class_names

    def __repr__(self) -> str:
        return f"LabelledScan({self.name!r})"

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(xyz [N, 3] float32, rgb [N, 3] zeros, label [N] int64, intensity [N] float32 | None)``, read
        from the scan's files; a scan without labels is all unlabelled (0)."""
        scan = self.source.read(self.index)
        n = len(scan)
        label = np.zeros(n, np.int64) if scan.label is None else scan.label.astype(np.int64)
        if label.size and int(label.max()) >= self.num_classes:
            where = scan.label_path or scan.points_path or self.name
            raise DataError(
                f"{where}: label id {int(label.max())} but the dataset has {self.num_classes - 1} classes "
                f"(ids 1…{self.num_classes - 1}; name them in the dataset.json 'classes')"
            )
        rgb = np.zeros((n, 3), np.float32)
        return scan.points, rgb, label, scan.intensity

    @property
    def xyz(self) -> np.ndarray:
        return self.arrays()[0]

    @property
    def rgb(self) -> np.ndarray:
        return self.arrays()[1]

    @property
    def label(self) -> np.ndarray:
        return self.arrays()[2]

    @property
    def intensity(self) -> np.ndarray | None:
        return self.arrays()[3]


def layout_classes(layout: str, sources: Sequence[ScanSource]) -> tuple[int, tuple[str, ...] | None]:
    """``(num_classes including id 0, names or None)`` of a LiDAR dataset: the protocol's classes for
    ``semantickitti`` / ``nuscenes``; for other layouts the ``classes`` of the ``dataset.json`` beside the
    scenes, else the largest label id of the scans + 1 (every scan is read once)."""
    if layout in PROTOCOL_CLASSES:
        names = PROTOCOL_CLASSES[layout]
        return len(names), names
    for src in sources[:1]:
        for folder in (Path(src.root), Path(src.root).parent):
            path = folder / "dataset.json"
            if path.is_file():
                try:
                    info = json.loads(path.read_text())
                except (ValueError, OSError) as e:
                    raise DataError(f"{path}: unreadable dataset description ({e})") from e
                classes = info.get("classes") if isinstance(info, dict) else None
                if isinstance(classes, list) and classes:
                    return len(classes), tuple(str(c) for c in classes)
    top = 0
    for src in sources:
        for i in range(len(src)):
            label = src.read(i).label
            if label is not None and label.size:
                top = max(top, int(label.max()))
    return top + 1, None


def labelled_scans(
    sources: Sequence[ScanSource], num_classes: int, class_names: tuple[str, ...] | None
) -> list[LabelledScan]:
    """Every scan of ``sources`` (in their order, each sequence's scans in time order) as a
    :class:`LabelledScan`."""
    return [LabelledScan(src, i, num_classes, class_names) for src in sources for i in range(len(src))]


def official_split(
    layout: str, sources: Sequence[ScanSource]
) -> tuple[list[ScanSource], list[ScanSource], list[ScanSource]]:
    """``(train, val, test)`` sequences of the benchmark's official split: SemanticKITTI (and KITTI
    odometry) sequences 00–07, 09–10 train and 08 tests (the benchmark's own test sequences 11–21 have no
    labels: its validation sequence is where papers report, SLidR included); nuScenes the 700 / 150 scenes of
    v1.0-trainval (or v1.0-mini's 8 / 2). No validation sequences. :class:`ConfigError` for other layouts."""
    if layout in ("semantickitti", "kitti_odometry"):
        train_names: frozenset[str] = frozenset(semantickitti.TRAIN_SEQUENCES)
        test_names: frozenset[str] = frozenset(semantickitti.VALID_SEQUENCES)
    elif layout == "nuscenes":
        names = {s.scene for s in sources}
        mini = bool(names & (nuscenes.MINI_TRAIN_SCENES | nuscenes.MINI_VAL_SCENES)) and len(names) <= 10
        train_names = nuscenes.MINI_TRAIN_SCENES if mini else nuscenes.TRAIN_SCENES
        test_names = nuscenes.MINI_VAL_SCENES if mini else nuscenes.VAL_SCENES
    else:
        raise ConfigError(
            f"config key 'data.split': 'official' is the split of the semantickitti, kitti_odometry and "
            f"nuscenes layouts, not of {layout!r} (use order or all)"
        )
    train = [s for s in sources if s.scene in train_names]
    test = [s for s in sources if s.scene in test_names]
    return train, [], test


def one_percent_scans(layout: str, scans: Sequence[LabelledScan]) -> list[LabelledScan]:
    """The training scans of the SLidR lineage's 1 % split (:mod:`ppkt.data.protocols`) among ``scans``:
    SemanticKITTI every 100th scan of the sorted training list, nuScenes every 100th training scene with all
    its keyframes. :class:`ConfigError` for other layouts."""
    if layout in ("semantickitti", "kitti_odometry"):
        frame = {s.name: (s.sequence, s.source.frames[s.index]) for s in scans}
        keep = set(semantickitti.one_percent(frame.values()))
        return [s for s in scans if frame[s.name] in keep]
    if layout == "nuscenes":
        order = list(dict.fromkeys(s.sequence for s in scans))
        kept = set(nuscenes.one_percent(order))
        return [s for s in scans if s.sequence in kept]
    raise ConfigError(
        f"config key 'data.train_subset': one_percent is the 1 % split of the semantickitti, kitti_odometry "
        f"and nuscenes layouts, not of {layout!r}"
    )
