"""On-disk cache of the frozen teacher's feature maps, one file per frame and camera.

The teacher never changes during pretraining, so its features of a frame are computed once (by
``ppkt cache-features`` or on the first ``teacher.cache=true`` run) and reused every epoch. Each entry holds
the teacher's maps of one **whole image** (an RGB-D frame's, or one camera's of a LiDAR frame) resized to
the cache image size ``(Hc, Wc)``, in float16; the
image augmentations act on them later through the sample's ``view`` (see :class:`CachedFeatures` and
:class:`ppkt.data.transforms.CropCachedFeatures`), exactly as they act on the pairing.

Layout::

    <cache root>/teacher-<hash of the recipe>/recipe.json    teacher, weights file identity, layers, size
    <cache root>/teacher-<hash of the recipe>/<frame hash>.pt {"frame", "files", "frame_size", "maps"}

An entry is keyed by (scene root, frame name) for a single-image frame and by (scene root, frame name,
camera name) for a camera of a multi-camera frame.

The directory is keyed by the recipe (teacher name, the weights file's path/size/mtime, layers, strides,
channels, cache image size, the teacher's input when it is not ``rgb`` (:mod:`ppkt.data.teacher_input`),
:data:`FEATURE_CACHE_VERSION`); a frame file also stores the fingerprint of the
frame's own files (sizes and mtimes), so an edited frame is recomputed and never served stale. It is a
:class:`~ppkt.cache.CacheFolder` of items: ``recipe.json`` and each frame file are published atomically, and
a valid frame file another process published is kept, never rewritten (:meth:`~ppkt.cache.CacheFolder.store`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ppkt.cache import CacheFolder
from ppkt.data.io.files import files_fingerprint
from ppkt.data.types import CachedFeatures, FrameSource

__all__ = ["FEATURE_CACHE_VERSION", "CachedFeatures", "FeatureCache", "files_fingerprint", "weights_identity"]

#: Bump when the stored content changes meaning (invalidates every cache directory).
FEATURE_CACHE_VERSION = 1


def weights_identity(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """``{path, size, mtime_ns}`` of a weights file, or ``{path, files}`` (a fingerprint of every file in
    it) for a weights folder such as a DINOv2 ``save_pretrained`` directory; a model id that is not a path
    is kept as given. ``None`` for a teacher's default weights."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.resolve().rglob("*") if f.is_file())
        return {"path": str(p.resolve()), "files": files_fingerprint(files)}
    if not p.exists():
        return {"id": str(path)}
    st = p.resolve().stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class FeatureCache:
    """One cache directory: the features of one teacher configuration at one image size.

    Args:
        recipe: JSON-compatible description of everything the features depend on (see
            :meth:`make_recipe`); its hash names the directory.
        cache_dir: cache root (``None``: ``$PPKT_CACHE_DIR`` or ``~/.cache/ppkt``).
    """

    def __init__(self, recipe: dict[str, Any], cache_dir: str | Path | None = None) -> None:
        self.folder = CacheFolder("teacher", recipe, cache_dir)
        self.recipe = self.folder.key
        self.root = self.folder.root
        self.strides = [int(s) for s in self.recipe["strides"]]
        self.image_size = (int(self.recipe["image_size"][0]), int(self.recipe["image_size"][1]))
        self._recipe_checked = False  # recipe.json is checked (or written) once, on the first store

    @staticmethod
    def make_recipe(
        teacher: str,
        weights: str | os.PathLike[str] | None,
        layers: Sequence[str],
        strides: Sequence[int],
        channels: Sequence[int],
        image_size: Sequence[int],
        teacher_input: str = "rgb",
    ) -> dict[str, Any]:
        recipe = {
            "version": FEATURE_CACHE_VERSION,
            "teacher": teacher,
            "weights": weights_identity(weights),
            "layers": list(layers),
            "strides": [int(s) for s in strides],
            "channels": [int(c) for c in channels],
            "image_size": [int(image_size[0]), int(image_size[1])],
        }
        if teacher_input != "rgb":  # (absent for rgb: the caches filled before the key existed stay valid)
            recipe["input"] = teacher_input
        return recipe

    # ------------------------------------------------------------------ paths and keys
    @staticmethod
    def frame_key(source: FrameSource, name: str, camera: str | None = None) -> str:
        """The entry's key: ``<root>::<frame>``, or ``<root>::<frame>::<camera>`` for a named camera."""
        key = f"{source.root.resolve()}::{name}"
        return key if camera is None else f"{key}::{camera}"

    def path(self, source: FrameSource, name: str, camera: str | None = None) -> Path:
        digest = hashlib.sha1(self.frame_key(source, name, camera).encode()).hexdigest()[:24]
        return self.root / f"{digest}.pt"

    # ------------------------------------------------------------------ read / write
    def _load_one(self, source: FrameSource, name: str, camera: str | None) -> dict[str, Any] | None:
        path = self.path(source, name, camera)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # truncated or foreign file: recompute
            return None
        if (
            not isinstance(entry, dict)
            or entry.get("frame") != self.frame_key(source, name, camera)
            or entry.get("files") != files_fingerprint(source.frame_files(name))
        ):
            return None
        maps = entry.get("maps")
        hc, wc = self.image_size
        expected = [
            (1, c, -(-hc // s), -(-wc // s))
            for c, s in zip(self.recipe["channels"], self.strides, strict=True)
        ]
        if not isinstance(maps, list) or [tuple(m.shape) for m in maps] != expected:
            return None
        return entry

    def load(
        self, source: FrameSource, index: int, cameras: Sequence[str] | None = None
    ) -> CachedFeatures | None:
        """The cached features of frame ``index`` of ``source`` — of its single image, or of its cameras
        ``cameras`` stacked in that order; ``None`` when one is absent, unreadable, made from other files
        (size/mtime changed) or of the wrong shape."""
        name = source.frames[index]
        names: list[str | None] = list(cameras) if cameras else [None]
        entries = [self._load_one(source, name, cam) for cam in names]
        if any(e is None for e in entries):
            return None
        sizes = {tuple(e["frame_size"]) for e in entries if e is not None}
        if len(sizes) != 1:
            return None
        maps = [torch.cat(level) for level in zip(*(e["maps"] for e in entries if e is not None))]
        fs = sizes.pop()
        return CachedFeatures(maps, self.strides, self.image_size, (int(fs[0]), int(fs[1])))

    def store(
        self,
        source: FrameSource,
        index: int,
        maps: Sequence[Tensor],
        frame_size: tuple[int, int],
        camera: str | None = None,
    ) -> Path:
        """Write the maps of one image (each ``[1, C, h, w]`` or ``[C, h, w]``) of frame ``index`` — its
        single image, or camera ``camera`` — as float16, atomically; a valid entry already there (published
        meanwhile by another process) is kept instead."""
        if not self._recipe_checked:
            self.folder.ensure_recipe_file("teacher-feature cache")
            self._recipe_checked = True
        name = source.frames[index]
        path = self.path(source, name, camera)
        entry = {
            "frame": self.frame_key(source, name, camera),
            "files": files_fingerprint(source.frame_files(name)),
            "frame_size": [int(frame_size[0]), int(frame_size[1])],
            "maps": [
                m.detach().reshape(1, *m.shape[-3:]).to("cpu", torch.float16).contiguous() for m in maps
            ],
        }
        self.folder.store(
            path.name,
            lambda tmp: torch.save(entry, tmp),
            lambda _: self._load_one(source, name, camera) is not None,
        )
        return path

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.glob("*.pt")) if self.root.is_dir() else 0
