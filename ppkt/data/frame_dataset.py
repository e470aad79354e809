"""Frame datasets for pretraining: which frames, the held-out split, bad-frame handling, and where a
source's item (an RGB-D :class:`~ppkt.data.types.Frame` or a LiDAR :class:`~ppkt.data.types.Scan`) becomes a
:class:`~ppkt.data.sample.PairedSample` (:func:`read_sample`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from ppkt.data.pairing import MULTI_CAMERA_RULES, frame_to_sample, frames_to_sample, scan_to_sample
from ppkt.data.sample import PairedBatch, PairedSample, collate
from ppkt.data.splits import split_by_order, split_counts
from ppkt.data.teacher_cache import FeatureCache
from ppkt.data.transforms import AttachCachedFeatures
from ppkt.data.types import Frame, FrameRef, FrameSource, Scan
from ppkt.errors import ConfigError, DataError


def source_cameras(source: FrameSource) -> list[str] | None:
    """The camera names of a multi-camera source (a :class:`~ppkt.data.types.ScanSource`'s ``cameras``),
    else ``None`` (one image per frame)."""
    cams = getattr(source, "cameras", None)
    return list(cams) if isinstance(cams, list | tuple) and all(isinstance(c, str) for c in cams) else None


#: the keyword arguments of :func:`~ppkt.data.pairing.scan_to_sample`'s occlusion test
OCCLUSION_KEYS = ("occlusion_tolerance", "occlusion_relative", "occlusion_window")


def _occlusion(occlusion: Mapping[str, float] | None) -> dict[str, Any]:
    given = dict(occlusion or {})
    unknown = sorted(set(given) - set(OCCLUSION_KEYS))
    if unknown:
        raise ValueError(f"occlusion: unknown keys {unknown}; known: {list(OCCLUSION_KEYS)}")
    if "occlusion_window" in given:
        given["occlusion_window"] = int(given["occlusion_window"])
    return given


def read_sample(
    ref: FrameRef,
    *,
    min_depth: float = 0.0,
    max_depth: float = float("inf"),
    multi_camera: str = "all",
    occlusion: Mapping[str, float] | None = None,
    teacher_input: str = "rgb",
    up_axis: int = 2,
) -> PairedSample:
    """Read frame ``ref`` as a paired sample: an RGB-D frame by back-projection (depth in ``[min_depth,
    max_depth]``; the teacher's image ``teacher_input``, :mod:`ppkt.data.teacher_input`), a LiDAR scan by
    projection into its cameras (:func:`~ppkt.data.pairing.scan_to_sample`: camera depth ≥ ``min_depth``, the
    ``multi_camera`` rule, ``occlusion`` = its ``occlusion_tolerance``, ``occlusion_relative``,
    ``occlusion_window`` arguments, defaults where absent); ``sources`` is ``ref`` for every image. A frame
    without a point is a :class:`DataError` naming its file."""
    item: Any = ref.folder.read(ref.index)
    if isinstance(item, Scan):
        _check_scan_input(item, teacher_input)
        sample = scan_to_sample(item, min_depth=min_depth, multi_camera=multi_camera, **_occlusion(occlusion))
        if sample.points.shape[0] == 0:
            raise DataError(f"{item.points_path}: the scan has no points")
    else:
        sample = frame_to_sample(
            item, min_depth=min_depth, max_depth=max_depth, teacher_input=teacher_input, up_axis=up_axis
        )
        if sample.points.shape[0] == 0:
            raise DataError(f"{item.depth_path}: no depth in range [{min_depth}, {max_depth}] m")
    sample.sources = (ref,) * int(sample.images.shape[0])
    return sample


def _check_scan_input(scan: Scan, teacher_input: str) -> None:
    if teacher_input != "rgb":
        raise ConfigError(
            f"config key 'data.teacher_input': {teacher_input!r} encodes an RGB-D frame's depth image; "
            f"{scan.points_path} is a LiDAR scan (no depth image): use rgb"
        )


def frame_refs(folders: Sequence[FrameSource], frame_skip: int = 1) -> list[FrameRef]:
    """Every ``frame_skip``-th frame of each scene, in scene order."""
    return [FrameRef(f, j) for f in folders for j in range(0, len(f), frame_skip)]


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
        train, held = frame_refs(train_scenes, frame_skip), frame_refs(held_scenes, frame_skip)
    elif mode == "tail":
        for f in folders:
            refs = frame_refs([f], frame_skip)
            n_train = split_counts(len(refs), heldout)[0]
            train.extend(refs[:n_train])
            held.extend(refs[n_train:])
    else:
        raise ConfigError(f"data.heldout_mode: {mode!r} is not one of ['auto', 'scenes', 'tail']")
    if not train:
        raise DataError("no training frames left after the held-out split")
    return train, held


#: the frames of one pretraining sample, in trajectory order
Window = tuple[FrameRef, ...]


def group_frames(frames: Sequence[FrameRef], mode: str = "frame", views: int = 1) -> list[Window]:
    """The frames of each pretraining sample (``data.pairing.mode``), every frame in exactly one sample.

    ``frame``: one sample per frame. Per scene, in the given (trajectory) order: ``window``: consecutive
    runs of ``views`` frames (the last one may be shorter); ``scene``: ``g = ceil(n / views)`` groups, group
    ``s`` = frames ``s, s + g, s + 2g, …`` — each spread over the whole trajectory.
    """
    if mode == "frame" or views == 1:
        return [(f,) for f in frames]
    if mode not in ("window", "scene"):
        raise ConfigError(f"data.pairing.mode: {mode!r} is not one of ['frame', 'window', 'scene']")
    by_scene: dict[int, list[FrameRef]] = {}
    for f in frames:
        by_scene.setdefault(id(f.folder), []).append(f)
    out: list[Window] = []
    for refs in by_scene.values():
        if mode == "window":
            out += [tuple(refs[i : i + views]) for i in range(0, len(refs), views)]
        else:
            g = -(-len(refs) // views)
            out += [tuple(refs[s::g]) for s in range(g)]
    return out


class FrameDataset(Dataset[PairedSample | None]):
    """RGB-D frames or LiDAR scans → transformed samples; an item is one frame (``frame_to_sample``), one
    LiDAR scan with its cameras (``scan_to_sample``, the ``multi_camera`` rule) or a window of RGB-D frames of
    one scene fused and paired with each of them (``frames_to_sample``, when ``fuse_voxel_size`` is set).

    With a ``feature_cache`` every sample carries its frames' cached teacher maps (``teacher_cache``, an
    identity ``view``); a frame missing from the cache is an error (fill the cache first). With a cache and
    ``read_pixels=False`` (no transform reads the image, e.g. no superpixels) an RGB-D frame's teacher image
    is left blank (zeros of its shape): its size alone moves the pairing and the crop of the cached maps.
    With ``skip_bad=True`` a frame that fails to read (a :class:`DataError`) is skipped with a warning
    naming the file (a window keeps its other frames; an item with no frame left is ``None`` and
    :func:`collate_skip` drops it); otherwise the error propagates.

    With ``memory_mb > 0`` an RGB-D item (read, fused when a window, paired; before the cached maps and
    the transform) is kept in memory after its first use, as long as the kept windows hold at most
    ``memory_mb`` MiB, and reused when the window comes again (the next epoch): the same tensors, so the
    same samples, without reading and fusing the frames again. Items with a skipped frame are not kept
    (their warning comes every epoch). Each data-loader worker keeps its own.
    """

    def __init__(
        self,
        items: Sequence[FrameRef | Window],
        transform: Callable[[PairedSample], PairedSample],
        *,
        min_depth: float = 0.0,
        max_depth: float = float("inf"),
        skip_bad: bool = False,
        feature_cache: FeatureCache | None = None,
        fuse_voxel_size: float | None = None,
        depth_tolerance: float = 0.05,
        multi_camera: str = "all",
        occlusion: Mapping[str, float] | None = None,
        teacher_input: str = "rgb",
        up_axis: int = 2,
        read_pixels: bool = True,
        memory_mb: float = 0.0,
    ) -> None:
        if multi_camera not in MULTI_CAMERA_RULES:
            raise ValueError(f"multi_camera must be one of {list(MULTI_CAMERA_RULES)}, got {multi_camera!r}")
        self.items: list[Window] = [w if isinstance(w, tuple) else (w,) for w in items]
        self.attach = None if feature_cache is None else AttachCachedFeatures(feature_cache)
        self.image_content = read_pixels or feature_cache is None
        self.transform = transform
        self.min_depth, self.max_depth = min_depth, max_depth
        self.skip_bad = skip_bad
        self.fuse_voxel_size, self.depth_tolerance = fuse_voxel_size, depth_tolerance
        self.multi_camera = multi_camera
        self.occlusion = _occlusion(occlusion)
        self.teacher_input, self.up_axis = teacher_input, up_axis
        self.memory_left = int(memory_mb * 2**20)
        self.kept: dict[int, PairedSample] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, ref: FrameRef) -> Frame | None:
        try:
            frame = ref.folder.read(ref.index)
            if not isinstance(frame, Frame):
                raise ValueError(f"FrameDataset: {ref.name} is not an RGB-D frame; LiDAR scans are not fused")
            d = frame.depth
            if not np.any((d > self.min_depth) & (d <= self.max_depth)):
                raise DataError(
                    f"{frame.depth_path}: no depth in range [{self.min_depth}, {self.max_depth}] m"
                )
        except DataError as e:
            if not self.skip_bad:
                raise
            warnings.warn(f"skipping bad frame {ref.name}: {e}", stacklevel=4)
            return None
        return frame

    def _scan(self, ref: FrameRef) -> PairedSample | None:
        try:
            return read_sample(
                ref,
                min_depth=self.min_depth,
                multi_camera=self.multi_camera,
                occlusion=self.occlusion,
                teacher_input=self.teacher_input,
            )
        except DataError as e:
            if not self.skip_bad:
                raise
            warnings.warn(f"skipping bad frame {ref.name}: {e}", stacklevel=3)
            return None

    def __getitem__(self, i: int) -> PairedSample | None:
        item = self.items[i]
        if len(item) == 1 and source_cameras(item[0].folder) is not None:  # a LiDAR scan and its cameras
            scan = self._scan(item[0])
            if scan is None:
                return None
            return self.transform(scan if self.attach is None else self.attach(scan))
        sample = self.kept.get(i)
        if sample is None:
            sample = self._fuse(item, i)
            if sample is None:
                return None
        if self.attach is not None:
            sample = self.attach(sample)
        return self.transform(sample)

    def _fuse(self, item: Window, i: int) -> PairedSample | None:
        """The window's frames read, fused (or the single frame) and paired; kept when there is room."""
        read = [(ref, self._read(ref)) for ref in item]
        good = [(ref, frame) for ref, frame in read if frame is not None]
        if not good:
            return None
        frames = [frame for _, frame in good]
        look: dict[str, Any] = {
            "teacher_input": self.teacher_input,
            "up_axis": self.up_axis,
            "image_content": self.image_content,
        }
        if self.fuse_voxel_size is None:
            if len(frames) != 1:
                raise ValueError("FrameDataset: a window of several frames needs fuse_voxel_size")
            sample = frame_to_sample(frames[0], min_depth=self.min_depth, max_depth=self.max_depth, **look)
        else:
            sample = frames_to_sample(
                frames,
                fuse_voxel_size=self.fuse_voxel_size,
                depth_tolerance=self.depth_tolerance,
                min_depth=self.min_depth,
                max_depth=self.max_depth,
                **look,
            )
        sample.sources = tuple(ref for ref, _ in good)
        if len(good) == len(item):
            size = sum(t.numel() * t.element_size() for t in vars(sample).values() if isinstance(t, Tensor))
            if size <= self.memory_left:
                self.kept[i] = sample
                self.memory_left -= size
        return sample


def collate_skip(items: list[PairedSample | None]) -> PairedBatch | None:
    """:func:`collate` without the skipped (``None``) items; ``None`` when nothing is left."""
    samples = [s for s in items if s is not None]
    return collate(samples) if samples else None
