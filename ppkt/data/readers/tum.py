"""Reader for TUM RGB-D sequences (``data.layout=tum``).

One folder per sequence, as downloaded::

    rgbd_dataset_freiburg1_xyz/
      rgb.txt         "timestamp filename" lines (# comments), e.g. ``1305031102.17 rgb/1305031102.17.png``
      depth.txt       the same for the depth images
      groundtruth.txt "timestamp tx ty tz qx qy qz qw" lines (# comments): camera-to-world, metres
      rgb/<ts>.png    colour, 640×480, registered to depth
      depth/<ts>.png  uint16, 5000 raw units per metre, 0 = invalid
      intrinsics.txt  optional: 3×3 pinhole matrix (TUM ships none)

Intrinsics: ``intrinsics.txt`` when present; else TUM's calibration of the camera named in the folder name
(``freiburg1``, ``freiburg2`` or ``freiburg3``, see :data:`TUM_INTRINSICS`); else the ROS default
(525, 525, 319.5, 239.5) with a warning. Lens distortion is ignored (fr3 images are undistorted already).

Every depth frame is associated with the colour image and the ground-truth pose with the **nearest**
timestamps; a depth frame without a colour image or a pose within ``tolerance`` seconds (default 0.02) is
dropped, with one warning per sequence counting them. Frames are named by their depth timestamp (as written
in ``depth.txt``) and ordered by time. The pose is the quaternion ``(qx, qy, qz, qw)`` (normalised) and the
translation as a 4×4 camera-to-world matrix (OpenCV camera frame, as TUM's optical frame).

A malformed line raises :class:`~ppkt.errors.DataError` naming the file and the line number; a bad image
raises it naming the image.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppkt.data.io.images import read_color, read_uint16
from ppkt.data.io.matrices import check_principal_point, read_intrinsics
from ppkt.data.readers.base import SceneReader, list_scene_folders
from ppkt.data.types import Frame
from ppkt.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_INTRINSICS",
    "TUM_INTRINSICS",
    "TUMScene",
    "list_tum_sequences",
    "open_tum",
    "quaternion_pose",
    "read_groundtruth",
    "read_timestamped_files",
]

#: ``(fx, fy, cx, cy)`` of TUM's calibrated cameras.
TUM_INTRINSICS: dict[str, tuple[float, float, float, float]] = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
#: The ROS default ``(fx, fy, cx, cy)`` used when the camera is unknown.
DEFAULT_INTRINSICS: tuple[float, float, float, float] = (525.0, 525.0, 319.5, 239.5)
DEPTH_SCALE = 5000.0
_MAX_LISTED = 5


def _data_lines(path: Path, what: str) -> list[tuple[int, list[str]]]:
    """``(line number, tokens)`` of every non-empty, non-comment line of a TUM text file."""
    if not path.is_file():
        raise DataError(f"{path}: missing {what} file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable {what} file ({e})") from e
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append((lineno, stripped.split()))
    return out


def _timestamp(path: Path, lineno: int, token: str) -> float:
    try:
        t = float(token)
    except ValueError:
        raise DataError(f"{path}:{lineno}: malformed timestamp {token!r}") from None
    if not math.isfinite(t):
        raise DataError(f"{path}:{lineno}: non-finite timestamp {token!r}")
    return t


def read_timestamped_files(path: str | Path) -> list[tuple[float, str, str]]:
    """``(timestamp, timestamp as written, file name)`` of every line of ``rgb.txt``/``depth.txt``."""
    path = Path(path)
    out = []
    for lineno, tok in _data_lines(path, "image list"):
        if len(tok) != 2:
            raise DataError(f"{path}:{lineno}: expected 'timestamp filename', got {' '.join(tok)!r}")
        out.append((_timestamp(path, lineno, tok[0]), tok[0], tok[1]))
    return out


def quaternion_pose(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    """4×4 transform from translation ``(tx, ty, tz)`` and quaternion ``(qx, qy, qz, qw)`` (normalised here;
    raises ``ValueError`` on a non-finite or zero quaternion)."""
    q = np.asarray(q, dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not (math.isfinite(norm) and norm > 1e-12) or not np.all(np.isfinite(t)):
        raise ValueError(f"invalid pose: translation {list(t)}, quaternion {list(q)}")
    x, y, z, w = q / norm
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = t
    return T


def read_groundtruth(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps [N], poses [N, 4, 4])`` of a ``groundtruth.txt``, sorted by time."""
    path = Path(path)
    stamps, poses = [], []
    for lineno, tok in _data_lines(path, "groundtruth"):
        if len(tok) != 8:
            raise DataError(
                f"{path}:{lineno}: expected 'timestamp tx ty tz qx qy qz qw', got {len(tok)} values"
            )
        ts = _timestamp(path, lineno, tok[0])
        try:
            vals = np.array([float(v) for v in tok[1:]])
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: malformed pose ({e})") from None
        try:
            poses.append(quaternion_pose(vals[:3], vals[3:]))
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
        stamps.append(ts)
    if not stamps:
        raise DataError(f"{path}: no poses in the groundtruth file")
    order = np.argsort(np.asarray(stamps), kind="stable")
    return np.asarray(stamps)[order], np.stack(poses)[order]


