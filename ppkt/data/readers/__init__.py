"""Frame sources: one interface over every on-disk RGB-D format, and the ``data.layout`` registry.

A *frame source* is one scene (one trajectory) whose frames read as :class:`~ppkt.data.types.Frame`
(colour registered to depth, metric depth, intrinsics, camera-to-world pose). Everything downstream — the
pretraining datasets, the held-out split, scene fusion and its cache — only uses the
:class:`FrameSource` protocol, so a new format is one reader class plus one entry in :data:`SCENE_READERS`.

``data.layout`` names a reader: ``generic`` and ``7scenes``
(:class:`~ppkt.data.readers.folder.RGBDFolder` with a :class:`~ppkt.data.readers.folder.FolderLayout`
preset), ``scannet`` (:class:`~ppkt.data.readers.scannet.ScanNetScene`) and ``tum``
(:class:`~ppkt.data.readers.tum.TUMScene`); a new format is one module here and one entry below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ppkt.data.readers.folder import LAYOUTS, RGBDFolder, list_scenes
from ppkt.data.readers.scannet import open_scannet
from ppkt.data.readers.tum import open_tum
from ppkt.data.types import FrameSource
from ppkt.errors import ConfigError

__all__ = ["SCENE_READERS", "known_layouts", "open_scenes"]


def _folder_reader(layout: str) -> Callable[[Path], list[FrameSource]]:
    def open_folders(root: Path) -> list[FrameSource]:
        return [RGBDFolder(d, layout) for d in list_scenes(root, layout)]

    return open_folders


#: ``data.layout`` name -> ``open(root) -> [FrameSource, ...]`` (one per scene, naturally sorted).
SCENE_READERS: dict[str, Callable[[Path], list[FrameSource]]] = {
    **{name: _folder_reader(name) for name in LAYOUTS},
    "scannet": lambda root: list(open_scannet(root)),
    "tum": lambda root: list(open_tum(root)),
}


def known_layouts() -> list[str]:
    return sorted(SCENE_READERS)


def open_scenes(root: str | Path, layout: str = "generic") -> list[FrameSource]:
    """Open every scene under ``root`` with the reader ``layout`` (a key of :data:`SCENE_READERS`)."""
    if layout not in SCENE_READERS:
        raise ConfigError(f"unknown data layout {layout!r}; choose one of {known_layouts()}")
    return SCENE_READERS[layout](Path(root).expanduser())
