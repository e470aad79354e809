"""nuScenes v1.0 tables (``<dataroot>/<version>/<table>.json``: JSON lists of records with a ``token``), read
directly with the standard library — no nuscenes-devkit (it pins ``numpy<2``) — with errors naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ppkt.errors import DataError
from ppkt.geometry.rigid import quaternion_to_matrix

Record = dict[str, Any]


def find_version_dir(root: Path) -> tuple[Path, Path]:
    """``(dataroot, version folder)`` of a nuScenes root: ``root`` is the dataroot holding one
    ``v1.0-*/sample.json`` folder, or that version folder itself (its parent is then the dataroot)."""
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    if (root / "sample.json").is_file():
        return root.parent, root
    found = sorted(d for d in root.iterdir() if d.is_dir() and (d / "sample.json").is_file())
    if not found:
        raise DataError(
            f"{root}: no nuScenes table folder (a folder such as v1.0-trainval/ with sample.json)"
        )
    if len(found) > 1:
        names = [d.name for d in found]
        raise DataError(f"{root}: several nuScenes versions {names}: point data.root at one of them")
    return root, found[0]


def load_table(version_dir: Path, name: str, required: bool = True) -> list[Record] | None:
    """The records of ``<version_dir>/<name>.json`` (``None`` when absent and not ``required``)."""
    path = version_dir / f"{name}.json"
    if not path.is_file():
        if required:
            raise DataError(f"{path}: missing nuScenes table {name!r}")
        return None
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: garbled nuScenes table ({e})") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) and "token" in r for r in records):
        raise DataError(f"{path}: a nuScenes table must be a JSON list of records with a 'token'")
    return records


def field(record: Record, key: str, table: Path) -> Any:
    """``record[key]``; :class:`DataError` naming the table file and the record's token when it is missing."""
    if key not in record:
        raise DataError(f"{table}: record {record.get('token')!r} has no field {key!r}")
    return record[key]


def transform_of(record: Record, table: Path) -> np.ndarray:
    """The 4×4 float64 transform of a record's ``rotation`` (quaternion w, x, y, z) and ``translation``
    (``calibrated_sensor``: sensor-to-ego; ``ego_pose``: ego-to-global)."""
    try:
        R = quaternion_to_matrix(field(record, "rotation", table))
        t = np.asarray(field(record, "translation", table), dtype=np.float64)
        if t.shape != (3,) or not np.all(np.isfinite(t)):
            raise ValueError(f"translation must be 3 finite numbers, got {record['translation']!r}")
    except (ValueError, TypeError) as e:
        raise DataError(f"{table}: record {record.get('token')!r}: {e}") from e
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T