def _nearest(sorted_ts: np.ndarray, ts: float) -> tuple[int, float]:
    """Index of the timestamp nearest ``ts`` in ``sorted_ts`` and its distance."""
    j = int(np.searchsorted(sorted_ts, ts))
    cands = [k for k in (j - 1, j) if 0 <= k < sorted_ts.shape[0]]
    best = min(cands, key=lambda k: abs(float(sorted_ts[k]) - ts))
    return best, abs(float(sorted_ts[best]) - ts)


def _intrinsics(root: Path) -> tuple[np.ndarray, str]:
    """The 3×3 intrinsics of a sequence and where they came from."""
    path = root / "intrinsics.txt"
    if path.is_file():
        return read_intrinsics(path), "intrinsics.txt"
    m = re.search(r"freiburg([123])", root.resolve().name.lower())
    if m is not None:
        source = f"freiburg{m.group(1)}"
        fx, fy, cx, cy = TUM_INTRINSICS[source]
    else:
        source = "ros-default"
        fx, fy, cx, cy = DEFAULT_INTRINSICS
        warnings.warn(
            f"{root}: no intrinsics.txt and no freiburg1|2|3 in the folder name; using the ROS default "
            f"intrinsics fx={fx} fy={fy} cx={cx} cy={cy}",
            stacklevel=3,
        )
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), source


@dataclass(frozen=True)
class _Assoc:
    depth: Path
    color: Path
    pose_index: int


