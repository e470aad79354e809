"""Reader for ScanNet scenes exported by ScanNet's ``SensReader`` (``data.layout=scannet``).

One folder per scene::

    scene0000_00/
      color/<i>.jpg                       colour, 1296×968 (its own intrinsics)
      depth/<i>.png                       uint16 millimetres, 640×480, 0 = invalid
      pose/<i>.txt                        4×4 camera-to-world (some are all ``-inf``: tracking lost)
      intrinsic/intrinsic_color.txt       4×4 (3×3 pinhole block top-left)
      intrinsic/intrinsic_depth.txt       4×4 (3×3 pinhole block top-left)
      scene0000_00_vh_clean_2.ply         optional: the reconstructed mesh (binary PLY, xyz + rgb)
      scene0000_00_vh_clean_2.labels.ply  optional: the same vertices with a NYU40 ``label`` each

Frames come out like every :class:`~ppkt.data.types.FrameSource`: the colour image is **registered to
the depth image** (same H×W as depth) and ``K`` is the depth intrinsics. Registration treats the colour and
depth cameras as co-located with different intrinsics (as ScanNet's own tools do): depth pixel ``(u, v)``
takes the colour at ``K_c · K_d⁻¹ · [u, v, 1]ᵀ``, sampled **bilinearly** by default (``interpolation=
"nearest"`` picks the nearest colour pixel); positions outside the colour image take the nearest border
pixel.

Frames whose pose file holds a non-finite value (ScanNet's invalid poses) are left out of :attr:`frames`
with one warning per scene when the scene is opened. Everything else wrong with a frame (missing or corrupt
image, wrong depth dtype, non-rigid pose, ...) raises :class:`~ppkt.errors.DataError` naming the file.

With both PLY files, :meth:`ScanNetScene.labelled_cloud` gives the mesh vertices with the 20 ScanNet
benchmark classes (:data:`SCANNET_CLASSES`, NYU40 ids mapped by :func:`nyu40_to_benchmark`);
:func:`ppkt.data.fusion.load_or_fuse` uses it instead of fusing unlabelled frames. The minimal PLY reader
(:func:`read_ply_vertices`) and writer (:func:`write_ply`) need no extra dependency.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ppkt.data.io.files import natural_key
from ppkt.data.io.images import read_color, read_uint16
from ppkt.data.io.matrices import check_principal_point, read_intrinsics, read_pose
from ppkt.data.io.ply import read_ply_vertices
from ppkt.data.readers.base import SceneReader, list_scene_folders
from ppkt.data.readers.color_registration import (
    SamplingTable,
    _registration_grid,
    apply_sampling,
    sampling_table,
)
from ppkt.data.types import Frame
from ppkt.errors import ConfigError, DataError

if TYPE_CHECKING:
    from ppkt.data.types import FusedScene

__all__ = [
    "SCANNET_CLASSES",
    "SCANNET_NYU40_IDS",
    "ScanNetScene",
    "list_scannet_scenes",
    "nyu40_to_benchmark",
    "open_scannet",
]

#: The NYU40 ids of the 20 ScanNet benchmark classes; the i-th becomes benchmark id ``i + 1``.
SCANNET_NYU40_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
#: Names of benchmark ids ``0 … 20`` (0 = unlabelled).
SCANNET_CLASSES: tuple[str, ...] = (
    "unlabelled",
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "desk",
    "curtain",
    "refrigerator",
    "shower curtain",
    "toilet",
    "sink",
    "bathtub",
    "otherfurniture",
)

DEPTH_SCALE = 1000.0  # raw depth units per metre
INTRINSIC_DEPTH = "intrinsic/intrinsic_depth.txt"
INTRINSIC_COLOR = "intrinsic/intrinsic_color.txt"
_COLOR_EXTS = (".jpg", ".png")
_MAX_LISTED = 5  # invalid pose files named in the warning

_NYU40_TO_BENCHMARK = np.zeros(max(SCANNET_NYU40_IDS) + 1, dtype=np.int64)
_NYU40_TO_BENCHMARK[list(SCANNET_NYU40_IDS)] = np.arange(1, len(SCANNET_NYU40_IDS) + 1)


def nyu40_to_benchmark(ids: np.ndarray) -> np.ndarray:
    """Map NYU40 class ids to ScanNet benchmark ids ``1 … 20`` (every other id, e.g. 13 or 40, → 0)."""
    ids = np.asarray(ids).astype(np.int64)
    out = np.zeros(ids.shape, dtype=np.int64)
    known = (ids >= 0) & (ids < _NYU40_TO_BENCHMARK.shape[0])
    out[known] = _NYU40_TO_BENCHMARK[ids[known]]
    return out


# ---------------------------------------------------------------------------------------------------- PLY


# ------------------------------------------------------------------------------------------ registration


# ----------------------------------------------------------------------------------------------- scenes


def _non_finite_pose(path: Path) -> bool:
    """Whether ``path`` parses as numbers of which one is not finite (unparseable files are left to
    :func:`read_pose`, which reports them when the frame is read)."""
    try:
        values = [float(t) for t in path.read_text().split()]
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return not all(np.isfinite(values))


#: largest fraction of depth pixels allowed to fall outside the colour image at registration
MAX_OUTSIDE_COLOR = 0.1


class ScanNetScene(SceneReader):
    """The frames of one ScanNet scene folder (see the module docstring for the layout).

    Args:
        root: the scene folder (``.../scene0000_00``).
        interpolation: how the colour image is resampled into the depth grid, ``"bilinear"`` (default) or
            ``"nearest"``.
    """

    def __init__(self, root: str | Path, interpolation: Literal["bilinear", "nearest"] = "bilinear") -> None:
        if interpolation not in ("bilinear", "nearest"):
            raise ConfigError(
                f"ScanNetScene: interpolation must be 'bilinear' or 'nearest', got {interpolation!r}"
            )
        self.root = Path(root)
        self.interpolation: Literal["bilinear", "nearest"] = interpolation
        if not self.root.is_dir():
            raise DataError(f"{self.root}: scene folder does not exist")
        self.scene = self.root.name
        self.K_depth = read_intrinsics(self.root / INTRINSIC_DEPTH)
        self.K_color = read_intrinsics(self.root / INTRINSIC_COLOR)
        self.frames: list[str] = self._discover()
        self._tables: dict[tuple[int, int, int, int], SamplingTable] = {}

    def _discover(self) -> list[str]:
        depth_dir = self.root / "depth"
        if not depth_dir.is_dir():
            raise DataError(f"{depth_dir}: missing depth folder")
        # a frame is listed by any of its files, so one missing its depth (or colour, or pose) is an error
        # naming the file when read (or skipped with a warning under data.skip_bad), never left out unseen
        kinds = [("depth", ".png"), *(("color", ext) for ext in _COLOR_EXTS), ("pose", ".txt")]
        found = {p.stem for sub, ext in kinds for p in (self.root / sub).glob(f"*{ext}") if not p.is_dir()}
        names = sorted(found, key=natural_key)
        if not names:
            raise DataError(f"{depth_dir}: no frames found (no depth/*.png)")
        bad = [n for n in names if _non_finite_pose(self.pose_path(n))]
        if bad:
            listed = ", ".join(f"pose/{n}.txt" for n in bad[:_MAX_LISTED])
            more = f", ... ({len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else ""
            warnings.warn(
                f"{self.scene}: skipping {len(bad)} of {len(names)} frames with invalid (non-finite) poses: "
                f"{listed}{more}",
                stacklevel=3,
            )
        skipped = set(bad)
        frames = [n for n in names if n not in skipped]
        if not frames:
            raise DataError(f"{self.root}: no frames left, all {len(names)} poses are non-finite")
        return frames

    def depth_path(self, name: str) -> Path:
        return self.root / "depth" / f"{name}.png"

    def pose_path(self, name: str) -> Path:
        return self.root / "pose" / f"{name}.txt"

    def color_path(self, name: str) -> Path:
        """``color/<name>.jpg`` (or ``.png`` when only that exists)."""
        candidates = [self.root / "color" / f"{name}{ext}" for ext in _COLOR_EXTS]
        return next((c for c in candidates if c.is_file()), candidates[0])

    def frame_files(self, name: str) -> list[Path]:
        """Colour, depth and pose of frame ``name`` and the two intrinsics files its registration uses."""
        return [
            self.color_path(name),
            self.depth_path(name),
            self.pose_path(name),
            self.root / INTRINSIC_DEPTH,
            self.root / INTRINSIC_COLOR,
        ]

    def describe(self) -> dict[str, object]:
        """The reader and its settings (JSON-compatible; part of cache recipes)."""
        return {
            "reader": "scannet",
            "depth_scale": DEPTH_SCALE,
            "registration": "K_color K_depth^-1",
            "interpolation": self.interpolation,
        }

    def mesh_path(self) -> Path:
        return self.root / f"{self.scene}_vh_clean_2.ply"

    def labels_path(self) -> Path:
        return self.root / f"{self.scene}_vh_clean_2.labels.ply"

    def label_files(self) -> list[Path]:
        """The mesh and mesh-label PLY files (whether or not they exist; cache recipes fingerprint them)."""
        return [self.mesh_path(), self.labels_path()]

    def _read_frame(self, name: str) -> Frame:
        """Read frame ``name`` with its colour registered to the depth image (DataError naming the file)."""
        depth_path = self.depth_path(name)
        raw = read_uint16(depth_path, "depth")
        depth = raw.astype(np.float32) / np.float32(DEPTH_SCALE)
        if not np.any(raw > 0):  # before the colour is registered (checked again after, like every frame)
            raise DataError(f"{depth_path}: frame has no valid depth (every pixel is invalid)")
        check_principal_point(self.K_depth, depth.shape, self.root / INTRINSIC_DEPTH, depth_path)
        color_path = self.color_path(name)
        color = self.register(read_color(color_path), depth.shape, color_path)
        pose_path = self.pose_path(name)
        pose = read_pose(pose_path)
        return Frame(
            self.scene,
            name,
            color,
            depth,
            self.K_depth.copy(),
            pose,
            color_path=color_path,
            depth_path=depth_path,
            pose_path=pose_path,
        )

    def register(
        self, color: np.ndarray, depth_hw: tuple[int, ...], color_path: Path | None = None
    ) -> np.ndarray:
        """``color`` resampled into the depth grid of shape ``depth_hw`` (see :func:`register_color`; the
        sampling table is computed once per image size). :class:`DataError` (naming ``color_path``) when
        more than :data:`MAX_OUTSIDE_COLOR` of the depth pixels map outside the colour image: a resized
        colour image whose ``intrinsic_color.txt`` was not scaled with it."""
        hw = (int(depth_hw[0]), int(depth_hw[1]))
        key = (*hw, int(color.shape[0]), int(color.shape[1]))
        table = self._tables.get(key)
        if table is None:
            x, y = _registration_grid(self.K_depth, self.K_color, hw)
            Hc, Wc = key[2], key[3]
            outside = float(np.mean((x < -0.5) | (x > Wc - 0.5) | (y < -0.5) | (y > Hc - 0.5)))
            if outside > MAX_OUTSIDE_COLOR:
                raise DataError(
                    f"{color_path or 'colour image'}: {outside:.0%} of the depth pixels map outside this "
                    f"{Wc}x{Hc} colour image through {self.root / INTRINSIC_COLOR} (up to x={x.max():.0f}, "
                    f"y={y.max():.0f}); a resized colour image needs intrinsics scaled to its size"
                )
            table = sampling_table(self.K_color, self.K_depth, hw, (key[2], key[3]), self.interpolation)
            self._tables[key] = table
        return apply_sampling(color, table, hw)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_tables"] = {}  # large and cheap to rebuild: not sent to data-loader workers
        return state

    def labelled_cloud(self) -> FusedScene | None:
        """The mesh vertices with ScanNet benchmark labels, or ``None`` without both PLY files.

        ``xyz`` from ``<scene>_vh_clean_2.ply`` (world frame, like the poses), ``rgb`` its vertex colours in
        ``[0, 1]``, ``label`` the NYU40 ``label`` of ``<scene>_vh_clean_2.labels.ply`` mapped to ids
        ``0 … 20`` (:data:`SCANNET_CLASSES`). Not voxel-downsampled.
        """
        from ppkt.data.types import FusedScene

        mesh_path, labels_path = self.label_files()
        if not (mesh_path.is_file() and labels_path.is_file()):
            return None
        mesh = read_ply_vertices(mesh_path)
        labels = read_ply_vertices(labels_path)
        missing = [p for p in ("x", "y", "z", "red", "green", "blue") if p not in mesh]
        if missing:
            raise DataError(f"{mesh_path}: PLY vertices lack the properties {missing}")
        if "label" not in labels:
            raise DataError(f"{labels_path}: PLY vertices have no 'label' property")
        xyz = np.stack([mesh["x"], mesh["y"], mesh["z"]], axis=1).astype(np.float32)
        if labels["label"].shape[0] != xyz.shape[0]:
            raise DataError(
                f"{labels_path}: {labels['label'].shape[0]} labelled vertices, but the mesh {mesh_path.name} "
                f"has {xyz.shape[0]}"
            )
        if xyz.shape[0] == 0:
            raise DataError(f"{mesh_path}: the mesh has no vertices")
        if not np.all(np.isfinite(xyz)):
            raise DataError(f"{mesh_path}: the mesh has non-finite vertex coordinates")
        rgb = np.stack([mesh["red"], mesh["green"], mesh["blue"]], axis=1).astype(np.float32) / 255.0
        label = nyu40_to_benchmark(labels["label"])
        return FusedScene(self.scene, xyz, rgb, label, len(SCANNET_CLASSES), SCANNET_CLASSES)


def list_scannet_scenes(root: str | Path) -> list[Path]:
    """ScanNet scene folders of ``root``, naturally sorted: ``root`` itself when it holds
    ``intrinsic/intrinsic_depth.txt``, else its sub-folders that do."""
    return list_scene_folders(root, INTRINSIC_DEPTH, "ScanNet scene")


def open_scannet(root: str | Path) -> list[ScanNetScene]:
    """A :class:`ScanNetScene` for every scene of :func:`list_scannet_scenes`."""
    return [ScanNetScene(d) for d in list_scannet_scenes(root)]
