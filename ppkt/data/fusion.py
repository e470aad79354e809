"""Scene-level semantic segmentation data: RGB-D frames fused into one labelled point cloud per scene.

* :func:`fuse_scene` back-projects every ``frame_skip``-th frame of an :class:`FrameSource` into world
  coordinates and voxel-downsamples the union into a :class:`FusedScene`: per voxel ``xyz [N, 3]`` float32
  (mean of its points), ``rgb [N, 3]`` float32 in ``[0, 1]`` (mean colour) and ``label [N]`` int64, the
  **majority vote** of the class ids of its labelled pixels (class 0 = unlabelled never votes; a voxel
  without labelled pixels gets 0; ties go to the smaller class id). Frames are reduced in chunks of about
  ``chunk_points`` points, so memory is bounded by the fused cloud, not by the number of frames.
* :func:`load_or_fuse` caches each fused scene as ``<cache>/fused-<hash>/<scene>.npz`` together with its
  recipe (:func:`fusion_recipe`: source folder, layout, voxel size, frame skip, depth range, frame names,
  file sizes/mtimes, the dataset's ``dataset.json`` recipe and classes), an item of a
  :class:`~ppkt.cache.CacheFolder` keyed by the dataset root and the parameters. A stored recipe that does
  not match is detected and the scene is fused again; each file is published atomically, and processes
  sharing the cache fuse a scene once (the others wait for it).
* Sources with an annotated mesh (e.g. :class:`~ppkt.data.readers.scannet.ScanNetScene`) have an optional
  ``labelled_cloud() -> FusedScene | None`` and ``label_files() -> [Path]``: :func:`load_or_fuse` then
  voxel-downsamples the labelled cloud (:func:`voxel_downsample`) instead of fusing the unlabelled frames, and
  the recipe fingerprints the label files too.

The segmentation dataset over fused scenes and the limited-label subsets live in
:mod:`ppkt.data.segmentation`; the held-out split in :mod:`ppkt.data.splits`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ppkt.cache import CacheFolder, jsonable
from ppkt.data.io.files import files_fingerprint
from ppkt.data.readers import open_scenes
from ppkt.data.types import Frame, FrameSource, FusedScene
from ppkt.errors import ConfigError, DataError
from ppkt.geometry import backproject_depth, float32_shift, pack_keys
from ppkt.geometry.voxelize import first_by_priority

__all__ = [
    "FUSION_VERSION",
    "MAX_UNNAMED_LABEL_ID",
    "FusedScene",
    "dataset_info",
    "fuse_scene",
    "fusion_recipe",
    "has_mesh_labels",
    "labelled_cloud",
    "load_or_fuse",
    "load_or_fuse_all",
    "mesh_scene",
    "voxel_downsample",
]

#: Bump whenever :func:`fuse_scene` gives a different result for the same recipe (invalidates caches).
FUSION_VERSION = 1


def dataset_info(folder: FrameSource) -> dict[str, Any] | None:
    """The ``dataset.json`` of a scene's dataset (in the scene folder or its parent), or ``None``."""
    from ppkt.data.synth.writer import read_dataset_info

    for root in (folder.root, folder.root.parent):
        if (root / "dataset.json").is_file():
            return read_dataset_info(root)
    return None


def _used_frames(folder: FrameSource, frame_skip: int) -> list[int]:
    if frame_skip < 1:
        raise ConfigError(f"frame_skip must be >= 1, got {frame_skip}")
    return list(range(0, len(folder), frame_skip))


def _fingerprint(folder: FrameSource, frames: Sequence[int]) -> str:
    """A hash of the size and modification time of every file the fused frames read."""
    return files_fingerprint([path for i in frames for path in folder.frame_files(folder.frames[i])])


def has_mesh_labels(folder: FrameSource) -> bool:
    """Whether the source can label its scene as a whole (an optional ``labelled_cloud()``, e.g. ScanNet's
    annotated mesh), whether or not this scene's labels exist."""
    return callable(getattr(folder, "labelled_cloud", None))


