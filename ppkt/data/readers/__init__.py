"""Frame and scan sources: one interface over every on-disk format, and the ``data.layout`` registry.

A *frame source* is one scene (one trajectory) whose frames read as :class:`~ppkt.data.types.Frame`
(colour registered to depth, metric depth, intrinsics, camera-to-world pose). Everything downstream — the
pretraining datasets, the held-out split, scene fusion and its cache — only uses the
:class:`FrameSource` protocol, so a new format is one reader class plus one entry in :data:`SCENE_READERS`.

``data.layout`` names a reader: ``generic`` and ``7scenes``
(:class:`~ppkt.data.readers.folder.RGBDFolder` with a :class:`~ppkt.data.readers.folder.FolderLayout`
preset), ``scannet`` (:class:`~ppkt.data.readers.scannet.ScanNetScene`) and ``tum``
(:class:`~ppkt.data.readers.tum.TUMScene`); a new format is one module here and one entry below.

A *scan source* (:class:`~ppkt.data.types.ScanSource`, the same interface) is one LiDAR sequence or scene
whose frames read as :class:`~ppkt.data.types.Scan` (a sweep plus its calibrated camera images); the LiDAR
layouts are ``kitti``, ``kitti_odometry``, ``semantickitti`` (:mod:`~ppkt.data.readers.kitti`),
``kitti_raw`` (:mod:`~ppkt.data.readers.kitti_raw`), ``nuscenes`` (:mod:`~ppkt.data.readers.nuscenes`) and
``rig`` (:mod:`~ppkt.data.readers.rig`), opened with :func:`open_scans`. :data:`SCENE_READERS` holds both
kinds; :func:`is_lidar_layout` tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ppkt.data.readers.folder import LAYOUTS, RGBDFolder, list_scenes
from ppkt.data.readers.kitti import open_kitti, open_kitti_sequences
from ppkt.data.readers.kitti_raw import open_kitti_raw
from ppkt.data.readers.nuscenes import open_nuscenes
from ppkt.data.readers.rig import open_rig
from ppkt.data.readers.scannet import open_scannet
from ppkt.data.readers.tum import open_tum
from ppkt.data.types import FrameSource, ScanSource
from ppkt.errors import ConfigError

__all__ = [
    "LIDAR_READERS",
    "RGBD_READERS",
    "SCENE_READERS",
    "is_lidar_layout",
    "known_layouts",
    "open_scans",
    "open_scenes",
]


def _folder_reader(layout: str) -> Callable[[Path], list[FrameSource]]:
    def open_folders(root: Path) -> list[FrameSource]:
        return [RGBDFolder(d, layout) for d in list_scenes(root, layout)]

    return open_folders


#: RGB-D ``data.layout`` name -> ``open(root) -> [FrameSource, ...]`` (one per scene, naturally sorted).
RGBD_READERS: dict[str, Callable[[Path], list[FrameSource]]] = {
    **{name: _folder_reader(name) for name in LAYOUTS},
    "scannet": lambda root: list(open_scannet(root)),
    "tum": lambda root: list(open_tum(root)),
}

#: LiDAR ``data.layout`` name -> ``open(root) -> [ScanSource, ...]`` (one per sequence / scene).
LIDAR_READERS: dict[str, Callable[[Path], list[ScanSource]]] = {
    "kitti": lambda root: list(open_kitti(root)),
    "kitti_raw": lambda root: list(open_kitti_raw(root)),
    "kitti_odometry": lambda root: list(open_kitti_sequences(root, labels=False)),
    "semantickitti": lambda root: list(open_kitti_sequences(root, labels=True)),
    "nuscenes": lambda root: list(open_nuscenes(root)),
    "rig": lambda root: list(open_rig(root)),
}

#: every ``data.layout`` name -> its opener (RGB-D frame sources or LiDAR scan sources).
SCENE_READERS: dict[str, Callable[[Path], list[FrameSource]] | Callable[[Path], list[ScanSource]]] = {
    **RGBD_READERS,
    **LIDAR_READERS,
}


def known_layouts() -> list[str]:
    return sorted(SCENE_READERS)


def is_lidar_layout(layout: str) -> bool:
    """Whether ``layout`` reads LiDAR scans (:func:`open_scans`), not RGB-D frames (:func:`open_scenes`)."""
    return layout in LIDAR_READERS


def _unknown(layout: str) -> ConfigError:
    return ConfigError(f"unknown data layout {layout!r}; choose one of {known_layouts()}")


def open_scenes(root: str | Path, layout: str = "generic") -> list[FrameSource]:
    """Open every scene under ``root`` with the RGB-D reader ``layout`` (a key of :data:`RGBD_READERS`)."""
    if layout in LIDAR_READERS:
        raise ConfigError(
            f"data layout {layout!r} reads LiDAR scans, not RGB-D frames (open it with open_scans)"
        )
    if layout not in RGBD_READERS:
        raise _unknown(layout)
    return RGBD_READERS[layout](Path(root).expanduser())


def open_scans(root: str | Path, layout: str) -> list[ScanSource]:
    """Open every LiDAR sequence / scene under ``root`` with the reader ``layout`` (a key of
    :data:`LIDAR_READERS`)."""
    if layout in RGBD_READERS:
        raise ConfigError(
            f"data layout {layout!r} reads RGB-D frames, not LiDAR scans (open it with open_scenes)"
        )
    if layout not in LIDAR_READERS:
        raise _unknown(layout)
    return LIDAR_READERS[layout](Path(root).expanduser())
