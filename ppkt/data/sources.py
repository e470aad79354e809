"""Frame sources: one interface over every on-disk RGB-D format, and the ``data.layout`` registry.

A *frame source* is one scene (one trajectory) whose frames read as :class:`~ppkt.data.rgbd_folder.Frame`
(colour registered to depth, metric depth, intrinsics, camera-to-world pose). Everything downstream — the
pretraining datasets, the held-out split, scene fusion and its cache — only uses the
:class:`FrameSource` protocol, so a new format is one reader class plus one entry in :data:`SCENE_READERS`.

``data.layout`` names a reader: ``generic`` and ``7scenes`` (:class:`~ppkt.data.rgbd_folder.RGBDFolder`
with a :class:`~ppkt.data.rgbd_folder.FolderLayout` preset), ``scannet``
(:class:`~ppkt.data.scannet.ScanNetScene`) and ``tum`` (:class:`~ppkt.data.tum.TUMScene`); further formats
register themselves here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ppkt.data.rgbd_folder import LAYOUTS, Frame, RGBDFolder, list_scenes
from ppkt.errors import ConfigError

__all__ = ["SCENE_READERS", "FrameSource", "files_fingerprint", "known_layouts", "open_scenes"]


@runtime_checkable
class FrameSource(Protocol):
    """One scene's frames. ``frames`` are the frame names in trajectory order; ``read(i)`` raises
    :class:`~ppkt.errors.DataError` naming the file on any problem with frame ``i``."""

    root: Path
    scene: str
    frames: list[str]

    def __len__(self) -> int: ...

    def read(self, i: int) -> Frame: ...

    def frame_files(self, name: str) -> list[Path]:
        """The files frame ``name`` is read from (cache fingerprints hash their sizes and mtimes)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-compatible description of the format and its settings (part of cache recipes)."""
        ...


def files_fingerprint(paths: Sequence[Path]) -> str:
    """A hash of the names, sizes and modification times of ``paths`` (missing files count as -1)."""
    h = hashlib.sha1()
    for path in paths:
        st = path.stat() if path.is_file() else None
        h.update(f"{path.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode())
    return h.hexdigest()


#: ``data.layout`` name -> ``open(root) -> [FrameSource, ...]`` (one per scene, naturally sorted).
SCENE_READERS: dict[str, Callable[[Path], list[FrameSource]]] = {}


def _folder_reader(layout: str) -> Callable[[Path], list[FrameSource]]:
    def open_folders(root: Path) -> list[FrameSource]:
        return [RGBDFolder(d, layout) for d in list_scenes(root, layout)]

    return open_folders


for _name in LAYOUTS:
    SCENE_READERS[_name] = _folder_reader(_name)


def _open_scannet(root: Path) -> list[FrameSource]:
    from ppkt.data.scannet import open_scannet  # imported on use: opening other layouts never loads it

    return [scene for scene in open_scannet(root)]


def _open_tum(root: Path) -> list[FrameSource]:
    from ppkt.data.tum import open_tum

    return [scene for scene in open_tum(root)]


SCENE_READERS["scannet"] = _open_scannet
SCENE_READERS["tum"] = _open_tum


def known_layouts() -> list[str]:
    return sorted(SCENE_READERS)


def open_scenes(root: str | Path, layout: str = "generic") -> list[FrameSource]:
    """Open every scene under ``root`` with the reader ``layout`` (a key of :data:`SCENE_READERS`)."""
    if layout not in SCENE_READERS:
        raise ConfigError(f"unknown data layout {layout!r}; choose one of {known_layouts()}")
    return SCENE_READERS[layout](Path(root).expanduser())
