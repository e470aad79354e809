"""nuScenes (``data.layout=nuscenes``): the keyframes of the official v1.0 tables, read directly.

The root is a nuScenes dataroot holding one table folder (``v1.0-trainval/``, ``v1.0-mini/``, …) or that
folder itself. Tables used: ``scene``, ``sample``, ``sample_data``, ``calibrated_sensor``, ``ego_pose``,
``sensor``, and when present ``lidarseg`` and ``category`` (whose lidarseg indices are checked against
:data:`~ppkt.data.protocols.nuscenes.LIDARSEG_NAMES`). One scene per nuScenes scene, in the order of
``scene.json`` (the order of the 1 % split rule); its frames are the sample tokens of its keyframes, first to
last.

Each keyframe is one :class:`~ppkt.data.types.Scan`: the ``LIDAR_TOP`` sweep (``*.pcd.bin``, float32 x, y,
z, intensity, ring; intensity 0–255 stored ÷ 255) and the six cameras of :data:`CAMERAS`. Every sensor
has its own timestamp and ego pose, so a point goes LiDAR → ego (at the LiDAR's time) → global → ego (at the
camera's time) → camera::

    lidar_to_camera = inv(cam_to_ego) · inv(ego_to_global(t_cam)) · ego_to_global(t_lidar) · lidar_to_ego

(the car moves up to ~0.4 m between a LiDAR sweep and a camera exposure at city speed). The scan's pose
is ``ego_to_global(t_lidar) · lidar_to_ego``. Lidarseg labels (``lidarseg/<version>/<token>_lidarseg.bin``,
one uint8 category per point) are mapped to the 16 benchmark classes.

The tables are indexed once when the dataset is opened (keyframes only); v1.0-trainval's ``sample_data.json``
is large (~2.6 M records): opening it takes a while and a few GB of memory, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppkt.data.io.images import read_color
from ppkt.data.io.nuscenes_tables import Record, field, find_version_dir, load_table, transform_of
from ppkt.data.io.points import read_bin_points, read_point_labels
from ppkt.data.protocols import nuscenes as protocol
from ppkt.data.readers.scan_base import ScanReader
from ppkt.data.types import Scan
from ppkt.errors import DataError

#: the six cameras of a keyframe, in the order of a scan's images
CAMERAS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
LIDAR = "LIDAR_TOP"
#: float32 columns of a nuScenes LiDAR ``.pcd.bin``: x, y, z, intensity, ring index
POINT_WIDTH = 5


@dataclass(frozen=True)
class SensorData:
    """One sensor's file of a keyframe and its calibration."""

    path: Path
    sensor_to_ego: np.ndarray  # [4, 4]
    ego_to_global: np.ndarray  # [4, 4] at the sensor's timestamp
    K: np.ndarray | None  # [3, 3] for cameras


@dataclass(frozen=True)
class KeyFrame:
    token: str  # sample token
    lidar: SensorData
    cameras: tuple[SensorData, ...]  # in CAMERAS order
    lidarseg: Path | None


class NuScenesScene(ScanReader):
    """The keyframes of one nuScenes scene (built by :func:`open_nuscenes`)."""

    def __init__(self, root: Path, scene: str, keyframes: list[KeyFrame], version_dir: Path) -> None:
        self.root = root
        self.scene = scene
        self.version = version_dir.name
        self.calib_path = version_dir / "calibrated_sensor.json"
        self.keyframes = {k.token: k for k in keyframes}
        self.cameras = list(CAMERAS)
        self.frames = [k.token for k in keyframes]

    def frame_files(self, name: str) -> list[Path]:
        k = self.keyframes[name]
        return [k.lidar.path, *(c.path for c in k.cameras), *([k.lidarseg] if k.lidarseg else [])]

    def describe(self) -> dict[str, object]:
        return {"reader": "nuscenes", "version": self.version}

    def _label(self, k: KeyFrame, count: int) -> np.ndarray | None:
        if k.lidarseg is None:
            return None
        raw = read_point_labels(k.lidarseg, "u1", count)
        label, unknown = protocol.map_lidarseg(raw)
        if unknown.any():
            ids = sorted({int(i) for i in raw[unknown]})[:10]
            raise DataError(
                f"{k.lidarseg}: {int(unknown.sum())} labels with category indices {ids} beyond the 32"
            )
        return label

    def _read_scan(self, name: str) -> Scan:
        k = self.keyframes[name]
        table = read_bin_points(k.lidar.path, POINT_WIDTH)
        lidar_to_global = k.lidar.ego_to_global @ k.lidar.sensor_to_ego
        return Scan(
            scene=self.scene,
            name=name,
            points=np.ascontiguousarray(table[:, :3]),
            intensity=table[:, 3] / np.float32(255.0),
            images=[read_color(c.path) for c in k.cameras],
            cameras=list(CAMERAS),
            K=[c.K for c in k.cameras if c.K is not None],  # every camera has one (checked when indexed)
            lidar_to_camera=[
                np.linalg.inv(c.sensor_to_ego) @ np.linalg.inv(c.ego_to_global) @ lidar_to_global
                for c in k.cameras
            ],
            pose=lidar_to_global,
            label=self._label(k, table.shape[0]),
            points_path=k.lidar.path,
            image_paths=[c.path for c in k.cameras],
            label_path=k.lidarseg,
            calib_path=self.calib_path,
        )


