"""Reader for RGB-D frames stored as one folder of image/text files per scene.

The generic layout (written by :mod:`ppkt.data.synth`) is, per scene folder::

    intrinsics.txt            3×3 pinhole matrix (text)
    <frame>.color.png|jpg     8-bit RGB
    <frame>.depth.png         uint16 depth, ``depth_scale`` raw units per metre (default mm); 0 = invalid
    <frame>.pose.txt          4×4 camera-to-world (metres, OpenCV camera frame: x right, y down, z forward)
    <frame>.label.png         optional uint16 semantic class (0 = unlabelled)
    <frame>.instance.png      optional uint16 instance id (0 = none)

File names are patterns with a ``{frame}`` placeholder, so other datasets with the same content but other
names read with the same code: :meth:`FolderLayout.seven_scenes` reads Microsoft 7-Scenes
(``camera-intrinsics.txt``, ``frame-XXXXXX.color.jpg``, depth 0 and 65535 invalid).

Every problem with the files raises :class:`~ppkt.errors.DataError` with a message naming the file and the
problem (missing, unreadable/truncated, wrong dtype or shape, non-rigid pose, no valid depth, ...); a bad
layout (pattern without ``{frame}``, unknown preset name) raises :class:`~ppkt.errors.ConfigError`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ppkt.data.io.files import natural_key
from ppkt.data.io.images import read_color, read_uint16
from ppkt.data.io.matrices import check_principal_point, read_intrinsics, read_pose
from ppkt.data.readers.base import SceneReader, list_scene_folders
from ppkt.data.types import Frame
from ppkt.errors import ConfigError, DataError

__all__ = [
    "LAYOUTS",
    "FolderLayout",
    "RGBDFolder",
    "list_scenes",
]

_PLACEHOLDER = "{frame}"


@dataclass(frozen=True)
class FolderLayout:
    """File-name patterns (with a ``{frame}`` placeholder) and depth encoding of one scene folder.

    ``color`` may be one pattern or several tried in order (the first existing file wins). ``label`` and
    ``instance`` are optional per frame; set them to ``None`` when a dataset has none.
    """

    intrinsics: str = "intrinsics.txt"
    color: str | tuple[str, ...] = ("{frame}.color.png", "{frame}.color.jpg")
    depth: str = "{frame}.depth.png"
    pose: str = "{frame}.pose.txt"
    label: str | None = "{frame}.label.png"
    instance: str | None = "{frame}.instance.png"
    depth_scale: float = 1000.0
    invalid_depth: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        patterns = [self.depth, self.pose, *self.color_patterns()]
        patterns += [p for p in (self.label, self.instance) if p is not None]
        for pattern in patterns:
            if pattern.count(_PLACEHOLDER) != 1:
                raise ConfigError(
                    f"FolderLayout: pattern {pattern!r} must contain {_PLACEHOLDER} exactly once"
                )
        if not (self.depth_scale > 0 and np.isfinite(self.depth_scale)):
            raise ConfigError(f"FolderLayout: depth_scale must be a positive number, got {self.depth_scale}")

    def color_patterns(self) -> tuple[str, ...]:
        """The color patterns in the order they are tried."""
        return (self.color,) if isinstance(self.color, str) else tuple(self.color)

    @classmethod
    def generic(cls) -> FolderLayout:
        """The layout written by :func:`ppkt.data.synth.synthesize`."""
        return cls()

    @classmethod
    def seven_scenes(cls) -> FolderLayout:
        """Microsoft 7-Scenes: ``frame-XXXXXX.{color.png,depth.png,pose.txt}``, depth mm, 0/65535 invalid."""
        return cls(
            intrinsics="camera-intrinsics.txt",
            color=("frame-{frame}.color.png", "frame-{frame}.color.jpg"),
            depth="frame-{frame}.depth.png",
            pose="frame-{frame}.pose.txt",
            label=None,
            instance=None,
            depth_scale=1000.0,
            invalid_depth=(0, 65535),
        )


LAYOUTS: dict[str, FolderLayout] = {"generic": FolderLayout.generic(), "7scenes": FolderLayout.seven_scenes()}


def _resolve_layout(layout: FolderLayout | str) -> FolderLayout:
    if isinstance(layout, FolderLayout):
        return layout
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown folder layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    return LAYOUTS[layout]


class RGBDFolder(SceneReader):
    """The frames of one scene folder (see the module docstring for the layout).

    Args:
        root: the scene folder.
        layout: a :class:`FolderLayout` or a preset name from :data:`LAYOUTS` (``"generic"``, ``"7scenes"``).
    """

    def __init__(self, root: str | Path, layout: FolderLayout | str = "generic") -> None:
        self.root = Path(root)
        self.layout = _resolve_layout(layout)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: scene folder does not exist")
        self.scene = self.root.name
        self._color_pattern = self.layout.color_patterns()[0]
        self.frames: list[str] = self._discover()
        if not self.frames:
            raise DataError(f"{self.root}: no frames found (no file matches {self._listing_patterns()})")
        self._K: np.ndarray | None = None

    def _listing_patterns(self) -> list[str]:
        return [*self.layout.color_patterns(), self.layout.depth, self.layout.pose]

    def _discover(self) -> list[str]:
        """Every frame with any of its colour, depth or pose files (a broken link counts), naturally sorted: a
        frame missing one of them is listed, so reading it names the missing file (or ``data.skip_bad``
        skips it with a warning) instead of it being left out unseen. A file several patterns match belongs
        to the shortest frame name. Also notes the colour pattern most frames use, which
        :meth:`color_path` names for a frame without a colour file."""
        claims: dict[Path, tuple[str, str]] = {}  # file -> (frame name, pattern)
        for pattern in self._listing_patterns():
            prefix, suffix = pattern.split(_PLACEHOLDER)
            for path in self.root.glob(prefix + "*" + suffix):
                rel = path.relative_to(self.root).as_posix()
                name = rel[len(prefix) : len(rel) - len(suffix)]
                if name and not path.is_dir() and (path not in claims or len(name) < len(claims[path][0])):
                    claims[path] = (name, pattern)
        colors = Counter(p for _, p in claims.values() if p in self.layout.color_patterns())
        if colors:
            self._color_pattern = colors.most_common(1)[0][0]
        return sorted({name for name, _ in claims.values()}, key=natural_key)

    @property
    def K(self) -> np.ndarray:
        """The validated 3×3 intrinsics of the scene (read once)."""
        if self._K is None:
            self._K = read_intrinsics(self.root / self.layout.intrinsics)
        return self._K.copy()

    def path(self, pattern: str, name: str) -> Path:
        """The file of frame ``name`` for a ``{frame}`` pattern."""
        return self.root / pattern.replace(_PLACEHOLDER, name)

    def color_path(self, name: str) -> Path:
        """The first existing colour file of frame ``name`` (when none exists, the file of the pattern most
        of the scene's frames use: the error names ``.jpg`` in a scene of JPEGs)."""
        candidates = [self.path(p, name) for p in self.layout.color_patterns()]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        return self.path(self._color_pattern, name)

    def frame_files(self, name: str) -> list[Path]:
        """The files frame ``name`` is read from (colour, depth, pose and, when the layout has one, label)."""
        lay = self.layout
        paths = [self.color_path(name), self.path(lay.depth, name), self.path(lay.pose, name)]
        return paths + [self.path(p, name) for p in (lay.label,) if p is not None]

    def describe(self) -> dict[str, object]:
        """The layout as a JSON-compatible dict (part of cache recipes)."""
        return {"reader": "folder", **asdict(self.layout)}

    def index(self, name: str) -> int:
        """Position of frame ``name`` in :attr:`frames`."""
        try:
            return self.frames.index(name)
        except ValueError:
            raise DataError(f"{self.root}: no frame named {name!r}") from None

    def read_depth(self, path: Path) -> np.ndarray:
        """Read a depth PNG as float32 metres with every invalid raw value set to 0."""
        raw = read_uint16(path, "depth")
        invalid = np.isin(raw, np.asarray(self.layout.invalid_depth, dtype=np.int64))
        depth = raw.astype(np.float32) / np.float32(self.layout.depth_scale)
        depth[invalid] = 0.0
        return depth

    def _read_frame(self, name: str) -> Frame:
        """Read frame ``name`` (the checks of :func:`~ppkt.data.readers.base.check_frame` follow)."""
        lay = self.layout
        K = self.K
        color_path = self.color_path(name)
        color = read_color(color_path)
        H, W = color.shape[:2]
        check_principal_point(K, (H, W), self.root / lay.intrinsics, color_path)
        depth_path = self.path(lay.depth, name)
        depth = self.read_depth(depth_path)
        pose_path = self.path(lay.pose, name)
        pose = read_pose(pose_path)
        frame = Frame(
            self.scene,
            name,
            color,
            depth,
            K,
            pose,
            color_path=color_path,
            depth_path=depth_path,
            pose_path=pose_path,
        )
        for attr, pattern in (("label", lay.label), ("instance", lay.instance)):
            if pattern is None:
                continue
            path = self.path(pattern, name)
            if not path.is_file():
                continue
            setattr(frame, attr, read_uint16(path, attr).astype(np.int64))
            setattr(frame, f"{attr}_path", path)
        return frame


def list_scenes(root: str | Path, layout: FolderLayout | str = "generic") -> list[Path]:
    """Scene folders of a dataset root, naturally sorted: a folder that itself contains the layout's
    intrinsics file is a single scene; otherwise its immediate sub-folders that contain one are the scenes."""
    return list_scene_folders(root, _resolve_layout(layout).intrinsics)