def _label_files(folder: FrameSource) -> list[Path]:
    files = getattr(folder, "label_files", None)
    return [Path(p) for p in files()] if callable(files) else []


def _check_params(voxel_size: float, min_depth: float, max_depth: float) -> None:
    if not (voxel_size > 0 and math.isfinite(voxel_size)):
        raise ConfigError(f"voxel_size must be a positive number, got {voxel_size}")
    if not 0 <= min_depth < max_depth:
        raise ConfigError(
            f"depth range must satisfy 0 <= min_depth < max_depth, got {min_depth}, {max_depth}"
        )


def fusion_recipe(
    folder: FrameSource,
    *,
    voxel_size: float,
    frame_skip: int = 1,
    min_depth: float = 0.0,
    max_depth: float = math.inf,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Everything the fused cloud of ``folder`` depends on (JSON-compatible; stored with every cache)."""
    _check_params(voxel_size, min_depth, max_depth)
    frames = _used_frames(folder, frame_skip)
    info = dataset_info(folder)
    recipe = {
        "version": FUSION_VERSION,
        "source": str(folder.root.resolve()),
        "layout": folder.describe(),
        "voxel_size": float(voxel_size),
        "frame_skip": int(frame_skip),
        "min_depth": float(min_depth),
        "max_depth": float(max_depth),
        "skip_bad": bool(skip_bad),
        "frames": [folder.frames[i] for i in frames],
        "files": _fingerprint(folder, frames),
        "dataset": None if info is None else {"recipe": info["recipe"], "classes": info.get("classes")},
    }
    if has_mesh_labels(folder):  # only then: the recipes (and caches) of other sources stay as they were
        recipe["mesh"] = files_fingerprint(_label_files(folder))
    return dict(jsonable(recipe))


class _Accumulator:
    """Running per-voxel sums (grid, Σxyz, Σrgb, count) and sparse (voxel, class) vote counts."""

    def __init__(self) -> None:
        self.grid = torch.zeros(0, 3, dtype=torch.long)
        self.sxyz = torch.zeros(0, 3, dtype=torch.float64)
        self.srgb = torch.zeros(0, 3, dtype=torch.float64)
        self.count = torch.zeros(0, dtype=torch.long)
        self.vote = torch.zeros(0, 5, dtype=torch.long)  # rows (x, y, z, class, count), class > 0
        self.pending: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self.pending_points = 0

    def add(self, grid: Tensor, xyz: Tensor, rgb: Tensor, cls: Tensor) -> None:
        self.pending.append((grid, xyz, rgb, cls))
        self.pending_points += int(grid.shape[0])

    def reduce(self) -> None:
        """Merge the pending frames into the running sums."""
        if not self.pending:
            return
        grids, xyzs, rgbs, clss = (list(t) for t in zip(*self.pending))
        self.pending, self.pending_points = [], 0
        fresh, cls = torch.cat(grids), torch.cat(clss)
        grid = torch.cat([self.grid, fresh])
        uniq, inv = torch.unique(pack_keys(grid), return_inverse=True)
        M = uniq.shape[0]
        ones = torch.ones(fresh.shape[0], dtype=torch.long)
        self.sxyz = torch.zeros(M, 3, dtype=torch.float64).index_add_(0, inv, torch.cat([self.sxyz, *xyzs]))
        self.srgb = torch.zeros(M, 3, dtype=torch.float64).index_add_(0, inv, torch.cat([self.srgb, *rgbs]))
        self.count = torch.zeros(M, dtype=torch.long).index_add_(0, inv, torch.cat([self.count, ones]))
        self.grid = torch.zeros(M, 3, dtype=torch.long).index_copy_(0, inv, grid)
        labelled = cls > 0
        new = torch.cat([fresh[labelled], cls[labelled, None], ones[labelled, None]], 1)
        votes = torch.cat([self.vote, new])
        if votes.shape[0]:
            vu, vinv = torch.unique(pack_keys(votes[:, :4]), return_inverse=True)
            counts = torch.zeros(vu.shape[0], dtype=torch.long).index_add_(0, vinv, votes[:, 4])
            keys = torch.zeros(vu.shape[0], 4, dtype=torch.long).index_copy_(0, vinv, votes[:, :4])
            self.vote = torch.cat([keys, counts[:, None]], 1)

    def result(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(xyz [M, 3] f32, rgb [M, 3] f32 in [0, 1], label [M] i64)``, voxels in (x, y, z) order."""
        self.reduce()
        M = self.grid.shape[0]
        c = self.count.to(torch.float64)[:, None]
        label = torch.zeros(M, dtype=torch.long)
        if self.vote.shape[0] and M:
            both = pack_keys(torch.cat([self.grid, self.vote[:, :3]]))
            _, inv = torch.unique(both, return_inverse=True)  # grid is unique and sorted: inv[:M] = arange
            voted, group = torch.unique(inv[M:], return_inverse=True)
            cls, cnt = self.vote[:, 3], self.vote[:, 4]
            priority = (cls - cnt * (int(cls.max()) + 1)).to(torch.float64)  # most votes, then smaller class
            label[voted] = cls[first_by_priority(group, priority, voted.shape[0])]
        xyz = self.sxyz / c
        return (xyz - float32_shift(xyz)).float(), (self.srgb / (255.0 * c)).float(), label


#: The largest label id a scene may use without a ``dataset.json`` that names its classes. Label ids are
#: class ids (0 = unlabelled) and a segmentation head gets one output per id up to the largest, so an
#: unbounded id (a 16-bit instance or colour code saved as a label) would silently make a huge head, or
#: exhaust memory. 255, the usual 8-bit "void", is beyond it: write 0 (unlabelled) for such pixels.
MAX_UNNAMED_LABEL_ID = 254


def check_label_ids(frame: Frame, names: Sequence[str] | None) -> None:
    """:class:`DataError` naming the label file and the id when ``frame`` has a label id beyond the
    classes of ``dataset.json`` (``names``), or, without one, beyond :data:`MAX_UNNAMED_LABEL_ID`."""
    if frame.label is None or frame.label.size == 0:
        return
    top = int(frame.label.max())
    if names is not None and top >= len(names):
        raise DataError(
            f"{frame.label_path}: label id {top} is beyond the {len(names)} classes "
            f"(ids 0..{len(names) - 1}) that the dataset's dataset.json names"
        )
    if names is None and top > MAX_UNNAMED_LABEL_ID:
        void = " (255 is often 'void': write 0 = unlabelled for it)" if top == 255 else ""
        raise DataError(
            f"{frame.label_path}: label id {top} exceeds {MAX_UNNAMED_LABEL_ID}, the largest class id "
            f"allowed without a dataset.json naming the classes{void}; ids are class ids (0 = unlabelled): "
            'map yours to 1..N, or name them in a dataset.json beside the scenes: {"format": '
            '"ppkt-rgbd-folder", "recipe": {}, "classes": [name of id 0, name of id 1, ...]}'
        )


def _class_names(info: dict[str, Any] | None) -> tuple[str, ...] | None:
    names = None if info is None else info.get("classes")
    return tuple(str(n) for n in names) if isinstance(names, list) and names else None


def fuse_scene(
    folder: FrameSource,
    *,
    voxel_size: float,
    frame_skip: int = 1,
    min_depth: float = 0.0,
    max_depth: float = math.inf,
    skip_bad: bool = False,
    chunk_points: int = 4_000_000,
) -> FusedScene:
    """Fuse every ``frame_skip``-th frame of ``folder`` into one voxel-downsampled labelled point cloud.

    Depth outside ``(min_depth, max_depth]`` is ignored. Frames without a label file vote for nothing (their
    points are unlabelled). With ``skip_bad`` a frame that fails to read is skipped with a warning;
    otherwise its :class:`~ppkt.errors.DataError` propagates. See the module docstring for the output.
    """
    _check_params(voxel_size, min_depth, max_depth)
    frames = _used_frames(folder, frame_skip)
    names = _class_names(dataset_info(folder))
    acc = _Accumulator()
    used = 0
    max_cls = 0
    for i in frames:
        try:
            fr = folder.read(i)
        except DataError as e:
            if not skip_bad:
                raise
            warnings.warn(
                f"fuse_scene: skipping bad frame {folder.scene}/{folder.frames[i]}: {e}", stacklevel=2
            )
            continue
        check_label_ids(fr, names)
        bp = backproject_depth(
            torch.from_numpy(fr.depth).to(torch.float64),
            torch.from_numpy(fr.K),
            torch.from_numpy(fr.pose),
            min_depth=min_depth,
            max_depth=max_depth,
        )
        u, v = bp.uv[:, 0], bp.uv[:, 1]
        n = bp.points_world.shape[0]
        cls = torch.zeros(n, dtype=torch.long) if fr.label is None else torch.from_numpy(fr.label)[v, u]
        max_cls = max(max_cls, int(cls.max()) if n else 0)
        rgb = torch.from_numpy(fr.color)[v, u].to(torch.float64)
        acc.add(torch.floor(bp.points_world / voxel_size).long(), bp.points_world, rgb, cls)
        used += 1
        if acc.pending_points >= chunk_points:
            acc.reduce()
    if used == 0:
        raise DataError(f"{folder.root}: no readable frames to fuse")
    xyz, rgb, label = acc.result()
    if xyz.shape[0] == 0:
        raise DataError(f"{folder.root}: no depth in range ({min_depth}, {max_depth}] m in any fused frame")
    num_classes = max(max_cls + 1, len(names) if names else 1)
    if names is not None and len(names) < num_classes:
        raise DataError(f"{folder.root}: label id {max_cls} exceeds the {len(names)} classes of dataset.json")
    return FusedScene(folder.scene, xyz.numpy(), rgb.numpy(), label.numpy(), num_classes, names)


def voxel_downsample(cloud: FusedScene, voxel_size: float) -> FusedScene:
    """One point per ``voxel_size`` voxel of ``cloud``: mean xyz and rgb, majority-vote label (0 never votes,
    ties go to the smaller id), voxels in (x, y, z) order; names and classes are kept."""
    if not (voxel_size > 0 and math.isfinite(voxel_size)):
        raise ConfigError(f"voxel_size must be a positive number, got {voxel_size}")
    xyz = torch.from_numpy(np.asarray(cloud.xyz, dtype=np.float64))
    rgb = torch.from_numpy(np.asarray(cloud.rgb, dtype=np.float64)) * 255.0  # the accumulator divides by 255
    acc = _Accumulator()
    label = torch.from_numpy(np.asarray(cloud.label, dtype=np.int64))
    acc.add(torch.floor(xyz / voxel_size).long(), xyz, rgb, label)
    out_xyz, out_rgb, out_label = acc.result()
    return FusedScene(
        cloud.name, out_xyz.numpy(), out_rgb.numpy(), out_label.numpy(), cloud.num_classes, cloud.class_names
    )


def labelled_cloud(folder: FrameSource) -> FusedScene | None:
    """The source's labelled cloud (its optional ``labelled_cloud()``, e.g. an annotated mesh), as stored
    (not downsampled), or ``None`` when the source has none; an empty one is a :class:`DataError`."""
    get = getattr(folder, "labelled_cloud", None)
    cloud = get() if callable(get) else None
    if not isinstance(cloud, FusedScene):
        return None
    if len(cloud) == 0:
        raise DataError(f"{folder.root}: the labelled cloud has no points")
    return cloud


def mesh_scene(folder: FrameSource, voxel_size: float) -> FusedScene | None:
    """:func:`labelled_cloud` voxel-downsampled with :func:`voxel_downsample`, or ``None``."""
    cloud = labelled_cloud(folder)
    return None if cloud is None else voxel_downsample(cloud, voxel_size)


def _cache_folder(recipe: dict[str, Any], cache_dir: str | Path | None) -> CacheFolder:
    """``<cache root>/fused-<hash of the dataset folder and parameters>``, one ``<scene>.npz`` per scene."""
    keys = ("version", "layout", "voxel_size", "frame_skip", "min_depth", "max_depth", "skip_bad")
    key = {k: recipe[k] for k in keys} | {"dataset_root": str(Path(recipe["source"]).parent)}
    return CacheFolder("fused", key, cache_dir)


def _read_cache(path: Path, recipe: dict[str, Any]) -> FusedScene | None:
    """The cached scene at ``path`` if it exists, is readable and was made from exactly ``recipe``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("recipe") != recipe:
                return None
            names = meta.get("class_names")
            return FusedScene(
                meta["name"],
                z["xyz"].astype(np.float32),
                z["rgb"].astype(np.float32),
                z["label"].astype(np.int64),
                int(meta["num_classes"]),
                None if names is None else tuple(names),
            )
    except (OSError, ValueError, KeyError, EOFError):
        return None  # truncated or foreign file: fuse again


def load_or_fuse(
    folder: FrameSource,
    *,
    voxel_size: float,
    frame_skip: int = 1,
    min_depth: float = 0.0,
    max_depth: float = math.inf,
    skip_bad: bool = False,
    cache_dir: str | Path | None = None,
    verbose: bool = False,
) -> FusedScene:
    """:func:`fuse_scene` through a cache that stores each scene with its :func:`fusion_recipe`.

    A source with a labelled cloud (``labelled_cloud()`` returning a :class:`FusedScene`, e.g. a ScanNet
    scene with its annotated mesh) gives :func:`mesh_scene` instead of fused frames.

    The cache is ``<cache_dir or $PPKT_CACHE_DIR or ~/.cache/ppkt>/fused-<hash>/<scene>.npz`` (never inside
    the dataset, so read-only datasets work). A cached file whose stored recipe differs from the current one
    (other frames, changed files, another ``dataset.json`` recipe, a new :data:`FUSION_VERSION`) or that does
    not read is replaced, atomically; see :meth:`ppkt.cache.CacheFolder.load_or_make` for concurrent runs.
    """
    params: dict[str, Any] = dict(
        voxel_size=voxel_size, frame_skip=frame_skip, min_depth=min_depth, max_depth=max_depth
    )
    recipe = fusion_recipe(folder, skip_bad=skip_bad, **params)
    cache = _cache_folder(recipe, cache_dir)
    name = f"{folder.scene}.npz"

    def make() -> FusedScene:
        scene = mesh_scene(folder, voxel_size)  # an annotated mesh, when the source has one
        if verbose:
            what = "labelled mesh of scene" if scene is not None else "fusing scene"
            print(f"[ppkt] {what} {folder.root} into {cache.item(name)}")
        return fuse_scene(folder, skip_bad=skip_bad, **params) if scene is None else scene

    def save(scene: FusedScene, tmp: Path) -> None:
        meta = {
            "recipe": recipe,
            "name": scene.name,
            "num_classes": scene.num_classes,
            "class_names": None if scene.class_names is None else list(scene.class_names),
        }
        with tmp.open("wb") as f:
            np.savez(f, xyz=scene.xyz, rgb=scene.rgb, label=scene.label, meta=np.array(json.dumps(meta)))

    return cache.load_or_make(name, lambda path: _read_cache(path, recipe), make, save)


def load_or_fuse_all(root: str | Path, layout: str = "generic", **kwargs: Any) -> list[FusedScene]:
    """:func:`load_or_fuse` (same keyword arguments) for every scene folder of a dataset root."""
    return [load_or_fuse(folder, **kwargs) for folder in open_scenes(root, layout)]