class TUMScene(SceneReader):
    """The frames of one TUM RGB-D sequence folder (see the module docstring).

    Args:
        root: the sequence folder.
        tolerance: the largest time difference (seconds) between a depth frame and its colour image/pose.
        depth_scale: raw depth units per metre (TUM: 5000).
    """

    def __init__(self, root: str | Path, tolerance: float = 0.02, depth_scale: float = DEPTH_SCALE) -> None:
        if not (tolerance >= 0 and math.isfinite(tolerance)):
            raise ConfigError(
                f"TUMScene: tolerance must be a non-negative number of seconds, got {tolerance}"
            )
        if not (depth_scale > 0 and math.isfinite(depth_scale)):
            raise ConfigError(f"TUMScene: depth_scale must be a positive number, got {depth_scale}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: sequence folder does not exist")
        self.scene = self.root.name
        self.tolerance = float(tolerance)
        self.depth_scale = float(depth_scale)
        self.K, self.intrinsics_source = _intrinsics(self.root)
        self.pose_times, self.poses = read_groundtruth(self.root / "groundtruth.txt")
        self.frames: list[str] = []
        self._assoc: dict[str, _Assoc] = {}
        self._associate()

    def _associate(self) -> None:
        depth_list = self.root / "depth.txt"
        depth = read_timestamped_files(depth_list)
        color = read_timestamped_files(self.root / "rgb.txt")
        if not depth:
            raise DataError(f"{depth_list}: no depth frames listed")
        color_order = sorted(range(len(color)), key=lambda k: color[k][0])
        color_ts = np.array([color[k][0] for k in color_order])
        no_color, no_pose = [], []
        seen: set[str] = set()
        for ts, name, fname in sorted(depth, key=lambda d: d[0]):
            if name in seen:
                raise DataError(f"{depth_list}: timestamp {name} is listed twice")
            seen.add(name)
            if color_ts.shape[0] == 0 or _nearest(color_ts, ts)[1] > self.tolerance:
                no_color.append(fname)
                continue
            ci = color_order[_nearest(color_ts, ts)[0]]
            pi, dt = _nearest(self.pose_times, ts)
            if dt > self.tolerance:
                no_pose.append(fname)
                continue
            self.frames.append(name)
            self._assoc[name] = _Assoc(self.root / fname, self.root / color[ci][2], pi)
        dropped = no_color + no_pose
        if dropped:
            listed = ", ".join(dropped[:_MAX_LISTED])
            more = f", ... ({len(dropped) - _MAX_LISTED} more)" if len(dropped) > _MAX_LISTED else ""
            warnings.warn(
                f"{self.scene}: dropping {len(dropped)} of {len(depth)} depth frames without a match within "
                f"{self.tolerance} s ({len(no_color)} without a colour image, {len(no_pose)} without a "
                f"pose): {listed}{more}",
                stacklevel=3,
            )
        if not self.frames:
            raise DataError(
                f"{self.root}: no depth frame has a colour image and a pose within {self.tolerance} s"
            )

    def association(self, name: str) -> tuple[Path, Path, float]:
        """``(depth image, colour image, ground-truth timestamp)`` of frame ``name``."""
        if name not in self._assoc:
            raise DataError(f"{self.root}: no frame named {name!r}")
        a = self._assoc[name]
        return a.depth, a.color, float(self.pose_times[a.pose_index])

    def frame_files(self, name: str) -> list[Path]:
        """Colour, depth, ``groundtruth.txt`` and (when present) ``intrinsics.txt`` of frame ``name``."""
        depth, color, _ = self.association(name)
        files = [color, depth, self.root / "groundtruth.txt"]
        return files + [p for p in (self.root / "intrinsics.txt",) if p.is_file()]

    def describe(self) -> dict[str, object]:
        """The reader and its settings (JSON-compatible; part of cache recipes)."""
        return {
            "reader": "tum",
            "depth_scale": self.depth_scale,
            "tolerance": self.tolerance,
            "intrinsics": self.intrinsics_source,
        }

    def _read_frame(self, name: str) -> Frame:
        """Read frame ``name`` (the checks of :func:`~ppkt.data.readers.base.check_frame` follow)."""
        a = self._assoc[name]
        color = read_color(a.color)
        where = (
            self.root / "intrinsics.txt"
            if self.intrinsics_source == "intrinsics.txt"
            else (f"{self.root}: the {self.intrinsics_source} intrinsics")
        )
        check_principal_point(self.K, color.shape[:2], where, a.color)
        raw = read_uint16(a.depth, "depth")
        depth = raw.astype(np.float32) / np.float32(self.depth_scale)
        return Frame(
            self.scene,
            name,
            color,
            depth,
            self.K.copy(),
            self.poses[a.pose_index].copy(),
            color_path=a.color,
            depth_path=a.depth,
            pose_path=self.root / "groundtruth.txt",
        )


def list_tum_sequences(root: str | Path) -> list[Path]:
    """TUM sequence folders of ``root``, naturally sorted: ``root`` itself when it holds ``rgb.txt``, else
    its sub-folders that do."""
    return list_scene_folders(root, "rgb.txt", "TUM sequence")


def open_tum(root: str | Path) -> list[TUMScene]:
    """A :class:`TUMScene` (default tolerance) for every sequence of :func:`list_tum_sequences`."""
    return [TUMScene(d) for d in list_tum_sequences(root)]
