"""Frame datasets for pretraining: which frames, the held-out split, bad-frame handling, and the one place
where a source's item (an RGB-D :class:`~ppkt.data.types.Frame` or a LiDAR :class:`~ppkt.data.types.Scan`)
becomes a :class:`~ppkt.data.sample.PairedSample` (:func:`read_sample`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset

from ppkt.data import pairing
from ppkt.data.sample import PairedBatch, PairedSample, collate
from ppkt.data.splits import split_by_order, split_counts
from ppkt.data.teacher_cache import FeatureCache
from ppkt.data.transforms import AttachCachedFeatures
from ppkt.data.types import FrameRef, FrameSource, Scan
from ppkt.errors import ConfigError, DataError

#: ``data.multi_camera``: which cameras a LiDAR point seen by several is paired with
MULTI_CAMERA: tuple[str, ...] = ("all", "nearest", "random")


def source_cameras(source: FrameSource) -> list[str] | None:
    """The camera names of a multi-camera source (its ``cameras`` attribute, when it has one), else
    ``None`` (one image per frame, or not known before a frame is read)."""
    cams = getattr(source, "cameras", None)
    return list(cams) if isinstance(cams, list | tuple) and all(isinstance(c, str) for c in cams) else None


def scan_sample(scan: Scan, *, min_depth: float, multi_camera: str) -> PairedSample:
    """A LiDAR scan as a paired sample (:func:`ppkt.data.pairing.scan_to_sample`: projection into every
    camera with the z-buffer visibility test), with ``cameras`` naming the camera of each image."""
    scan_to_sample: Callable[..., PairedSample] | None = getattr(pairing, "scan_to_sample", None)
    if scan_to_sample is None:  # pragma: no cover - until the LiDAR pairing is merged
        raise DataError(f"{scan.points_path}: reading LiDAR scans needs ppkt.data.pairing.scan_to_sample")
    sample = scan_to_sample(scan, min_depth=min_depth, multi_camera=multi_camera)
    if sample.cameras is None:
        if sample.images.shape[0] != len(scan.cameras):
            raise ValueError(
                f"scan {scan.scene}/{scan.name}: the sample has {sample.images.shape[0]} images for "
                f"{len(scan.cameras)} cameras and does not name them (PairedSample.cameras)"
            )
        sample.cameras = list(scan.cameras)
    return sample


def read_sample(
    ref: FrameRef, *, min_depth: float = 0.0, max_depth: float = float("inf"), multi_camera: str = "all"
) -> PairedSample:
    """Read frame ``ref`` as a paired sample: an RGB-D frame by back-projection (depth in ``[min_depth,
    max_depth]``), a LiDAR scan by projection into its cameras (camera depth ≥ ``min_depth``, the
    ``multi_camera`` rule). A frame without a point is a :class:`DataError` naming its file."""
    item: Any = ref.folder.read(ref.index)
    if isinstance(item, Scan):
        sample = scan_sample(item, min_depth=min_depth, multi_camera=multi_camera)
        if sample.points.shape[0] == 0:
            raise DataError(f"{item.points_path}: the scan has no points")
    else:
        sample = pairing.frame_to_sample(item, min_depth=min_depth, max_depth=max_depth)
        if sample.points.shape[0] == 0:
            raise DataError(f"{item.depth_path}: no depth in range [{min_depth}, {max_depth}] m")
    sample.source = ref
    return sample


def split_frames(
    folders: Sequence[FrameSource], heldout: float, mode: str = "auto", frame_skip: int = 1
) -> tuple[list[FrameRef], list[FrameRef]]:
    """Split frames into (train, held-out).

    ``mode="scenes"`` holds out the last ``ceil(heldout · #scenes)`` scenes
    (:func:`~ppkt.data.splits.split_by_order`, the rule of fine-tuning's test split); ``"tail"`` holds out
    the last ``heldout`` fraction of every scene's trajectory; ``"auto"`` is ``scenes`` with ≥ 2 scenes,
    else ``tail``. Every ``frame_skip``-th frame is used.
    """
    if mode == "auto":
        mode = "scenes" if len(folders) >= 2 else "tail"
    train: list[FrameRef] = []
    held: list[FrameRef] = []
    if mode == "scenes":
        train_scenes, _, held_scenes = split_by_order(folders, heldout, keys=("data.heldout", ""))
        train = [FrameRef(f, j) for f in train_scenes for j in range(0, len(f), frame_skip)]
        held = [FrameRef(f, j) for f in held_scenes for j in range(0, len(f), frame_skip)]
    elif mode == "tail":
        for f in folders:
            refs = [FrameRef(f, j) for j in range(0, len(f), frame_skip)]
            n_train = split_counts(len(refs), heldout)[0]
            train.extend(refs[:n_train])
            held.extend(refs[n_train:])
    else:
        raise ConfigError(f"data.heldout_mode: {mode!r} is not one of ['auto', 'scenes', 'tail']")
    if not train:
        raise DataError("no training frames left after the held-out split")
    return train, held


class FrameDataset(Dataset[PairedSample | None]):
    """RGB-D frames or LiDAR scans → transformed samples (:func:`read_sample`).

    With a ``feature_cache`` every sample carries its frame's cached teacher maps (``teacher_cache``, an
    identity ``view``); a frame missing from the cache is an error (fill the cache first).
    With ``skip_bad=True`` a frame that fails to read (a :class:`DataError`) is skipped with a warning
    naming the file (the item is ``None`` and :func:`collate_skip` drops it); otherwise the error propagates.
    """

    def __init__(
        self,
        frames: Sequence[FrameRef],
        transform: Callable[[PairedSample], PairedSample],
        *,
        min_depth: float = 0.0,
        max_depth: float = float("inf"),
        skip_bad: bool = False,
        feature_cache: FeatureCache | None = None,
        multi_camera: str = "all",
    ) -> None:
        if multi_camera not in MULTI_CAMERA:
            raise ValueError(f"multi_camera must be one of {list(MULTI_CAMERA)}, got {multi_camera!r}")
        self.frames = list(frames)
        self.attach = None if feature_cache is None else AttachCachedFeatures(feature_cache)
        self.transform = transform
        self.min_depth, self.max_depth = min_depth, max_depth
        self.skip_bad = skip_bad
        self.multi_camera = multi_camera

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> PairedSample | None:
        ref = self.frames[i]
        try:
            sample = read_sample(
                ref, min_depth=self.min_depth, max_depth=self.max_depth, multi_camera=self.multi_camera
            )
        except DataError as e:
            if not self.skip_bad:
                raise
            warnings.warn(f"skipping bad frame {ref.name}: {e}", stacklevel=2)
            return None
        if self.attach is not None:
            sample = self.attach(sample)
        return self.transform(sample)


def collate_skip(items: list[PairedSample | None]) -> PairedBatch | None:
    """:func:`collate` without the skipped (``None``) items; ``None`` when nothing is left."""
    samples = [s for s in items if s is not None]
    return collate(samples) if samples else None
