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

Frames come out like every :class:`~ppkt.data.sources.FrameSource`: the colour image is **registered to
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
:func:`ppkt.data.scenes.load_or_fuse` uses it instead of fusing unlabelled frames. The minimal PLY reader
(:func:`read_ply_vertices`) and writer (:func:`write_ply`) need no extra dependency.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ppkt.data.rgbd_folder import (
    Frame,
    check_principal_point,
    natural_key,
    read_color,
    read_intrinsics,
    read_pose,
    read_uint16,
)
from ppkt.errors import ConfigError, DataError

if TYPE_CHECKING:
    from ppkt.data.scenes import FusedScene

__all__ = [
    "SCANNET_CLASSES",
    "SCANNET_NYU40_IDS",
    "ScanNetScene",
    "list_scannet_scenes",
    "nyu40_to_benchmark",
    "open_scannet",
    "read_ply_vertices",
    "register_color",
    "sampling_table",
    "write_ply",
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

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_PLY_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


class _PlyElement:
    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count
        self.props: list[tuple[str, str]] = []  # (name, numpy type code)
        self.has_list = False


def _parse_ply_header(path: Path, data: bytes) -> tuple[str, list[_PlyElement], int]:
    """``(format, elements, offset of the body)``; raises :class:`DataError` on a malformed header."""
    if not data.startswith(b"ply"):
        raise DataError(f"{path}: malformed PLY (file does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise DataError(f"{path}: malformed PLY (no 'end_header' line)")
    body = data.find(b"\n", end)
    if body < 0:
        raise DataError(f"{path}: malformed PLY (nothing after 'end_header')")
    try:
        lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: malformed PLY (header is not ASCII: {e})") from e
    fmt: str | None = None
    elements: list[_PlyElement] = []
    for lineno, line in enumerate(lines[1:], start=2):
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        bad = f"{path}: malformed PLY header line {lineno} {line.strip()!r}"
        if tok[0] == "format":
            if len(tok) != 3 or tok[1] not in _PLY_FORMATS:
                raise DataError(f"{bad}: expected 'format ascii|binary_little_endian|binary_big_endian 1.0'")
            fmt = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise DataError(f"{bad}: expected 'element <name> <count>'")
            elements.append(_PlyElement(tok[1], int(tok[2])))
        elif tok[0] == "property":
            if not elements:
                raise DataError(f"{bad}: property before any element")
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise DataError(f"{bad}: unknown property type")
                elements[-1].has_list = True
                elements[-1].props.append((tok[4], "list"))
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                elements[-1].props.append((tok[2], _PLY_TYPES[tok[1]]))
            else:
                raise DataError(
                    f"{bad}: expected 'property <type> <name>' with a type of {sorted(_PLY_TYPES)}"
                )
        else:
            raise DataError(f"{bad}: unknown keyword {tok[0]!r}")
    if fmt is None:
        raise DataError(f"{path}: malformed PLY (no 'format' line in the header)")
    return fmt, elements, body + 1


def read_ply_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """The per-vertex properties of a PLY file (``ascii`` or binary), by name; other elements are ignored.

    Raises :class:`DataError` naming the file on a missing file, a malformed header, a vertex element with
    list properties, an element before the vertices that cannot be skipped, or truncated data.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing PLY file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: unreadable PLY file ({e})") from e
    fmt, elements, offset = _parse_ply_header(path, data)
    index = next((i for i, el in enumerate(elements) if el.name == "vertex"), None)
    if index is None:
        raise DataError(f"{path}: malformed PLY (no 'element vertex' in the header)")
    vertex = elements[index]
    if vertex.has_list:
        raise DataError(f"{path}: unsupported PLY (the vertex element has list properties)")
    if any(el.has_list for el in elements[:index]):
        raise DataError(f"{path}: unsupported PLY (an element with list properties precedes the vertices)")
    names = [name for name, _ in vertex.props]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: malformed PLY (repeated vertex property names {names})")
    if fmt == "ascii":
        return _read_ascii_vertices(path, data[offset:], elements[:index], vertex)
    order = _PLY_FORMATS[fmt]
    for el in elements[:index]:
        offset += el.count * np.dtype([(n, order + t) for n, t in el.props]).itemsize
    dtype = np.dtype([(n, order + t) for n, t in vertex.props])
    if len(data) < offset + vertex.count * dtype.itemsize:
        raise DataError(
            f"{path}: truncated PLY ({len(data)} bytes, the header promises {vertex.count} vertices of "
            f"{dtype.itemsize} bytes from byte {offset})"
        )
    table = np.frombuffer(data, dtype=dtype, count=vertex.count, offset=offset)
    return {n: table[n].astype(table.dtype[n].newbyteorder("=")) for n in names}


def _read_ascii_vertices(
    path: Path, body: bytes, before: list[_PlyElement], vertex: _PlyElement
) -> dict[str, np.ndarray]:
    lines = body.decode("ascii", errors="replace").splitlines()
    skip = 0
    for el in before:
        skip += el.count
    rows = lines[skip : skip + vertex.count]
    if len(rows) < vertex.count:
        raise DataError(f"{path}: truncated PLY (expected {vertex.count} vertex lines, found {len(rows)})")
    n_props = len(vertex.props)
    values = np.empty((vertex.count, n_props), dtype=np.float64)
    for i, row in enumerate(rows):
        tok = row.split()
        if len(tok) != n_props:
            raise DataError(f"{path}: malformed PLY vertex {i} {row!r}: expected {n_props} values")
        try:
            values[i] = [float(t) for t in tok]
        except ValueError as e:
            raise DataError(f"{path}: malformed PLY vertex {i} {row!r}: {e}") from e
    return {name: values[:, j].astype(t) for j, (name, t) in enumerate(vertex.props)}


def write_ply(
    path: str | Path,
    vertices: dict[str, np.ndarray],
    faces: np.ndarray | None = None,
    fmt: Literal["binary_little_endian", "ascii"] = "binary_little_endian",
) -> Path:
    """Write a PLY file: one ``element vertex`` with a property per entry of ``vertices`` (arrays of equal
    length; the numpy dtype gives the PLY type) and optional triangle ``faces`` ``[F, 3]``."""
    path = Path(path)
    type_names = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint"}
    type_names |= {"f4": "float", "f8": "double"}
    cols = {n: np.asarray(a) for n, a in vertices.items()}
    counts = {a.shape[0] for a in cols.values()}
    if len(counts) != 1:
        raise ValueError(f"write_ply: vertex properties have different lengths {counts}")
    n = counts.pop()
    header = ["ply", f"format {fmt} 1.0", f"element vertex {n}"]
    for name, a in cols.items():
        code = a.dtype.str[1:]
        if code not in type_names:
            raise ValueError(f"write_ply: unsupported dtype {a.dtype} of property {name!r}")
        header.append(f"property {type_names[code]} {name}")
    tri = np.zeros((0, 3), np.int32) if faces is None else np.asarray(faces, dtype=np.int32).reshape(-1, 3)
    header += [f"element face {tri.shape[0]}", "property list uchar int vertex_indices", "end_header"]
    out = ("\n".join(header) + "\n").encode("ascii")
    if fmt == "ascii":
        lines = [" ".join(str(cols[name][i]) for name in cols) for i in range(n)]
        lines += [f"3 {a} {b} {c}" for a, b, c in tri.tolist()]
        out += ("\n".join(lines) + "\n").encode("ascii")
    else:
        table = np.empty(n, dtype=[(name, "<" + a.dtype.str[1:]) for name, a in cols.items()])
        for name, a in cols.items():
            table[name] = a
        face_table = np.empty(tri.shape[0], dtype=[("n", "u1"), ("idx", "<i4", (3,))])
        face_table["n"], face_table["idx"] = 3, tri
        out += table.tobytes() + face_table.tobytes()
    path.write_bytes(out)
    return path


# ------------------------------------------------------------------------------------------ registration


def _registration_grid(
    K_depth: np.ndarray, K_color: np.ndarray, depth_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Colour-image coordinates ``(x, y)`` (each ``[H, W]`` float64) of every depth pixel centre."""
    H, W = depth_hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    M = K_color @ np.linalg.inv(K_depth)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1) @ M.T
    return pix[..., 0] / pix[..., 2], pix[..., 1] / pix[..., 2]


#: ``(flat colour-pixel indices [k, H·W] int32, weights [k, H·W, 1] float32 or None)``, k = 4 or 1
SamplingTable = tuple[np.ndarray, np.ndarray | None]


def sampling_table(
    K_color: np.ndarray,
    K_depth: np.ndarray,
    depth_hw: tuple[int, int],
    color_hw: tuple[int, int],
    interpolation: Literal["bilinear", "nearest"] = "bilinear",
) -> SamplingTable:
    """Which colour pixels (and weights) every depth pixel samples: see :func:`register_color`."""
    x, y = _registration_grid(K_depth, K_color, depth_hw)
    Hc, Wc = color_hw
    if interpolation == "nearest":
        xi = np.clip(np.floor(x + 0.5), 0, Wc - 1).astype(np.int64)
        yi = np.clip(np.floor(y + 0.5), 0, Hc - 1).astype(np.int64)
        return (yi * Wc + xi).reshape(1, -1).astype(np.int32), None
    x = np.clip(x, 0.0, Wc - 1.0).ravel()
    y = np.clip(y, 0.0, Hc - 1.0).ravel()
    x0 = np.clip(np.floor(x).astype(np.int64), 0, max(Wc - 2, 0))
    y0 = np.clip(np.floor(y).astype(np.int64), 0, max(Hc - 2, 0))
    x1, y1 = np.minimum(x0 + 1, Wc - 1), np.minimum(y0 + 1, Hc - 1)
    wx, wy = x - x0, y - y0
    idx = np.stack([y0 * Wc + x0, y0 * Wc + x1, y1 * Wc + x0, y1 * Wc + x1]).astype(np.int32)
    w = np.stack([(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy]).astype(np.float32)
    return idx, w[..., None]


def apply_sampling(color: np.ndarray, table: SamplingTable, depth_hw: tuple[int, int]) -> np.ndarray:
    """Resample ``color [Hc, Wc, 3]`` uint8 with a :func:`sampling_table` to ``[H, W, 3]`` uint8."""
    idx, w = table
    flat = color.reshape(-1, color.shape[-1])
    if w is None:
        out = flat[idx[0]]
    else:
        acc = flat[idx[0]].astype(np.float32) * w[0]
        for k in range(1, idx.shape[0]):
            acc += flat[idx[k]].astype(np.float32) * w[k]
        out = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    return out.reshape(depth_hw[0], depth_hw[1], color.shape[-1])


def register_color(
    color: np.ndarray,
    K_color: np.ndarray,
    K_depth: np.ndarray,
    depth_hw: tuple[int, int],
    interpolation: Literal["bilinear", "nearest"] = "bilinear",
) -> np.ndarray:
    """Resample ``color`` ``[Hc, Wc, 3]`` into the depth image's pixel grid (co-located cameras).

    Depth pixel ``(u, v)`` takes the colour at ``K_color · K_depth⁻¹ · [u, v, 1]ᵀ`` (integer coordinates are
    pixel centres), sampled bilinearly or at the nearest pixel; outside positions clamp to the border.
    """
    table = sampling_table(K_color, K_depth, depth_hw, (color.shape[0], color.shape[1]), interpolation)
    return apply_sampling(color, table, depth_hw)


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


class ScanNetScene:
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
        names = sorted((p.stem for p in depth_dir.glob("*.png") if p.is_file()), key=natural_key)
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

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Frame:
        return self.read(i)

    def __repr__(self) -> str:
        return f"ScanNetScene({str(self.root)!r}, frames={len(self.frames)})"

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

    def read(self, i: int) -> Frame:
        """Read frame ``i`` with its colour registered to the depth image (DataError naming the file)."""
        if not -len(self.frames) <= i < len(self.frames):
            raise IndexError(f"frame index {i} out of range for {len(self.frames)} frames in {self.root}")
        name = self.frames[i]
        depth_path = self.depth_path(name)
        raw = read_uint16(depth_path, "depth")
        depth = raw.astype(np.float32) / np.float32(DEPTH_SCALE)
        if not np.any(raw > 0):
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
        from ppkt.data.scenes import FusedScene

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
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    if (root / INTRINSIC_DEPTH).is_file():
        return [root]
    scenes = [d for d in root.iterdir() if d.is_dir() and (d / INTRINSIC_DEPTH).is_file()]
    if not scenes:
        raise DataError(f"{root}: no ScanNet scene folders found (no folder contains {INTRINSIC_DEPTH!r})")
    return sorted(scenes, key=lambda d: natural_key(d.name))


def open_scannet(root: str | Path) -> list[ScanNetScene]:
    """A :class:`ScanNetScene` for every scene of :func:`list_scannet_scenes`."""
    return [ScanNetScene(d) for d in list_scannet_scenes(root)]