class _Tables:
    """The tables of one version folder, indexed by token (keyframe sample data only)."""

    def __init__(self, dataroot: Path, version_dir: Path) -> None:
        self.dataroot, self.dir = dataroot, version_dir
        sensor_path, cs_path = self.file("sensor"), self.file("calibrated_sensor")
        channel = {r["token"]: field(r, "channel", sensor_path) for r in self.table("sensor")}
        #: calibrated sensor token -> (channel, sensor-to-ego, K or None)
        self.calib: dict[str, tuple[str, np.ndarray, np.ndarray | None]] = {}
        for r in self.table("calibrated_sensor"):
            sensor = field(r, "sensor_token", cs_path)
            if sensor not in channel:
                raise DataError(
                    f"{cs_path}: record {r['token']!r} names sensor {sensor!r}, absent from {sensor_path}"
                )
            K = np.asarray(r["camera_intrinsic"], dtype=np.float64) if r.get("camera_intrinsic") else None
            if channel[sensor] in CAMERAS and (K is None or K.shape != (3, 3)):
                raise DataError(
                    f"{cs_path}: record {r['token']!r} of {channel[sensor]} needs a 3x3 camera_intrinsic"
                )
            self.calib[r["token"]] = (channel[sensor], transform_of(r, cs_path), K)
        self.ego = {r["token"]: r for r in self.table("ego_pose")}
        self.samples = {r["token"]: r for r in self.table("sample")}
        self.scenes = self.table("scene")
        #: sample token -> channel -> keyframe sample_data record
        self.keyframe_data: dict[str, dict[str, Record]] = {}
        sd_path = self.file("sample_data")
        for r in self.table("sample_data"):
            if not r.get("is_key_frame"):
                continue
            cs = field(r, "calibrated_sensor_token", sd_path)
            if cs not in self.calib:
                raise DataError(f"{sd_path}: record {r['token']!r} names calibrated sensor {cs!r}, absent")
            ch = self.calib[cs][0]
            if ch == LIDAR or ch in CAMERAS:
                self.keyframe_data.setdefault(field(r, "sample_token", sd_path), {})[ch] = r
        ls_path = self.file("lidarseg")
        lidarseg = self.table("lidarseg", required=False)
        self.lidarseg = {
            field(r, "sample_data_token", ls_path): field(r, "filename", ls_path) for r in lidarseg
        }
        self._check_categories(self.table("category", required=False))

    def file(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def table(self, name: str, required: bool = True) -> list[Record]:
        return load_table(self.dir, name, required) or []

    def _check_categories(self, categories: list[Record]) -> None:
        for r in categories:
            if "index" in r and "name" in r:
                i = r["index"]
                if not (0 <= i < len(protocol.LIDARSEG_NAMES) and protocol.LIDARSEG_NAMES[i] == r["name"]):
                    raise DataError(
                        f"{self.file('category')}: lidarseg category {r['name']!r} has index {i}; the "
                        "benchmark's label map expects the official 32 indices"
                    )

    def sensor_data(self, record: Record) -> SensorData:
        sd_path = self.file("sample_data")
        _, sensor_to_ego, K = self.calib[record["calibrated_sensor_token"]]
        ego_token = field(record, "ego_pose_token", sd_path)
        if ego_token not in self.ego:
            raise DataError(f"{sd_path}: record {record['token']!r} names ego pose {ego_token!r}, absent")
        ego_to_global = transform_of(self.ego[ego_token], self.file("ego_pose"))
        return SensorData(self.dataroot / field(record, "filename", sd_path), sensor_to_ego, ego_to_global, K)

    def keyframe(self, token: str) -> KeyFrame:
        data = self.keyframe_data.get(token, {})
        missing = [ch for ch in (LIDAR, *CAMERAS) if ch not in data]
        if missing:
            raise DataError(f"{self.file('sample_data')}: keyframe sample {token!r} has no {missing} data")
        lidar = data[LIDAR]
        seg = self.lidarseg.get(lidar["token"])
        if seg is None:  # the lidarseg table may be absent while the files follow the naming rule
            guess = self.dataroot / "lidarseg" / self.dir.name / f"{lidar['token']}_lidarseg.bin"
            seg_path = guess if guess.is_file() else None
        else:
            seg_path = self.dataroot / seg
        cameras = tuple(self.sensor_data(data[ch]) for ch in CAMERAS)
        return KeyFrame(token, self.sensor_data(lidar), cameras, seg_path)

    def scene_keyframes(self, scene: Record) -> list[KeyFrame]:
        token = field(scene, "first_sample_token", self.file("scene"))
        frames: list[KeyFrame] = []
        while token:
            if token not in self.samples or len(frames) > len(self.samples):
                raise DataError(
                    f"{self.file('sample')}: sample {token!r} of scene {scene.get('name')!r} is absent "
                    "(or the scene's next-links loop)"
                )
            frames.append(self.keyframe(token))
            token = self.samples[token].get("next", "")
        return frames


def open_nuscenes(root: str | Path) -> list[NuScenesScene]:
    """Every scene of a nuScenes dataroot (or version folder), in ``scene.json`` order (module docstring)."""
    dataroot, version_dir = find_version_dir(Path(root))
    tables = _Tables(dataroot, version_dir)
    scenes = []
    for record in tables.scenes:
        name = field(record, "name", version_dir / "scene.json")
        scenes.append(NuScenesScene(dataroot, name, tables.scene_keyframes(record), version_dir))
    if not scenes:
        raise DataError(f"{version_dir / 'scene.json'}: no scenes")
    return scenes
