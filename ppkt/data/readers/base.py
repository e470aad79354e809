"""The skeleton every RGB-D reader shares: listing the scene folders of a dataset root, and reading a frame
by index with the checks every format needs (index range, colour/depth/label sizes, some valid depth).

A reader subclasses :class:`SceneReader` and writes only what is specific to its format:
``_read_frame(name)`` (the files → a :class:`~ppkt.data.types.Frame`), ``frame_files`` and ``describe``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from ppkt.data.io.files import natural_key
from ppkt.data.types import Frame
from ppkt.errors import DataError

T = TypeVar("T")


def list_scene_folders(root: str | Path, marker: str, kind: str = "scene") -> list[Path]:
    """The scene folders of a dataset root, naturally sorted: ``root`` itself when it holds the file
    ``marker``, else its immediate sub-folders that do. :class:`DataError` when there are none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    if (root / marker).is_file():
        return [root]
    found = [d for d in root.iterdir() if d.is_dir() and (d / marker).is_file()]
    if not found:
        raise DataError(f"{root}: no {kind} folders found (no folder contains {marker!r})")
    return sorted(found, key=lambda d: natural_key(d.name))


def check_frame(frame: Frame) -> Frame:
    """The checks of every frame, whatever its format: the depth (and label/instance) images have the
    colour image's size, and some depth pixel is valid. :class:`DataError` names the file."""
    hw = frame.color.shape[:2]
    if frame.depth.shape != hw:
        raise DataError(
            f"{frame.depth_path}: depth shape {frame.depth.shape} does not match color image {hw}"
        )
    for what, arr, path in (
        ("label", frame.label, frame.label_path),
        ("instance", frame.instance, frame.instance_path),
    ):
        if arr is not None and arr.shape != hw:
            raise DataError(f"{path}: {what} shape {arr.shape} does not match color image {hw}")
    if not np.any(frame.depth > 0):
        raise DataError(f"{frame.depth_path}: frame has no valid depth (every pixel is invalid)")
    return frame


class IndexedReader(Generic[T]):
    """What every reader shares (frame and scan sources alike): a root, a scene name, the frame names in
    order, and :meth:`read` by index, which checks what :meth:`_read_checked` returns."""

    root: Path
    scene: str
    frames: list[str]

    def _read_checked(self, name: str) -> T:
        raise NotImplementedError

    def read(self, i: int) -> T:
        """Read and check frame ``i``."""
        if not -len(self.frames) <= i < len(self.frames):
            raise IndexError(f"frame index {i} out of range for {len(self.frames)} frames in {self.root}")
        return self._read_checked(self.frames[i])

    def frame_files(self, name: str) -> list[Path]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> T:
        return self.read(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, frames={len(self.frames)})"


class SceneReader(IndexedReader[Frame]):
    """One scene of an RGB-D dataset (the :class:`~ppkt.data.types.FrameSource` protocol): ``frames`` are
    the frame names in trajectory order; :meth:`read` raises :class:`DataError` naming the file."""

    def _read_frame(self, name: str) -> Frame:
        raise NotImplementedError

    def _read_checked(self, name: str) -> Frame:
        return check_frame(self._read_frame(name))
