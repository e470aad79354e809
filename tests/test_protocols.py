"""The driving benchmarks' protocols: SemanticKITTI and nuScenes-lidarseg label maps, the official nuScenes
scene splits, and the 1 % training splits of the SLidR lineage on fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppkt.data.protocols import nuscenes, semantickitti
from ppkt.data.readers import open_scans

from .lidar_fixtures import write_nuscenes


def test_semantickitti_learning_map() -> None:
    assert len(semantickitti.CLASS_NAMES) == 20 and semantickitti.CLASS_NAMES[0] == "unlabelled"
    assert sorted(set(semantickitti.LEARNING_MAP.values())) == list(range(20))
    named = {semantickitti.CLASS_NAMES[c] for r, c in semantickitti.LEARNING_MAP.items() if r in (10, 252)}
    assert named == {"car"}  # moving cars are cars
    raw = np.array([10, 252, 40, 60, 1, 52, 99, 81, 259, 44], dtype=np.uint32) | (
        np.uint32(12) << np.uint32(16)
    )
    labels, unknown = semantickitti.map_labels(raw)
    assert labels.tolist() == [1, 1, 9, 9, 0, 0, 0, 19, 5, 10] and not unknown.any()
    labels, unknown = semantickitti.map_labels(np.array([77, 10, 65535], dtype=np.uint32))
    assert labels.tolist() == [0, 1, 0] and unknown.tolist() == [True, False, True]


def test_nuscenes_lidarseg_map() -> None:
    assert len(nuscenes.LIDARSEG_NAMES) == 32 and len(nuscenes.CLASS_NAMES) == 17
    idx = {n: i for i, n in enumerate(nuscenes.LIDARSEG_NAMES)}
    labels, unknown = nuscenes.map_lidarseg(
        np.array(
            [
                idx["human.pedestrian.child"],
                idx["vehicle.bus.bendy"],
                idx["vehicle.ego"],
                idx["static.vegetation"],
                40,
            ]
        )
    )
    assert [nuscenes.CLASS_NAMES[c] for c in labels] == [
        "pedestrian",
        "bus",
        "unlabelled",
        "vegetation",
        "unlabelled",
    ]
    assert unknown.tolist() == [False, False, False, False, True]
    # SLidR's table (index → class): every one of the 16 classes is reached
    slidr = {
        0: 0,
        1: 0,
        2: 7,
        3: 7,
        4: 7,
        5: 0,
        6: 7,
        7: 0,
        8: 0,
        9: 1,
        10: 0,
        11: 0,
        12: 8,
        13: 0,
        14: 2,
        15: 3,
    }
    slidr |= {
        16: 3,
        17: 4,
        18: 5,
        19: 0,
        20: 0,
        21: 6,
        22: 9,
        23: 10,
        24: 11,
        25: 12,
        26: 13,
        27: 14,
        28: 15,
        29: 0,
    }
    slidr |= {30: 16, 31: 0}
    assert nuscenes.LIDARSEG_LOOKUP.tolist() == [slidr[i] for i in range(32)]


def test_nuscenes_official_scene_splits() -> None:
    assert len(nuscenes.TRAIN_SCENES) == 700 and len(nuscenes.VAL_SCENES) == 150
    assert not nuscenes.TRAIN_SCENES & nuscenes.VAL_SCENES
    assert {"scene-0001", "scene-1110"} <= nuscenes.TRAIN_SCENES and "scene-0003" in nuscenes.VAL_SCENES
    mini = {f"scene-{i:04d}" for i in (61, 553, 655, 757, 796, 1077, 1094, 1100)}
    assert mini == nuscenes.MINI_TRAIN_SCENES
    # in the devkit's (numeric) order, the 100th training scene is scene-0171 and the 700th scene-1110
    ordered = sorted(nuscenes.TRAIN_SCENES | nuscenes.VAL_SCENES)
    kept = nuscenes.one_percent(ordered)
    assert len(kept) == 7 and kept[0] == "scene-0171" and kept[-1] == "scene-1110"


def test_nuscenes_one_percent_on_a_table_fixture(tmp_path: Path) -> None:
    """The rule walks ``scene.json``'s order and counts training scenes only (val scene-0003 is skipped)."""
    write_nuscenes(tmp_path, {"scene-0002": 1, "scene-0003": 1, "scene-0001": 1, "scene-0004": 1})
    scenes = open_scans(tmp_path, "nuscenes")
    names = [s.scene for s in scenes]
    assert names == ["scene-0002", "scene-0003", "scene-0001", "scene-0004"]  # scene.json's order, not sorted
    assert nuscenes.one_percent(names, step=2) == ["scene-0001"]
    assert nuscenes.one_percent(names, step=1) == ["scene-0002", "scene-0001", "scene-0004"]


def test_semantickitti_one_percent_on_a_folder_fixture(tmp_path: Path) -> None:
    """Every 100th scan of the sorted training list, from the first: sequences 00 (250 scans), 01 (30) and 09
    (120) make 400 training scans; 08 (validation) is not counted."""
    for seq, n in (("00", 250), ("01", 30), ("08", 50), ("09", 120)):
        folder = tmp_path / "sequences" / seq / "velodyne"
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{i:06d}.bin").write_bytes(b"")
    seqs = open_scans(tmp_path, "semantickitti")
    kept = semantickitti.one_percent((s.scene, f) for s in seqs for f in s.frames)
    assert kept == [("00", "000000"), ("00", "000100"), ("00", "000200"), ("09", "000020")]
